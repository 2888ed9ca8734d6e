"""Generation commands: train-generator, generate, import-samples (pseudo-label: see its module)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer

from groundsynth.cli._common import console, friendly, progress_bar

__all__ = ["register"]


def _print_config(config: Any) -> None:
    import yaml

    from groundsynth.runs import to_plain

    console.print(yaml.safe_dump(to_plain(config), sort_keys=False), highlight=False)


def _need_torch() -> None:
    from groundsynth._optional import lazy_import

    lazy_import("torch")
    lazy_import("lightning")
    lazy_import("diffusers")


def _ints(text: str, name: str) -> tuple[int, ...]:
    try:
        return tuple(int(x) for x in text.split(",") if x.strip())
    except ValueError:
        raise typer.BadParameter(f"{name} expects comma-separated integers, got {text!r}") from None


# ----------------------------------------------------------------------------- train-generator
@friendly
def train_generator_cmd(
    dataset: Path = typer.Argument(
        ..., help="Dataset to train on (groundsynth or ARAS400k layout)."
    ),
    out: Path = typer.Option(..., "--out", "-o", help="Run directory to write (or resume)."),
    kind: str = typer.Option(
        "conditional", help="conditional (map -> image, grounded) or diffusion (unconditional)."
    ),
    image_size: int = typer.Option(256, help="Training image size (a multiple of 32)."),
    max_steps: int = typer.Option(100_000, help="Total optimisation steps (resuming continues)."),
    batch_size: int = typer.Option(16, help="Samples per step and device."),
    checkpoint_every: int = typer.Option(
        5_000, help="Steps between checkpoints (with a sample grid and the losses)."
    ),
    keep_checkpoints: int = typer.Option(0, help="Keep only the latest N checkpoints (0: all)."),
    split: str = typer.Option("train", help="Split of DATASET to train on."),
    fit: str = typer.Option("crop", help="Larger patches: crop (keeps 10 m pixels) or resize."),
    augment: bool = typer.Option(True, help="Random flips and 90-degree rotations."),
    seed: int = typer.Option(0, help="Seed of initialisation, data order and noise."),
    accelerator: str = typer.Option("auto", help="Lightning accelerator: auto, cpu, gpu."),
    devices: str = typer.Option("auto", help="Lightning devices: auto, a count, or ids '0,1'."),
    strategy: str = typer.Option("auto", help="Lightning strategy: auto, ddp, ..."),
    precision: str = typer.Option(
        "auto", help="auto (bf16-mixed on CUDA, 32-true on CPU), 32-true, 16-mixed, bf16-mixed."
    ),
    num_workers: int = typer.Option(2, help="Data-loading worker processes."),
    discriminator: str = typer.Option(
        "unet", help="conditional: unet (OASIS per-pixel classes + fake) or patchgan (pix2pix)."
    ),
    width: int = typer.Option(64, help="conditional: generator width (channels at full size)."),
    d_width: int = typer.Option(64, help="conditional: discriminator width."),
    z_dim: int = typer.Option(64, help="conditional: noise channels (3-D noise, OASIS)."),
    vgg_weights: Path | None = typer.Option(
        None, help="conditional: local VGG19 weights (.pth) enabling the perceptual loss."
    ),
    l1_weight: float = typer.Option(
        0.0, help="conditional: weight of an L1 loss to the real image."
    ),
    channels: str = typer.Option(
        "128,128,256,256,512,512", help="diffusion: U-Net channels per resolution."
    ),
    sampler: str = typer.Option(
        "dpm-solver", help="diffusion: default sampler, ddim or dpm-solver."
    ),
    inference_steps: int = typer.Option(25, help="diffusion: default sampling steps."),
    ema_decay: float | None = typer.Option(
        None,
        help="EMA decay of the sampling weights (default 0.999 conditional, 0.9999 diffusion).",
    ),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="Show a progress bar."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Print the resolved config and exit."),
) -> None:
    """Train a generator on a dataset: a grounded SPADE GAN (map -> image) or an unconditional
    diffusion model. Checkpoints, sample grids and losses go into the run directory; rerun the
    same command (optionally with a larger --max-steps) to resume exactly.

    Example: `groundsynth train-generator data/ --out runs/spade --kind conditional --max-steps 50000`
    """
    _need_torch()
    from groundsynth.generate.config import TrainConfig

    model: Any
    if kind == "conditional":
        from groundsynth.generate.conditional.config import ConditionalConfig
        from groundsynth.generate.conditional.spade import SpadeConfig

        extra = {} if ema_decay is None else {"ema_decay": ema_decay}
        model = ConditionalConfig(
            generator=SpadeConfig(width=width, z_dim=z_dim),
            discriminator=discriminator,  # type: ignore[arg-type]
            d_width=d_width,
            vgg_weights=str(vgg_weights.resolve()) if vgg_weights else None,
            l1_weight=l1_weight,
            **extra,
        )
    elif kind == "diffusion":
        from groundsynth.generate.diffusion import DiffusionConfig

        extra = {} if ema_decay is None else {"ema_decay": ema_decay}
        model = DiffusionConfig(
            block_out_channels=_ints(channels, "--channels"),
            sampler=sampler,  # type: ignore[arg-type]
            inference_steps=inference_steps,
            **extra,
        )
    else:
        raise typer.BadParameter(f"--kind must be conditional or diffusion, got {kind!r}")
    config = TrainConfig(
        kind=kind,  # type: ignore[arg-type]
        dataset=str(dataset),
        out=str(out),
        split=split,
        image_size=image_size,
        fit=fit,  # type: ignore[arg-type]
        augment=augment,
        max_steps=max_steps,
        batch_size=batch_size,
        checkpoint_every=checkpoint_every,
        keep_checkpoints=keep_checkpoints,
        seed=seed,
        num_workers=num_workers,
        accelerator=accelerator,
        devices=devices,
        strategy=strategy,
        precision=precision,
        model=model,
    ).resolved()
    if dry_run:
        _print_config(config)
        return
    from groundsynth.generate.training import train_generator

    result = train_generator(config, progress=progress)
    if result.resumed_from is not None:
        console.print(f"resumed at step {result.resumed_from}")
    console.print(
        f"trained {result.steps} steps in {result.seconds:.1f} s; latest checkpoint: "
        f"{result.last_checkpoint}\nsample grids: {result.out / 'samples'}, losses: "
        f"{result.out / 'losses.csv'}"
    )


# ----------------------------------------------------------------------------- generate
@friendly
def generate_cmd(
    model: Path = typer.Option(
        ..., "--model", "-m", help="Run directory (its latest checkpoint) or a checkpoint file."
    ),
    out: Path = typer.Option(..., "--out", "-o", help="Dataset directory to write (or resume)."),
    n: int = typer.Option(..., "--n", "-n", help="Number of samples."),
    layouts: str | None = typer.Option(
        None, help="conditional: train-masks (default) or augmented (flips, rotations, tiling)."
    ),
    target: str | None = typer.Option(
        None, help="conditional: composition target, e.g. 'Shrub>=0.3, Water<=5%'."
    ),
    target_distribution: str | None = typer.Option(
        None, help="conditional: class shares of the set, e.g. 'Shrub=0.3, Barren=0.2'."
    ),
    masks: Path | None = typer.Option(
        None, help="conditional: dataset of source masks (default: the training dataset)."
    ),
    layout_split: str = typer.Option("train", help="conditional: split of the source masks."),
    split: str = typer.Option("synth", help="Split name of the generated samples."),
    seed: int = typer.Option(0, help="Seed of layouts and noise (sample i depends on seed, i)."),
    batch_size: int = typer.Option(16, help="Samples per forward pass."),
    device: str = typer.Option("auto", help="auto (CUDA when available), cpu, cuda[:N]."),
    precision: str = typer.Option("auto", help="auto (bf16 on CUDA), 32, bf16, 16."),
    sampler: str | None = typer.Option(None, help="diffusion: ddim or dpm-solver."),
    steps: int | None = typer.Option(None, help="diffusion: sampling steps."),
    image_size: int | None = typer.Option(None, help="Output size (default: the training size)."),
    num_workers: int = typer.Option(0, help="conditional: processes preparing layouts."),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="Show a progress bar."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Print the resolved config and exit."),
) -> None:
    """Generate a synthetic dataset with a trained generator. Conditional models paint layouts
    (their masks are the maps); diffusion models write images only (pseudo-label them next).
    Rerun the same command to resume; results depend only on --seed and the sample index.

    Example: `groundsynth generate --model runs/spade --target "Shrub>=0.3" --n 1000 --out synth/`
    """
    _need_torch()
    from groundsynth.generate.layouts import LayoutConfig
    from groundsynth.generate.sampling import GenerateConfig, generate_dataset, load_generator

    layout_cfg = None
    if target is not None or target_distribution is not None:
        if layouts not in (None, "target"):
            raise typer.BadParameter("give --layouts or --target/--target-distribution, not both")
        layout_cfg = LayoutConfig(
            strategy="target", split=layout_split, target=target, distribution=target_distribution
        )
    elif layouts is not None:
        layout_cfg = LayoutConfig(strategy=layouts, split=layout_split)  # type: ignore[arg-type]
    elif masks is not None or layout_split != "train":
        layout_cfg = LayoutConfig(split=layout_split)
    config = GenerateConfig(
        model=str(model),
        out=str(out),
        n=n,
        layouts=layout_cfg,
        masks=str(masks) if masks else None,
        split=split,
        seed=seed,
        batch_size=batch_size,
        device=device,
        precision=precision,  # type: ignore[arg-type]
        sampler=sampler,
        steps=steps,
        image_size=image_size,
        num_workers=num_workers,
    )
    if dry_run:
        _print_config(config.resolved(load_generator(model, "cpu")))
        return
    with progress_bar(progress) as bar:
        task = bar.add_task("generate", total=n, info="")
        result = generate_dataset(
            config, progress=lambda d, t: bar.update(task, completed=d, total=t)
        )
    console.print(
        f"{result.n} samples in {result.out} ({result.written} written now, {result.resumed} "
        f"already there); origin {result.origin}"
    )
    share = result.tables.get("class_share")
    if share:
        console.print("class share: " + ", ".join(f"{k} {100 * v:.1f}%" for k, v in share.items()))
        console.print(f"check it: groundsynth validate {result.out}")
    else:
        console.print(
            "images only (no masks yet): label them with `groundsynth pseudo-label`, "
            "then run `groundsynth validate`"
        )
    if result.unsatisfied:
        console.print(
            f"[yellow]{result.unsatisfied} layout(s) do not meet the target[/]: the closest "
            "candidates were used (metadata column layout_satisfied)"
        )


# ----------------------------------------------------------------------------- import-samples
@friendly
def import_samples_cmd(
    source: Path = typer.Argument(..., help="Folder of PNG/JPEG images (searched recursively)."),
    out: Path = typer.Option(..., "--out", "-o", help="Dataset directory to write (or resume)."),
    name: str = typer.Option("external", help="Generator name, recorded as the samples' origin."),
    split: str = typer.Option("synth", help="Split name of the samples."),
    image_size: int | None = typer.Option(None, help="Bring every image to this square size."),
    fit: str = typer.Option("center-crop", help="With --image-size: center-crop or resize."),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="Show a progress bar."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Print the resolved config and exit."),
) -> None:
    """Import images from any external generator (e.g. StyleGAN3 output) as a synthetic
    dataset without masks (pseudo-label them next). Rerun to resume.

    Example: `groundsynth import-samples stylegan3_out/ --out synth_sg3/ --name stylegan3 --image-size 256`
    """
    from groundsynth.generate.importer import ImportConfig, import_samples

    config = ImportConfig(
        source=str(source),
        out=str(out),
        name=name,
        split=split,
        image_size=image_size,
        fit=fit,  # type: ignore[arg-type]
    ).resolved()
    if dry_run:
        _print_config(config)
        return
    with progress_bar(progress) as bar:
        task = bar.add_task("import", total=None, info="")
        result = import_samples(
            config, progress=lambda d, t: bar.update(task, completed=d, total=t)
        )
    console.print(
        f"{result.imported + result.resumed} images in {result.out} ({result.imported} imported "
        f"now, {result.resumed} already there, {len(result.skipped)} skipped); origin {name}"
    )
    for path, reason in list(result.skipped.items())[:10]:
        console.print(f"  skipped {path}: {reason}", highlight=False)


def register(app: typer.Typer) -> None:
    """Add this module's commands to ``app``."""
    app.command("train-generator")(train_generator_cmd)
    app.command("generate")(generate_cmd)
    app.command("import-samples")(import_samples_cmd)
