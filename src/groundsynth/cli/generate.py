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
        "conditional",
        help="conditional (SPADE GAN, map -> image, grounded), diffusion (unconditional) or "
        "conditional-diffusion (the diffusion model given the map, grounded).",
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
    num_nodes: int = typer.Option(1, help="Lightning nodes."),
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
    fm_segmenter: Path | None = typer.Option(
        None,
        help="conditional: a real-trained segmenter.pt enabling feature matching: L1 between "
        "its encoder's features of each generated image and of the real image of the same map. "
        "Needed to train and resume, not to sample.",
    ),
    fm_weight: float = typer.Option(
        10.0, help="conditional: weight of the --fm-segmenter feature-matching loss."
    ),
    l1_weight: float = typer.Option(
        0.0, help="conditional: weight of an L1 loss to the real image."
    ),
    channels: str = typer.Option(
        "128,128,256,256,512,512", help="diffusion kinds: U-Net channels per resolution."
    ),
    sampler: str = typer.Option(
        "dpm-solver", help="diffusion kinds: default sampler, ddim or dpm-solver."
    ),
    inference_steps: int = typer.Option(25, help="diffusion kinds: default sampling steps."),
    map_dropout: float = typer.Option(
        0.1,
        help="conditional-diffusion: share of training samples without their map (classifier-"
        "free guidance).",
    ),
    guidance: float = typer.Option(
        1.0, help="conditional-diffusion: default guidance scale (1: the map alone, 0: no map)."
    ),
    mean_prior: bool = typer.Option(
        False,
        "--mean-prior/--no-mean-prior",
        help="conditional-diffusion: diffuse the residual from the map's class-mean colours "
        "(measured on the training images), so colours are right from the first step.",
    ),
    standardise: bool = typer.Option(
        False,
        "--standardise/--no-standardise",
        help="diffusion kinds: diffuse images standardised per channel (mean and std measured "
        "on the training images; with --mean-prior, of the residual), mapped back when "
        "sampling. The noise schedule assumes unit-scale data; image patches are near 0.33.",
    ),
    cascade_size: int | None = typer.Option(
        None,
        help="diffusion: a cascade -- a base U-Net learns the images area-downsampled to this "
        "size (e.g. 16 for 64 px patches) and a U-Net at --image-size adds the detail, "
        "conditioned on the upsampled base image. Learns a region's layout at small budgets.",
    ),
    cascade_every: int = typer.Option(
        1, help="With --cascade-size: train the detail U-Net on every k-th step (the base: all)."
    ),
    cascade_lr: float | None = typer.Option(
        None, help="With --cascade-size: the base U-Net's learning rate (default: the detail's)."
    ),
    ema_decay: float | None = typer.Option(
        None,
        help="EMA decay of the sampling weights (default 0.999 conditional, 0.9999 diffusion).",
    ),
    eval_every: int | None = typer.Option(
        None,
        help="Steps between learning-curve evaluations on held-out data (default: "
        "--checkpoint-every; 0: none). Writes curves.csv and curves.png.",
    ),
    eval_split: str = typer.Option(
        "val", help="Held-out split (val falls back to test, then to a held-out training tail)."
    ),
    eval_samples: int = typer.Option(64, help="Held-out samples per evaluation."),
    eval_segmenter: Path | None = typer.Option(
        None,
        help="A real-trained segmenter.pt: reads samples back and gives the FD features "
        "(default: the pixel floor and a coarse fixed descriptor).",
    ),
    stop_on_plateau: bool = typer.Option(
        False,
        "--stop-on-plateau/--no-stop-on-plateau",
        help="Stop once label fidelity (FD for diffusion) stops improving.",
    ),
    plateau_patience: int = typer.Option(
        5, help="With --stop-on-plateau: evaluations without improvement before stopping."
    ),
    plateau_min_delta: float = typer.Option(
        0.0, help="With --stop-on-plateau: the least change that counts as an improvement."
    ),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="Show a progress bar."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Print the resolved config and exit."),
) -> None:
    """Train a generator on a dataset: a grounded SPADE GAN (map -> image), an unconditional
    diffusion model, or the same diffusion model conditioned on the map (conditional-diffusion).
    Checkpoints, sample grids and losses go into the run directory; rerun the same command
    (optionally with a larger --max-steps) to resume exactly.

    Example: `groundsynth train-generator data/ --out runs/spade --kind conditional --max-steps 50000`

    Example: `groundsynth train-generator data/ --out runs/spade --eval-every 1000 --stop-on-plateau`

    Example (feature matching on a real-trained segmenter): `groundsynth train-generator data/ --out runs/spade --fm-segmenter bench/runs/unet/real/seed0/segmenter.pt --fm-weight 10`

    Example: `groundsynth train-generator data/ --out runs/cdiff --kind conditional-diffusion --map-dropout 0.1`

    Example (a cascade for 64 px patches): `groundsynth train-generator data/ --out runs/diff --kind diffusion --image-size 64 --cascade-size 16 --cascade-every 10 --standardise`

    Example (2 GPUs, --batch-size per GPU): `groundsynth train-generator data/ --out runs/spade --devices 2 --strategy ddp`
    """
    _need_torch()
    from groundsynth.generate.config import KINDS, TrainConfig

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
            fm_segmenter=str(fm_segmenter) if fm_segmenter else None,
            fm_weight=fm_weight,
            l1_weight=l1_weight,
            **extra,
        )
    elif kind in ("diffusion", "conditional-diffusion"):
        from groundsynth.generate.conditional_diffusion import ConditionalDiffusionConfig
        from groundsynth.generate.diffusion import DiffusionConfig

        extra: dict[str, Any] = {} if ema_decay is None else {"ema_decay": ema_decay}
        extra["standardise"] = standardise
        if cascade_size is not None:
            if kind != "diffusion":
                raise typer.BadParameter("--cascade-size is for --kind diffusion only")
            extra.update(cascade_size=cascade_size, cascade_every=cascade_every)
            extra["cascade_lr"] = cascade_lr
        cls: Any = DiffusionConfig
        if kind == "conditional-diffusion":
            cls = ConditionalDiffusionConfig
            extra.update(map_dropout=map_dropout, guidance=guidance, mean_prior=mean_prior)
        model = cls(
            block_out_channels=_ints(channels, "--channels"),
            sampler=sampler,
            inference_steps=inference_steps,
            **extra,
        )
    else:
        raise typer.BadParameter(f"--kind must be one of {', '.join(KINDS)}, got {kind!r}")
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
        num_nodes=num_nodes,
        strategy=strategy,
        precision=precision,
        eval_every=eval_every,
        eval_split=eval_split,
        eval_samples=eval_samples,
        eval_segmenter=str(eval_segmenter) if eval_segmenter else None,
        stop_on_plateau=stop_on_plateau,
        plateau_patience=plateau_patience,
        plateau_min_delta=plateau_min_delta,
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
    if result.stopped_early_at is not None:
        console.print(
            f"stopped early at step {result.stopped_early_at}: the learning curve plateaued"
        )
    if result.learning:
        console.print(_learning_line(result.learning) + f"; curves: {result.out / 'curves.png'}")


