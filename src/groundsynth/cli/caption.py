"""Captioning commands: ``caption`` (grounded captions of a dataset) and
``evaluate captions`` (diversity, caption <-> map consistency, CLIPScore)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer
from rich.table import Table

from groundsynth.cli._common import console, err, friendly, progress_bar
from groundsynth.cli._groups import evaluate_app

__all__ = ["register"]


def _csv(text: str | None) -> tuple[str, ...]:
    return tuple(s.strip() for s in text.split(",") if s.strip()) if text else ()


# ----------------------------------------------------------------------------- caption
@friendly
def caption_cmd(
    dataset: Path = typer.Argument(..., help="Dataset directory (groundsynth or ARAS400k layout)."),
    stream: list[str] = typer.Option(
        ["text=template"],
        "--stream",
        "-s",
        help="STREAM=BACKEND[:MODEL][@COLUMN], repeatable. STREAM: hybrid, vision or text; "
        "BACKEND: template, transformers or openai. Column default: STREAM_MODELNAME.",
    ),
    n: int = typer.Option(1, "--n", help="Captions per image and stream (columns X, X_2, ...)."),
    seed: int = typer.Option(0, help="Seed of the captions (template wording, model sampling)."),
    splits: str | None = typer.Option(None, help="Comma-separated splits (default: all)."),
    prompt_dir: Path | None = typer.Option(
        None, help="Folder of STREAM.txt prompt templates (default: the built-in ones)."
    ),
    system_prompt: str | None = typer.Option(None, help="System message for model streams."),
    base_url: list[str] = typer.Option(
        ["http://127.0.0.1:8000/v1"],
        "--base-url",
        help="openai: a server's base URL (…/v1); repeat it or give a comma-separated list "
        "to spread requests over several servers serving the same model (each request goes "
        "to the least-loaded live one). A request a server fails (no connection, timeout, "
        "5xx) goes to another; a server that cannot be reached is left out (a warning names "
        "it) and tried again after a minute; the run stops only when none can be reached.",
    ),
    api_key_env: str = typer.Option(
        "OPENAI_API_KEY", help="openai: environment variable holding the API key."
    ),
    concurrency: int = typer.Option(
        4,
        help="openai: requests in flight per server (servers × this in all, at most "
        "--batch-size: each batch is awaited).",
    ),
    timeout: float = typer.Option(120.0, help="openai: seconds per request."),
    retries: int = typer.Option(4, help="openai: retries of a failed request."),
    batch_size: int = typer.Option(16, help="Images per batch (transformers: per generate call)."),
    temperature: float = typer.Option(0.0, help="Model sampling temperature (0: greedy)."),
    max_new_tokens: int = typer.Option(160, help="Longest model reply, in tokens."),
    device: str = typer.Option("auto", help="transformers: auto, cpu, cuda, cuda:N or mps."),
    dtype: str = typer.Option("auto", help="transformers: auto, float32, bfloat16 or float16."),
    executor: str = typer.Option(
        "local",
        help="Where batches are captioned: local (this process) or ray (template and "
        "transformers batches as Ray tasks, a model loaded once per worker; openai streams "
        "stay here). Tables are byte-identical either way; a run resumes on either.",
    ),
    ray_address: str | None = typer.Option(
        None,
        help="Ray cluster to join: auto (the one `ray start --head` started here), HOST:PORT "
        "or ray://HOST:PORT. Default: start a local cluster for the run. On a cluster, every "
        "node needs groundsynth and the dataset at the same path.",
    ),
    ray_cpus: float = typer.Option(1.0, help="CPUs reserved per Ray task (batch)."),
    ray_gpus: float = typer.Option(
        0.0, help="GPUs per Ray task; a fraction shares a GPU (0.5: two tasks per GPU)."
    ),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="Show a progress bar."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Print the resolved config and exit."),
) -> None:
    """Caption a dataset into DATASET/captions/SPLIT.csv (one column per stream).

    Captions are grounded in each image's mask (composition, layout). Work is journalled as
    it goes: rerun the same command to resume after a crash or to retry failed captions
    (the exit status is 1 while some captions failed). The API key is read from the
    environment only.

    Example: `groundsynth caption data/ --stream text=template --stream hybrid=openai:qwen3-vl-8b --base-url http://localhost:8000/v1`

    Several servers: `groundsynth caption data/ --stream hybrid=openai:qwen3-vl-8b --base-url http://node1:8000/v1 --base-url http://node2:8000/v1 --concurrency 8 --batch-size 64`

    On Ray: `groundsynth caption data/ --stream vision=transformers:Qwen/Qwen3-VL-8B-Instruct --executor ray --ray-address auto --ray-gpus 1`
    """
    import yaml

    from groundsynth.caption.run import CaptionRunConfig, StreamSpec, caption_dataset
    from groundsynth.runs import to_plain

    urls = tuple(u for text in base_url for u in _csv(text))
    cfg = CaptionRunConfig(
        dataset=str(dataset),
        streams=tuple(StreamSpec.parse(s) for s in stream),
        n=n,
        seed=seed,
        splits=_csv(splits),
        prompt_dir=str(prompt_dir) if prompt_dir else None,
        system_prompt=system_prompt,
        base_url=urls[0] if urls else "",
        base_urls=urls,
        api_key_env=api_key_env,
        concurrency=concurrency,
        timeout=timeout,
        retries=retries,
        batch_size=batch_size,
        temperature=temperature,
        max_new_tokens=max_new_tokens,
        device=device,
        dtype=dtype,
        executor=executor,  # type: ignore[arg-type]
        ray_address=ray_address,
        ray_cpus=ray_cpus,
        ray_gpus=ray_gpus,
    )
    if dry_run:
        plain = to_plain(cfg)
        plain["streams"] = [str(s) for s in cfg.streams]
        console.print(yaml.safe_dump(plain, sort_keys=False))
        return
    with progress_bar(progress) as bar:
        task = bar.add_task("caption", total=None, info="")

        def report(done: int, total: int, info: str) -> None:
            bar.update(task, completed=done, total=total, info=info)

        result = caption_dataset(cfg, progress=report)
    t = Table(title=f"captions: {dataset / 'captions'}", show_edge=False)
    for col in ("split", "column", "captioned", "failed", "done before", "missing"):
        t.add_column(col, justify="left" if col in ("split", "column") else "right")
    for split, cols in result.counts.items():
        for col, c in cols.items():
            t.add_row(
                split,
                col,
                *(str(c.get(k, 0)) for k in ("captioned", "failed", "done_before", "missing")),
            )
    console.print(t)
    if result.failed:
        err.print(
            f"[yellow]{result.failed} captions failed[/] (their cells are empty; errors in "
            f"{dataset / 'captions' / 'run' / 'manifest.json'}): rerun the same command to retry"
        )
        raise typer.Exit(1)


# ----------------------------------------------------------------------------- evaluate
def _pct(v: Any) -> str:
    return "-" if v is None else f"{100 * v:.1f}"


def _num(v: Any, fmt: str = ".2f") -> str:
    return "-" if v is None else format(v, fmt)


def _print_summary(summary: dict[str, Any]) -> None:
    """Two tables (diversity; grounding and CLIPScore), per stream and pooled."""
    div = summary["diversity"]
    cons = summary.get("consistency") or {}
    clip = summary.get("clipscore") or {}
    names = [*div["per_stream"]] + (["pooled"] if len(div["per_stream"]) > 1 else [])

    def pick(block: dict[str, Any], name: str) -> dict[str, Any]:
        return block["pooled"] if name == "pooled" else block["per_stream"].get(name, {})

    t = Table(
        title=f"{summary['captions']} captions of {summary['images']} images "
        f"({summary['format']}): diversity",
        show_edge=False,
    )
    for h in ("stream", "captions", "redund.%", "dist-1", "dist-2", "dist-4", "vocab", "words"):
        t.add_column(h, justify="left" if h == "stream" else "right")
    for name in names:
        d = pick(div, name)
        t.add_row(
            name,
            str(d["captions"]),
            _pct(d["redundancy"]),
            *(_num(d.get(f"distinct_{k}"), ".3f") for k in (1, 2, 4)),
            str(d["vocabulary"]),
            _num(d["mean_length"], ".1f"),
        )
    console.print(t)
    if cons or clip:
        t = Table(title="grounding (% of captions) and CLIPScore", show_edge=False)
        heads = ["stream"]
        if cons:
            heads += ["scored", "prec.", "recall", "halluc.", "domin.", "quant.", "consist."]
        if clip:
            heads += ["CLIPScore"]
        for h in heads:
            t.add_column(h, justify="left" if h == "stream" else "right")
        keys = (
            "mention_precision",
            "mention_recall",
            "hallucination_rate",
            "dominant_agreement",
            "quantity_agreement",
            "consistent_rate",
        )
        for name in names:
            row = [name]
            if cons:
                c = pick(cons, name)
                row += [str(c.get("captions", 0)), *(_pct(c.get(k)) for k in keys)]
            if clip:
                row.append(_num(pick(clip, name).get("mean")))
            t.add_row(*row)
        console.print(t)
    skipped = summary["skipped"]
    if any(skipped.values()):
        console.print("skipped: " + ", ".join(f"{k}: {v}" for k, v in skipped.items() if v))
    if clip:
        p = clip["pooled"]
        console.print(
            f"CLIPScore = {clip['formula']} with {clip['model']}; captions over the "
            f"{clip['context_length']}-token context: {p['long_captions']} "
            f"({clip['long_caption_policy']}); captions without an image: {p['missing_image']}"
        )


@friendly
def evaluate_captions_cmd(
    source: Path = typer.Argument(
        ...,
        help="A dataset directory, a captions table (CSV/Parquet), a Karpathy-style JSON or a "
        "Sydney-Captions text file (format detected).",
    ),
    out: Path = typer.Option(..., "--out", "-o", help="Folder for the summary and scores."),
    compositions: Path | None = typer.Option(
        None,
        help="Class shares per image: a class-percentage CSV, metadata.parquet or a dataset "
        "directory (default: the table's percentage columns).",
    ),
    streams: str | None = typer.Option(None, help="Comma-separated streams to keep."),
    format: str | None = typer.Option(None, help="table, karpathy or sydney (default: detect)."),
    lexicon: Path | None = typer.Option(None, help="A synonym lexicon YAML (default: built in)."),
    clip_model: str | None = typer.Option(
        None,
        help="Add CLIPScore with this CLIP: an open_clip name (with --clip-pretrained), "
        "hf-hub:ORG/REPO, an open_clip config JSON, or a transformers CLIP folder.",
    ),
    clip_pretrained: str | None = typer.Option(
        None, help="open_clip weights: a tag (openai, ...) or a checkpoint file (RemoteCLIP)."
    ),
    clip_library: str = typer.Option("auto", help="auto, open_clip or transformers."),
    clip_weight: float = typer.Option(
        100.0, help="Score = weight x max(cos, 0): 100 (ARAS scale) or 2.5 (Hessel's CLIP-S)."
    ),
    long_captions: str = typer.Option(
        "truncate", help="Captions over the CLIP context: truncate (flagged) or skip."
    ),
    images: Path | None = typer.Option(
        None, help="Images for CLIPScore: a dataset directory or a folder of image files."
    ),
    device: str = typer.Option("auto", help="CLIP device: auto, cpu, cuda, cuda:N or mps."),
    batch_size: int = typer.Option(64, help="CLIP batch size."),
    clip_chunk_size: int = typer.Option(
        1024, help="Captions per resumable CLIPScore chunk (on Ray: per task)."
    ),
    executor: str = typer.Option(
        "local",
        help="Where CLIPScore chunks are scored: local (this process) or ray (one Ray task per "
        "chunk, the CLIP loaded once per worker; pip install 'groundsynth[distributed]'). "
        "The scores are the same either way and an interrupted run resumes on either.",
    ),
    ray_address: str | None = typer.Option(
        None,
        help="Ray cluster to join: auto (the one `ray start --head` started here), HOST:PORT "
        "or ray://HOST:PORT. Default: start a local cluster for the run. On a cluster, every "
        "node needs groundsynth and the images and CLIP files at the same path.",
    ),
    ray_cpus: float = typer.Option(1.0, help="CPUs reserved per Ray task (chunk)."),
    ray_gpus: float = typer.Option(
        0.0, help="GPUs per Ray task; a fraction shares a GPU (0.25: four tasks per GPU)."
    ),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="Show progress."),
) -> None:
    """Measure captions: redundancy, distinct-n, caption <-> map consistency, CLIPScore.

    Writes OUT/caption_metrics.json (per stream and pooled) and OUT/caption_scores.parquet
    (one row per caption) and prints a summary. Consistency needs compositions (a table's
    percentage columns, or --compositions); CLIPScore needs --clip-model and images.

    Example: `groundsynth evaluate captions data/ --out reports/captions --clip-model ViT-B-32 --clip-pretrained RemoteCLIP-ViT-B-32.pt`

    CLIPScore on a Ray cluster: `groundsynth evaluate captions data/ --out reports/captions --clip-model ViT-B-32 --clip-pretrained RemoteCLIP-ViT-B-32.pt --executor ray --ray-address auto --ray-gpus 0.25`
    """
    from groundsynth.distributed import check_executor_options
    from groundsynth.evaluate.captions import METRICS_JSON, evaluate_captions
    from groundsynth.evaluate.clipscore import ClipScoreConfig

    check_executor_options(executor, ray_address, ray_cpus, ray_gpus)
    if executor != "local" and not clip_model:
        raise typer.BadParameter("--executor ray runs CLIPScore: give --clip-model too")
    clip = None
    if clip_model:
        clip = ClipScoreConfig(
            model=clip_model,
            pretrained=clip_pretrained,
            library=clip_library,  # type: ignore[arg-type]
            weight=clip_weight,
            long_captions=long_captions,  # type: ignore[arg-type]
            batch_size=batch_size,
            device=device,
            chunk_size=clip_chunk_size,
            executor=executor,  # type: ignore[arg-type]
            ray_address=ray_address,
            ray_cpus=ray_cpus,
            ray_gpus=ray_gpus,
        )
    with progress_bar(progress) as bar:
        task = bar.add_task("captions", total=None, info="")
        summary = evaluate_captions(
            source,
            out,
            compositions=compositions,
            streams=list(_csv(streams)) or None,
            format=format,
            lexicon=lexicon,
            clip=clip,
            images=images,
            progress=lambda k: bar.update(task, completed=k),
        )
    _print_summary(summary)
    console.print(f"written: {out / METRICS_JSON}")


def register(app: typer.Typer) -> None:
    """Add ``caption`` to ``app`` and ``captions`` to the ``evaluate`` group."""
    app.command("caption")(caption_cmd)
    evaluate_app.command("captions")(evaluate_captions_cmd)
