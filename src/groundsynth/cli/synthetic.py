"""Synthetic-data evaluation commands: ``evaluate synthetic`` and ``filter``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer
from rich.table import Table

from groundsynth.cli._common import console, friendly, progress_bar
from groundsynth.cli._groups import evaluate_app

__all__ = ["register"]


def _splits(text: str | None) -> tuple[str, ...] | None:
    if text is None:
        return None
    out = tuple(s.strip() for s in text.split(",") if s.strip())
    if not out:
        raise typer.BadParameter(f"expected comma-separated split names, got {text!r}")
    return out


class _Bars:
    """``progress(stage, done, total)`` on a rich progress bar, one task per stage."""

    def __init__(self, bar: Any) -> None:
        self.bar = bar
        self.tasks: dict[str, Any] = {}

    def __call__(self, stage: str, done: int, total: int) -> None:
        if stage not in self.tasks:
            self.tasks[stage] = self.bar.add_task(stage, total=total, info="")
        self.bar.update(self.tasks[stage], completed=done, total=total, info="samples")


# ----------------------------------------------------------------------------- evaluate synthetic
@friendly
def evaluate_synthetic_cmd(
    real: Path = typer.Option(..., "--real", help="Real dataset directory (either layout)."),
    synthetic: Path = typer.Option(..., "--synthetic", help="Synthetic dataset directory."),
    out: Path = typer.Option(..., "--out", "-o", help="Output (run) directory."),
    model: Path | None = typer.Option(
        None,
        "--model",
        help="Segmenter checkpoint trained on real data (label and feature fidelity).",
    ),
    real_splits: str | None = typer.Option(
        None, help="Comma-separated real splits (default: all but synth)."
    ),
    synthetic_splits: str | None = typer.Option(
        None, help="Comma-separated synthetic splits (default: synth if present, else all)."
    ),
    max_samples: int | None = typer.Option(
        None, help="Evaluate a seeded subset of this many synthetic samples (default: all)."
    ),
    max_real: int = typer.Option(
        5000, help="Real samples run through the segmenter (the reference), seeded subset."
    ),
    reservoir: int = typer.Option(
        5000, help="Feature vectors kept per set for KID, PRDC and projections."
    ),
    projection_points: int = typer.Option(1000, help="Points per group in the projections."),
    batch_size: int = typer.Option(32, help="Images per inference batch."),
    workers: int = typer.Option(2, "--workers", "-j", help="Image-loading worker processes."),
    device: str = typer.Option("auto", help="auto, cpu, cuda, cuda:N or mps."),
    seed: int = typer.Option(0, help="Seed of subsets, reservoirs, KID and projections."),
    tsne: bool = typer.Option(True, "--tsne/--no-tsne", help="Draw the t-SNE projection."),
    umap: bool = typer.Option(
        True, "--umap/--no-umap", help="Draw the UMAP projection (needs umap-learn)."
    ),
    inception_weights: Path | None = typer.Option(
        None, help="Local torchvision inception_v3 state dict: also compute Inception FID."
    ),
    captions: bool = typer.Option(
        True, "--captions/--no-captions", help="Evaluate the synthetic set's captions."
    ),
    chunk_size: int = typer.Option(
        256, help="Images per chunk through the models (resumable with --model; on Ray: a task)."
    ),
    executor: str = typer.Option(
        "local",
        help="Where image chunks run through the segmenter: local (this process) or ray (one "
        "Ray task per chunk, the segmenter loaded once per worker; pip install "
        "'groundsynth[distributed]'). The outputs are the same either way and an interrupted "
        "evaluation resumes on either.",
    ),
    ray_address: str | None = typer.Option(
        None,
        help="Ray cluster to join: auto (the one `ray start --head` started here), HOST:PORT "
        "or ray://HOST:PORT. Default: start a local cluster for the run. On a cluster, every "
        "node needs groundsynth and the datasets and --model at the same path.",
    ),
    ray_cpus: float = typer.Option(1.0, help="CPUs reserved per Ray task (chunk)."),
    ray_gpus: float = typer.Option(
        0.0, help="GPUs per Ray task; a fraction shares a GPU (0.25: four tasks per GPU)."
    ),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="Show progress bars."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Print the resolved config and exit."),
) -> None:
    """Compare a synthetic dataset with a real one: composition (JSD, co-occurrence), label
    fidelity (segmenter vs map, per sample), feature fidelity (FD, KID, precision/recall/
    density/coverage on the segmenter's encoder), t-SNE/UMAP plots, silhouettes, captions.

    Writes summary.json, per_sample.parquet (one row per synthetic sample; input of
    `groundsynth filter`), figures, config.yaml and manifest.json into OUT. Scores against
    maps are agreement with WorldCover-derived labels (~77 % accurate), not truth.

    Example: `groundsynth evaluate synthetic --real data/ --synthetic synth/ --model runs/unet/segmenter.pt --out eval/`

    On a Ray cluster, a quarter GPU per chunk: `groundsynth evaluate synthetic --real data/ --synthetic synth/ --model segmenter.pt --out eval/ --executor ray --ray-address auto --ray-gpus 0.25`
    """
    from groundsynth.evaluate.synthetic import (
        SyntheticEvalConfig,
        evaluate_synthetic,
        resolve_config,
    )

    kwargs: dict[str, Any] = {
        "model": model,
        "real_splits": _splits(real_splits),
        "synthetic_splits": _splits(synthetic_splits),
        "max_samples": max_samples,
        "max_real": max_real,
        "batch_size": batch_size,
        "workers": workers,
        "device": device,
        "seed": seed,
        "umap": umap,
        "tsne": tsne,
        "inception_weights": inception_weights,
        "reservoir": reservoir,
        "projection_points": projection_points,
        "captions": captions,
        "chunk_size": chunk_size,
        "executor": executor,
        "ray_address": ray_address,
        "ray_cpus": ray_cpus,
        "ray_gpus": ray_gpus,
    }
    if dry_run:
        import yaml

        from groundsynth.runs import to_plain

        cfg = SyntheticEvalConfig(
            real=str(real),
            synthetic=str(synthetic),
            out=str(out),
            **{k: (str(v) if isinstance(v, Path) else v) for k, v in kwargs.items()},
        )
        console.print(yaml.safe_dump(to_plain(resolve_config(cfg)), sort_keys=False))
        return
    with progress_bar(progress) as bar:
        summary = evaluate_synthetic(real, synthetic, out, progress=_Bars(bar), **kwargs)
    _print_evaluation(summary, out)


def _fmt(value: Any, digits: int = 4) -> str:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return f"{value:.{digits}g}" if isinstance(value, float) else str(value)
    return "-" if value is None else str(value)


def _print_evaluation(s: dict[str, Any], out: Path) -> None:
    t = Table(title=f"synthetic vs real: {out}", show_edge=False)
    t.add_column("metric")
    t.add_column("value", justify="right")
    t.add_column("reference / note")
    comp = s["composition"]
    t.add_row(
        "samples (real / synthetic)", f"{s['real']['samples']} / {s['synthetic']['samples']}", ""
    )
    jsd = _fmt(comp["jsd_pixel_share"])
    t.add_row("composition JSD (pixel share)", jsd, "0 = same, 1 = disjoint")
    worst = max(
        ((k, v) for k, v in comp["jsd_per_class"].items() if v is not None),
        key=lambda kv: kv[1],
        default=(None, None),
    )
    if worst[0] is not None:
        t.add_row("largest per-class JSD", _fmt(worst[1]), worst[0])
    lf = s["label_fidelity"]
    if isinstance(lf, dict):
        t.add_row(
            "label fidelity: mean sample mIoU",
            _fmt(lf["synthetic"]["sample_miou"]["mean"]),
            f"real {_fmt(lf['real_reference']['sample_miou']['mean'])}",
        )
        t.add_row(
            "label fidelity: pooled mIoU",
            _fmt(lf["synthetic"]["pooled"]["miou"]),
            f"real {_fmt(lf['real_reference']['pooled']['miou'])}",
        )
    else:
        t.add_row("label fidelity", "-", str(lf))
    ff = s["feature_fidelity"]
    if isinstance(ff, dict):
        syn, base = ff["synthetic"], ff.get("real_halves", {})
        floor = f"real halves {_fmt(base.get('frechet_distance'))}"
        t.add_row("Fréchet distance (encoder)", _fmt(syn["frechet_distance"]), floor)
        kid = syn["kid"]
        t.add_row("KID (encoder)", _fmt(kid["mean"] if isinstance(kid, dict) else kid), "")
        pr = syn.get("prdc")
        if isinstance(pr, dict):
            for k in ("precision", "recall", "density", "coverage"):
                t.add_row(k, _fmt(pr[k]), "")
        sil = s["projections"]["silhouette"] if isinstance(s["projections"], dict) else {}
        t.add_row("silhouette (overall)", _fmt(sil.get("overall")), "near 0 = overlapping")
    if isinstance(s.get("inception_fid"), dict):
        t.add_row("Inception FID", _fmt(s["inception_fid"]["synthetic"]["frechet_distance"]), "")
    caps = s.get("captions")
    if isinstance(caps, dict):
        for split, c in caps.items():
            rate = (c.get("consistency") or {}).get("pooled", {}).get("consistent_rate")
            t.add_row(f"captions consistent ({split})", _fmt(rate), f"{c.get('captions')} captions")
    console.print(t)
    if len(s.get("generators", [])) > 1 and isinstance(lf, dict):
        g = Table(title="per generator", show_edge=False)
        for col in ("generator", "samples", "mean sample mIoU", "FD", "JSD pixel share"):
            g.add_column(col, justify="right" if col != "generator" else "left")
        for name in s["generators"]:
            lfg = lf["per_generator"][name]
            fd = ff["per_generator"][name]["frechet_distance"] if isinstance(ff, dict) else None
            jsd = comp.get("per_generator", {}).get(name, {}).get("jsd_pixel_share")
            mean = _fmt(lfg["sample_miou"]["mean"])
            g.add_row(name, str(lfg["samples"]), mean, _fmt(fd), _fmt(jsd))
        console.print(g)
    console.print(f"wrote {out / 'summary.json'} and {out / 'per_sample.parquet'}")


# ----------------------------------------------------------------------------- filter
@friendly
def filter_cmd(
    synthetic: Path = typer.Argument(..., help="Synthetic dataset directory to filter."),
    out: Path = typer.Option(..., "--out", "-o", help="Output directory (manifest or dataset)."),
    scores: Path | None = typer.Option(
        None, "--scores", help="per_sample.parquet written by `groundsynth evaluate synthetic`."
    ),
    model: Path | None = typer.Option(
        None, "--model", help="Segmenter checkpoint: compute label fidelity here instead."
    ),
    min_label_fidelity: float | None = typer.Option(
        None, help="Keep samples whose segmenter-vs-map mIoU is at least this (0..1)."
    ),
    min_caption_consistency: float | None = typer.Option(
        None, help="Keep samples with at least this share of consistent captions (0..1)."
    ),
    min_confidence: float | None = typer.Option(
        None, help="Keep samples whose metadata confidence is at least this."
    ),
    class_share: list[str] = typer.Option(
        [], "--class-share", help="Class share rule, repeatable: 'Water<=0.9', 'Tree>=5%'."
    ),
    mode: str = typer.Option(
        "manifest", help="manifest (decisions only), link (hard links) or copy: a new dataset."
    ),
    on_missing: str = typer.Option(
        "fail", help="fail or pass samples that lack a score a rule needs."
    ),
    splits: str | None = typer.Option(None, help="Comma-separated splits (default: all)."),
    batch_size: int = typer.Option(32, help="Images per batch with --model."),
    workers: int = typer.Option(2, "--workers", "-j", help="Image-loading workers with --model."),
    device: str = typer.Option("auto", help="Device with --model: auto, cpu, cuda, mps."),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="Show progress bars."),
) -> None:
    """Keep the grounded synthetic samples: those whose map a real-trained segmenter agrees
    with and whose captions agree with the map. Writes a manifest (decisions with reasons,
    passing ids) or, with --mode link/copy, a new dataset that `groundsynth validate` accepts.
    Rerunning the same command resumes.

    Example: `groundsynth filter synth/ --scores eval/per_sample.parquet --min-label-fidelity 0.5 --min-caption-consistency 1.0 --out synth_grounded/ --mode link`
    """
    from groundsynth.evaluate.filter import filter_synthetic

    with progress_bar(progress) as bar:
        summary = filter_synthetic(
            synthetic,
            out,
            scores=scores,
            model=model,
            min_label_fidelity=min_label_fidelity,
            min_caption_consistency=min_caption_consistency,
            min_confidence=min_confidence,
            class_share=class_share,
            mode=mode,  # type: ignore[arg-type]
            on_missing=on_missing,  # type: ignore[arg-type]
            splits=_splits(splits),
            batch_size=batch_size,
            workers=workers,
            device=device,
            progress=_Bars(bar),
        )
    _print_filter(summary, out)


def _print_filter(s: dict[str, Any], out: Path) -> None:
    total = s["samples"]
    rate = f" ({100 * s['pass_rate']:.1f} %)" if s["pass_rate"] is not None else ""
    console.print(f"rules: {', '.join(s['rules'])}")
    console.print(f"[bold]{s['passed']}[/] of {total} samples pass{rate}")
    if s["failures_by_reason"]:
        t = Table(title="why the others fail (a sample may fail several rules)", show_edge=False)
        t.add_column("reason")
        t.add_column("samples", justify="right")
        t.add_column("only this reason", justify="right")
        only = s["failed_by_this_reason_only"]
        for reason, n in s["failures_by_reason"].items():
            t.add_row(reason, str(n), str(only.get(reason, 0)))
        console.print(t)
    if len(s["by_origin"]) > 1:
        console.print(
            "per origin: "
            + ", ".join(f"{o} {c['passed']}/{c['samples']}" for o, c in s["by_origin"].items())
        )
    what = "dataset" if s["mode"] != "manifest" else "manifest"
    console.print(
        f"{what} written to {out} ({s['outputs']['passed']}, {s['outputs']['decisions']})"
    )


def register(app: typer.Typer) -> None:
    """Add ``evaluate synthetic`` and ``filter`` to ``app``."""
    evaluate_app.command("synthetic")(evaluate_synthetic_cmd)
    app.command("filter")(filter_cmd)