def _learning_line(learning: dict[str, Any]) -> str:
    """The last learning-curve evaluation in one line."""

    def fmt(value: float | None) -> str:
        return "n/a" if value is None else f"{value:.4g}"

    parts = []
    if learning["label_fidelity"] is not None:
        parts.append(
            f"label fidelity {fmt(learning['label_fidelity'])} "
            f"(real ceiling {fmt(learning['ceiling'])})"
        )
    parts.append(f"FD {fmt(learning['fd'])} (real halves {fmt(learning['fd_real_halves'])})")
    return f"at step {learning['step']}: {', '.join(parts)}"


# ----------------------------------------------------------------------------- generate
@friendly
def generate_cmd(
    model: Path = typer.Option(
        ..., "--model", "-m", help="Run directory (its latest checkpoint) or a checkpoint file."
    ),
    out: Path = typer.Option(..., "--out", "-o", help="Dataset directory to write (or resume)."),
    n: int = typer.Option(..., "--n", "-n", help="Number of samples."),
    layouts: str | None = typer.Option(
        None,
        help="conditional kinds: train-masks (default) or augmented (flips, rotations, tiling).",
    ),
    target: str | None = typer.Option(
        None, help="conditional kinds: composition target, e.g. 'Shrub>=0.3, Water<=5%'."
    ),
    target_distribution: str | None = typer.Option(
        None, help="conditional kinds: class shares of the set, e.g. 'Shrub=0.3, Barren=0.2'."
    ),
    masks: Path | None = typer.Option(
        None, help="conditional kinds: dataset of source masks (default: the training dataset)."
    ),
    layout_split: str = typer.Option("train", help="conditional kinds: split of the source masks."),
    split: str = typer.Option("synth", help="Split name of the generated samples."),
    seed: int = typer.Option(0, help="Seed of layouts and noise (sample i depends on seed, i)."),
    batch_size: int = typer.Option(16, help="Samples per forward pass."),
    device: str = typer.Option("auto", help="auto (CUDA when available), cpu, cuda[:N]."),
    precision: str = typer.Option("auto", help="auto (bf16 on CUDA), 32, bf16, 16."),
    sampler: str | None = typer.Option(None, help="diffusion kinds: ddim or dpm-solver."),
    steps: int | None = typer.Option(None, help="diffusion kinds: sampling steps."),
    guidance: float | None = typer.Option(
        None,
        help="conditional-diffusion: classifier-free guidance scale (default: the model's; "
        "1: the map alone, 0: no map, >1: follow the map more closely).",
    ),
    image_size: int | None = typer.Option(None, help="Output size (default: the training size)."),
    num_workers: int = typer.Option(0, help="conditional kinds: processes preparing layouts."),
    chunk_size: int = typer.Option(256, help="Samples per resumable chunk (on Ray: per task)."),
    executor: str = typer.Option(
        "local",
        help="Where chunks are generated: local (this process) or ray (one Ray task per chunk, "
        "the generator loaded once per worker; pip install 'groundsynth[distributed]'). The "
        "files are byte-identical either way and a run resumes on either.",
    ),
    ray_address: str | None = typer.Option(
        None,
        help="Ray cluster to join: auto (the one `ray start --head` started here), HOST:PORT "
        "or ray://HOST:PORT. Default: start a local cluster for the run. On a cluster, every "
        "node needs groundsynth and the model, --masks and --out at the same path.",
    ),
    ray_cpus: float = typer.Option(1.0, help="CPUs reserved per Ray task (chunk)."),
    ray_gpus: float = typer.Option(
        0.0, help="GPUs per Ray task; a fraction shares a GPU (0.5: two tasks per GPU)."
    ),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="Show a progress bar."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Print the resolved config and exit."),
) -> None:
    """Generate a synthetic dataset with a trained generator. Conditional and
    conditional-diffusion models paint layouts (their masks are the maps); diffusion models
    write images only (pseudo-label them next). Rerun the same command to resume; results
    depend only on --seed and the sample index.

    Example: `groundsynth generate --model runs/spade --target "Shrub>=0.3" --n 1000 --out synth/`

    Example: `groundsynth generate --model runs/cdiff --guidance 2 --steps 25 --n 1000 --out synth/`

    On a Ray cluster, a GPU per chunk: `groundsynth generate --model runs/cdiff --n 300000 --out synth/ --executor ray --ray-address auto --ray-gpus 1 --chunk-size 1024`
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
        guidance=guidance,
        image_size=image_size,
        num_workers=num_workers,
        chunk_size=chunk_size,
        executor=executor,  # type: ignore[arg-type]
        ray_address=ray_address,
        ray_cpus=ray_cpus,
        ray_gpus=ray_gpus,
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
