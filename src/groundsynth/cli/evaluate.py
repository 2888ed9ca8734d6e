"""Evaluation commands: benchmark segmentation, pseudo-label (and evaluate/filter to come)."""

from __future__ import annotations

import math
from pathlib import Path

import typer
from rich.table import Table

from groundsynth.benchmark.weights import list_weights
from groundsynth.cli._common import console, friendly, progress_bar
from groundsynth.cli._groups import benchmark_app, evaluate_app
from groundsynth.cli.captioning import evaluate_captioning_cmd

__all__ = ["register"]

ALL_ARCHS = "unet,unetplusplus,pan,deeplabv3plus,segformer,fpn"


def _seeds(text: str) -> tuple[int, ...]:
    """``3`` -> (0, 1, 2); ``0,5,7`` -> (0, 5, 7)."""
    try:
        if "," in text:
            return tuple(int(s) for s in text.split(",") if s.strip())
        n = int(text)
    except ValueError:
        raise typer.BadParameter(
            f"--seeds expects a count (3) or a list (0,5,7), got {text!r}"
        ) from None
    if n < 1:
        raise typer.BadParameter(f"--seeds count must be >= 1, got {n}")
    return tuple(range(n))


def _limit(text: str | None, name: str) -> float | int | None:
    if text is None:
        return None
    try:
        return float(text) if "." in text else int(text)
    except ValueError:
        raise typer.BadParameter(
            f"{name} expects a fraction (0.25) or a batch count (10), got {text!r}"
        ) from None


def _devices(text: str) -> str | int:
    return int(text) if text.strip().lstrip("-").isdigit() else text.strip()


def _deterministic(text: str) -> bool | str:
    key = text.strip().lower()
    if key in ("true", "yes", "1"):
        return True
    if key in ("false", "no", "0"):
        return False
    if key == "warn":
        return "warn"
    raise typer.BadParameter(f"--deterministic expects warn, true or false, got {text!r}")


# Options shared by every `benchmark` command: where its runs train (see benchmark.sweep).
SWEEP_EXECUTOR = typer.Option(
    "local",
    "--executor",
    help="Where runs train: local (here, one after the other), processes (worker processes "
    "on this machine, --ray-cpus threads each, as many at once as the CPUs hold: on 2 cores "
    "two 1-thread runs finish sooner than one after the other) or ray (each (arch, regime, "
    "seed) run as one Ray task, on one device; pip install 'groundsynth[distributed]'). The "
    "run folders and tables are the same either way, and a benchmark resumes on any.",
)
SWEEP_RAY_ADDRESS = typer.Option(
    None,
    "--ray-address",
    help="Ray cluster to join: auto (the one `ray start --head` started here), HOST:PORT or "
    "ray://HOST:PORT. Default: start a local cluster for the sweep. On a cluster, every node "
    "needs groundsynth and the datasets and --out at the same path.",
)
SWEEP_RAY_CPUS = typer.Option(
    1.0,
    "--ray-cpus",
    help="CPUs reserved per run (Ray task, or threads per worker process): how many run at once.",
)
SWEEP_RAY_GPUS = typer.Option(
    0.0,
    "--ray-gpus",
    help="GPUs reserved per run (Ray task): 1 gives each run a GPU, 0.5 puts two runs on a "
    "GPU; 0 trains on the CPU.",
)


def _pct(mean: float, std: float) -> str:
    if mean is None or math.isnan(mean):
        return "n/a"
    return f"{100 * mean:.2f}" + ("" if std is None or math.isnan(std) else f" ± {100 * std:.2f}")


# ----------------------------------------------------------------------------- benchmark segmentation
@friendly
def segmentation_cmd(
    out: Path = typer.Option(..., "--out", "-o", help="Run directory to write (or resume)."),
    real: Path | None = typer.Option(
        None, help="Real dataset directory (groundsynth or ARAS400k layout)."
    ),
    synthetic: Path | None = typer.Option(None, help="Synthetic dataset directory (any layout)."),
    train: list[str] = typer.Option(
        ["real"],
        help="Training regime, repeatable: SOURCE[/SPLIT][:AMOUNT],... e.g. real | synthetic | real,synthetic:0.5 (ratio to the real samples) | real,synthetic:20000 (budget).",
    ),
    val: str = typer.Option(
        "real", help="Validation set SOURCE[/SPLIT] (split default val); drives early stopping."
    ),
    test: str = typer.Option(
        "real", help="Test sets SOURCE[/SPLIT],... (split default test), scored separately."
    ),
    archs: str = typer.Option(ALL_ARCHS, help="Comma-separated architectures."),
    encoder: str = typer.Option(
        "resnet34", help="smp encoder name (resnet34, mit_b0, tu-<timm model>, ...)."
    ),
    encoder_depth: int = typer.Option(5, help="Encoder stages used, 3..5."),
    decoder_width: int | None = typer.Option(
        None, help="Decoder base width (default: smp's, = 16)."
    ),
    encoder_weights: str | None = typer.Option(
        None,
        help="Encoder weights: a NAME, downloaded once into the cache ($GROUNDSYNTH_CACHE/weights, "
        f"else ~/.cache/groundsynth/weights): {', '.join(list_weights())}; or a local state-dict "
        "file (.pth/.safetensors). Default: random init. "
        "E.g. --encoder resnet18 --encoder-weights ssl4eo-s12-rgb-moco-resnet18 --normalisation none.",
    ),
    normalisation: str = typer.Option("imagenet", help="Input normalisation: imagenet or none."),
    seeds: str = typer.Option("3", help="Seed count (3 -> 0,1,2) or list (0,5,7)."),
    loss: str = typer.Option("dice", help="Loss: dice or ce."),
    lr: float = typer.Option(1e-3, help="AdamW learning rate."),
    weight_decay: float = typer.Option(1e-2, help="AdamW weight decay."),
    schedule: str = typer.Option(
        "plateau",
        help="Learning-rate schedule: plateau (halve on stalled val F1) or onecycle (warm up, then anneal per step; learns faster at short budgets).",
    ),
    batch_size: int = typer.Option(24, help="Training batch size per device."),
    eval_batch_size: int | None = typer.Option(
        None, help="Val/test batch size (default: --batch-size)."
    ),
    workers: int = typer.Option(
        2, "--workers", "-j", help="DataLoader worker processes per device."
    ),
    max_epochs: int = typer.Option(20, help="Most training epochs."),
    max_steps: int = typer.Option(-1, help="Most optimiser steps (-1: no limit)."),
    patience: int = typer.Option(5, help="Early stopping: validation rounds without F1 gain."),
    floor: str = typer.Option(
        "regime",
        help="Pixel floor each run is checked against: regime (fitted on the run's own training "
        "set) or real (for regimes with a real part, fitted on that part alone: one fit shared by "
        "them all, and a mixed run must beat what a colour classifier reads from the real data).",
    ),
    augment: str = typer.Option(
        "flips", help="Training augmentation: flips (8 square symmetries) or none."
    ),
    limit_train_batches: str | None = typer.Option(
        None, help="Lightning: fraction (0.25) or count (10) of training batches per epoch."
    ),
    limit_val_batches: str | None = typer.Option(
        None, help="Lightning: fraction or count of validation batches."
    ),
    accelerator: str = typer.Option("auto", help="Lightning accelerator: auto, cpu, gpu, ..."),
    devices: str = typer.Option("auto", help="Lightning devices: auto, a count (2) or ids (0,1)."),
    num_nodes: int = typer.Option(1, help="Lightning nodes."),
    strategy: str = typer.Option("auto", help="Lightning strategy: auto, ddp, ..."),
    precision: str = typer.Option(
        "32-true", help="Lightning precision: 32-true, 16-mixed, bf16-mixed."
    ),
    deterministic: str = typer.Option(
        "warn", help="Deterministic algorithms: warn, true or false."
    ),
    progress: bool = typer.Option(
        True, "--progress/--no-progress", help="Show Lightning's progress bar."
    ),
    executor: str = SWEEP_EXECUTOR,
    ray_address: str | None = SWEEP_RAY_ADDRESS,
    ray_cpus: float = SWEEP_RAY_CPUS,
    ray_gpus: float = SWEEP_RAY_GPUS,
    dry_run: bool = typer.Option(False, "--dry-run", help="Print the resolved config and exit."),
) -> None:
    """Train and test segmenters per (architecture, regime, seed); tables with 95 % CIs.

    Each run trains with early stopping on validation macro F1, keeps its best weights
    (runs/.../segmenter.pt) and is scored on each test set from one confusion matrix over the
    whole split. Writes results.csv, summary.csv (mean, std, 95 % t-interval across seeds),
    results.md and results.json into --out. Rerun the same command to resume: finished runs
    are skipped. Multi-GPU: --devices 2 --strategy ddp.

    Example: `groundsynth benchmark segmentation --real data/ --synthetic synth/ --train real --train real,synthetic:0.5 --archs unet,fpn --seeds 3 --out bench/`

    The same sweep with one Ray task per run, a GPU each: `groundsynth benchmark segmentation --real data/ --archs unet,fpn --seeds 3 --out bench/ --executor ray --ray-address auto --ray-gpus 1`
    """
    import yaml

    from groundsynth.benchmark.segmentation import BenchmarkConfig, run_segmentation_benchmark
    from groundsynth.runs import to_plain

    cfg = BenchmarkConfig(
        out=str(out),
        real=str(real) if real else None,
        synthetic=str(synthetic) if synthetic else None,
        train=tuple(train),
        val=val,
        test=test,
        archs=tuple(a.strip() for a in archs.split(",") if a.strip()),
        encoder=encoder,
        encoder_depth=encoder_depth,
        decoder_width=decoder_width,
        encoder_weights=encoder_weights or None,
        normalisation=normalisation,  # type: ignore[arg-type]
        seeds=_seeds(seeds),
        loss=loss,  # type: ignore[arg-type]
        lr=lr,
        weight_decay=weight_decay,
        schedule=schedule,  # type: ignore[arg-type]
        batch_size=batch_size,
        eval_batch_size=eval_batch_size,
        workers=workers,
        max_epochs=max_epochs,
        max_steps=max_steps,
        patience=patience,
        floor=floor,  # type: ignore[arg-type]
        augment=augment,  # type: ignore[arg-type]
        limit_train_batches=_limit(limit_train_batches, "--limit-train-batches"),
        limit_val_batches=_limit(limit_val_batches, "--limit-val-batches"),
        accelerator=accelerator,
        devices=_devices(devices),
        num_nodes=num_nodes,
        strategy=strategy,
        precision=precision,
        deterministic=_deterministic(deterministic),  # type: ignore[arg-type]
        progress=progress,
        executor=executor,  # type: ignore[arg-type]
        ray_address=ray_address,
        ray_cpus=ray_cpus,
        ray_gpus=ray_gpus,
    )
    if dry_run:
        console.print(yaml.safe_dump(to_plain(cfg.resolved()), sort_keys=False), highlight=False)
        return
    result = run_segmentation_benchmark(cfg)
    if not result.files:  # not global rank zero: rank zero reports
        return
    table = Table(title="segmentation benchmark (percent, mean ± std across seeds)")
    for col in ("arch", "regime", "test set", "seeds", "F1", "IoU", "accuracy"):
        table.add_column(col)
    for r in result.summary:
        table.add_row(
            r["arch"],
            r["regime"],
            r["test_set"],
            str(r["n_seeds"]),
            _pct(r["f1_mean"], r["f1_std"]),
            _pct(r["iou_mean"], r["iou_std"]),
            _pct(r["accuracy_mean"], r["accuracy_std"]),
        )
    console.print(table)
    missed = sorted(
        {
            f"{r['arch']}/{r['regime']}/seed{r['seed']}"
            for r in result.rows
            if r.get("learned") is False
        }
    )
    if missed:
        console.print(f"[yellow]runs that did not beat their pixel floor:[/] {', '.join(missed)}")
    console.print(
        f"runs trained {len(result.trained)}, resumed {len(result.skipped)}; "
        f"tables: {result.files['markdown']}"
    )


# ----------------------------------------------------------------------------- pseudo-label
@friendly
def pseudo_label_cmd(
    dataset: Path = typer.Argument(..., help="Dataset directory (any layout) or folder of images."),
    model: Path = typer.Option(
        ..., "--model", "-m", help="Segmenter checkpoint (a benchmark run's segmenter.pt)."
    ),
    out: Path | None = typer.Option(
        None, "--out", "-o", help="Output dataset (default: DATASET.pseudo-<model name>)."
    ),
    splits: str | None = typer.Option(
        None, help="Comma-separated splits of a dataset to label (default: all with images)."
    ),
    folder_split: str = typer.Option("synth", help="Split name for a plain folder of images."),
    batch_size: int = typer.Option(16, help="Images per forward pass."),
    workers: int = typer.Option(0, "--workers", "-j", help="Image-reading worker processes."),
    device: str = typer.Option("auto", help="auto (CUDA, else MPS, else CPU), cpu, cuda, cuda:N."),
    chunk_size: int = typer.Option(256, help="Images per resumable chunk."),
    copy_images: bool = typer.Option(
        False, "--copy-images", help="Copy images instead of hard-linking them."
    ),
    executor: str = typer.Option(
        "local",
        help="Where chunks are labelled: local (this process) or ray (one Ray task per chunk, "
        "the model loaded once per worker; pip install 'groundsynth[distributed]'). The "
        "output is byte-identical either way and a run resumes on either.",
    ),
    ray_address: str | None = typer.Option(
        None,
        help="Ray cluster to join: auto (the one `ray start --head` started here), HOST:PORT "
        "or ray://HOST:PORT. Default: start a local cluster for the run. On a cluster, every "
        "node needs groundsynth and the input and --out at the same path.",
    ),
    ray_cpus: float = typer.Option(1.0, help="CPUs reserved per Ray task (chunk)."),
    ray_gpus: float = typer.Option(
        0.0, help="GPUs per Ray task; a fraction shares a GPU (0.25: four tasks per GPU)."
    ),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="Show a progress bar."),
) -> None:
    """Label images with a trained segmenter: masks, confidence and class fractions.

    Writes a dataset in the data contract: images (hard links when possible), palette masks
    of the predicted classes, metadata.parquet with origin "pseudo-label:<model>" and a
    per-image confidence (mean max softmax probability), class_percentages CSVs. Rerun the
    same command to resume.

    Example: `groundsynth pseudo-label aras/ --splits synth --model bench/runs/unet/real/seed0/segmenter.pt --out aras-pl/`

    On a Ray cluster, half a GPU per chunk: `groundsynth pseudo-label aras/ --model segmenter.pt --out aras-pl/ --executor ray --ray-address auto --ray-gpus 0.5`
    """
    from groundsynth.generate.pseudo_label import PseudoLabelConfig, pseudo_label

    cfg = PseudoLabelConfig(
        dataset=str(dataset),
        model=str(model),
        out=str(out) if out else None,
        splits=tuple(s.strip() for s in splits.split(",") if s.strip()) if splits else None,
        folder_split=folder_split,
        batch_size=batch_size,
        workers=workers,
        device=device,
        chunk_size=chunk_size,
        images="copy" if copy_images else "link",
        executor=executor,  # type: ignore[arg-type]
        ray_address=ray_address,
        ray_cpus=ray_cpus,
        ray_gpus=ray_gpus,
    )
    with progress_bar(progress) as bar:
        task = bar.add_task("pseudo-label", total=None, info="")

        def on_progress(done: int, total: int) -> None:
            bar.update(task, completed=done, total=total)

        result = pseudo_label(cfg, progress=on_progress)
    table = Table(title=f"pseudo-labels -> {result.out}")
    for col in ("split", "images", "mean confidence", "min", "max"):
        table.add_column(col)
    for split, n in result.counts.items():
        c = result.confidence.get(split, {})
        table.add_row(
            split, str(n), *(f"{c[k]:.3f}" if k in c else "n/a" for k in ("mean", "min", "max"))
        )
    console.print(table)
    if result.skipped:
        console.print(f"[yellow]skipped[/]: {result.skipped} (see {result.out / 'manifest.json'})")


def register(app: typer.Typer) -> None:
    """Add ``benchmark segmentation`` and ``pseudo-label``."""
    benchmark_app.command("segmentation")(segmentation_cmd)
    app.command("pseudo-label")(pseudo_label_cmd)
    evaluate_app.command("captioning")(evaluate_captioning_cmd)
