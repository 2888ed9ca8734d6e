"""Generator throughput at 256²: groundsynth's training and sampling paths vs plain PyTorch.

For the conditional GAN (SPADE + U-Net discriminator) and the diffusion U-Net:

- **ours, training**: ``train_generator`` itself -- the library's Lightning module on a dataset
  written in the data contract (PNG reading in DataLoader workers, EMA, checkpoint logic);
  on CUDA with bf16 mixed precision and channels-last, on the CPU in fp32;
- **plain, training**: the same networks, a hand-written fp32 PyTorch step (contiguous memory)
  on tensors already on the device (no data loading at all: flattering to the baseline);
- **ours, sampling**: ``LoadedGenerator.images`` (batched; bf16 autocast + channels-last on
  CUDA), and ``generate_dataset`` end to end (layouts, generation, PNG writes, tables);
- **plain, sampling**: the reference scripts' way: fp32, batch size 1, one image at a time.

Images per second, median over ``--repeats`` runs of ``--steps`` timed steps after
``--warmup``; ratios ours / plain. CUDA uses the default (paper-size) networks; the CPU uses a
tiny config (``--tiny`` forces it) so the script finishes in a few minutes.

Usage: python benchmarks/bench_generate.py [--device auto] [--repeats 3] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
import warnings
from pathlib import Path

import lightning as L
import numpy as np
import torch
import torch.nn.functional as F

from groundsynth.classes import COLOURS, NUM_CLASSES
from groundsynth.data.masks import encode_mask_png, encode_rgb_png
from groundsynth.generate.conditional.config import ConditionalConfig
from groundsynth.generate.conditional.discriminators import get_discriminator
from groundsynth.generate.conditional.losses import get_adversarial_loss
from groundsynth.generate.conditional.module import build_generator, sample_noise
from groundsynth.generate.conditional.spade import SpadeConfig
from groundsynth.generate.config import TrainConfig
from groundsynth.generate.data import one_hot
from groundsynth.generate.diffusion import (
    DiffusionConfig,
    build_unet,
    sample_images,
    training_scheduler,
)
from groundsynth.generate.sampling import GenerateConfig, generate_dataset, load_generator
from groundsynth.generate.training import train_generator

SIZE = 256


# ----------------------------------------------------------------------------- set-up
def write_dataset(root: Path, n: int, size: int, seed: int = 0) -> Path:
    """``n`` blocky maps with colour images, in the data contract (metadata + tables)."""
    import pandas as pd

    from groundsynth.classes import CLASS_NAMES
    from groundsynth.data.composition import class_fractions

    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n):
        low = rng.integers(0, NUM_CLASSES, (8, 8))
        mask = np.kron(low, np.ones((size // 8, size // 8), dtype=np.int64)).astype(np.uint8)
        image = np.clip(COLOURS[mask] + rng.normal(0, 8, (size, size, 3)), 0, 255).astype(np.uint8)
        for folder, data in (("images", encode_rgb_png(image)), ("masks", encode_mask_png(mask))):
            (root / "train" / folder).mkdir(parents=True, exist_ok=True)
            (root / "train" / folder / f"{i:05d}.png").write_bytes(data)
        row = {"id": f"{i:05d}", "split": "train", "origin": "real"}
        row.update({f"frac_{c}": float(f) for c, f in zip(CLASS_NAMES, class_fractions(mask))})
        rows.append(row)
    pd.DataFrame(rows).to_parquet(root / "metadata.parquet", index=False)
    return root


def configs(tiny: bool) -> tuple[ConditionalConfig, DiffusionConfig]:
    if tiny:
        cond = ConditionalConfig(
            generator=SpadeConfig(width=8, max_channels=32, z_dim=8, spade_hidden=16),
            d_width=8,
            d_max_channels=32,
        )
        diff = DiffusionConfig(
            block_out_channels=(8, 16, 32), layers_per_block=1, attention=False, inference_steps=2
        )
        return cond, diff
    return ConditionalConfig(), DiffusionConfig(inference_steps=25)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class StepTimer(L.Callback):
    """Wall time at the end of every training step (synchronised)."""

    def __init__(self) -> None:
        self.times: list[float] = []

    def on_train_batch_end(self, trainer, module, *args) -> None:
        sync(module.device)
        self.times.append(time.perf_counter())


# ----------------------------------------------------------------------------- training
def ours_training(kind, model, data: Path, work: Path, args, device) -> float:
    """Images/s of train_generator (median step time over the timed steps)."""
    timer = StepTimer()
    total = args.warmup + args.steps + 1  # the last step also writes a checkpoint: not timed
    cfg = TrainConfig(
        kind=kind,
        dataset=str(data),
        out=str(work),
        image_size=SIZE,
        max_steps=total,
        batch_size=args.batch_size,
        checkpoint_every=10**9,
        grid_rows=0,
        num_workers=args.workers,
        accelerator="gpu" if device.type == "cuda" else "cpu",
        devices="1",
        model=model,
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        train_generator(cfg, progress=False, callbacks=[timer])
    steps = np.diff(timer.times[args.warmup - 1 : -1])
    return args.batch_size / float(np.median(steps))


def plain_conditional_step(model: ConditionalConfig, args, device):
    """A hand-written fp32 GAN step on the same networks (returns a step function)."""
    torch.manual_seed(0)
    g = build_generator(model).to(device)
    d = get_discriminator(model.discriminator)(
        NUM_CLASSES, width=model.d_width, depth=model.d_depth, max_channels=model.d_max_channels
    ).to(device)
    d_loss_fn, g_loss_fn = get_adversarial_loss(model.adversarial_loss)
    opt_g = torch.optim.Adam(g.parameters(), lr=model.lr_g, betas=(model.beta1, model.beta2))
    opt_d = torch.optim.Adam(d.parameters(), lr=model.lr_d, betas=(model.beta1, model.beta2))
    b = args.batch_size
    real = torch.rand(b, 3, SIZE, SIZE, device=device) * 2 - 1
    onehot = one_hot(torch.randint(0, NUM_CLASSES, (b, SIZE, SIZE), device=device), NUM_CLASSES)
    z_dim = model.generator.z_dim

    def step() -> None:
        with torch.no_grad():
            fake = g(onehot, torch.randn(b, z_dim, device=device))
        loss = d_loss_fn(d(real, onehot), d(fake, onehot), onehot)
        opt_d.zero_grad()
        loss.backward()
        opt_d.step()
        fake = g(onehot, torch.randn(b, z_dim, device=device))
        loss = g_loss_fn(d(fake, onehot), onehot)
        opt_g.zero_grad()
        loss.backward()
        opt_g.step()

    return step


def plain_diffusion_step(model: DiffusionConfig, args, device):
    torch.manual_seed(0)
    unet = build_unet(model, SIZE).to(device)
    sched = training_scheduler(model)
    opt = torch.optim.AdamW(unet.parameters(), lr=model.lr)
    x0 = torch.rand(args.batch_size, 3, SIZE, SIZE, device=device) * 2 - 1

    def step() -> None:
        noise = torch.randn_like(x0)
        t = torch.randint(0, model.num_train_timesteps, (x0.shape[0],), device=device)
        loss = F.mse_loss(unet(sched.add_noise(x0, noise, t), t).sample, noise)
        opt.zero_grad()
        loss.backward()
        opt.step()

    return step


def plain_training(step, args, device) -> float:
    for _ in range(args.warmup):
        step()
    sync(device)
    times = []
    for _ in range(args.steps):
        t = time.perf_counter()
        step()
        sync(device)
        times.append(time.perf_counter() - t)
    return args.batch_size / float(np.median(times))


# ----------------------------------------------------------------------------- sampling
def ours_sampling(run: Path, args, device, n: int) -> float:
    gen = load_generator(run, device)
    cuda = device.type == "cuda"
    if cuda:
        gen.network.to(memory_format=torch.channels_last)
    masks = np.random.default_rng(0).integers(0, NUM_CLASSES, (n, SIZE, SIZE)).astype(np.uint8)
    kw = dict(autocast=torch.bfloat16 if cuda else None, channels_last=cuda)

    def batch() -> None:
        for s in range(0, n, args.sample_batch):
            seeds = list(range(s, min(s + args.sample_batch, n)))
            gen.images(seeds, masks[seeds] if gen.kind == "conditional" else None, **kw)

    batch()  # warm-up (cuDNN autotuning, lazy init)
    sync(device)
    t = time.perf_counter()
    batch()
    sync(device)
    return n / (time.perf_counter() - t)


def plain_sampling(run: Path, device, n: int) -> float:
    """fp32, batch size 1, contiguous: one image at a time."""
    gen = load_generator(run, device)
    net = gen.network.float().to(memory_format=torch.contiguous_format)
    model = gen.train_config.model

    @torch.no_grad()
    def one(i: int) -> None:
        if gen.kind == "conditional":
            mask = torch.randint(0, NUM_CLASSES, (1, SIZE, SIZE), device=device)
            net(one_hot(mask, NUM_CLASSES), sample_noise(model.generator.z_dim, [i], device))
        else:
            sample_images(net, model, [i], SIZE)

    one(0)
    sync(device)
    t = time.perf_counter()
    for i in range(n):
        one(i)
    sync(device)
    return n / (time.perf_counter() - t)


def end_to_end(run: Path, work: Path, args, device, n: int, kind: str) -> float:
    cfg = GenerateConfig(
        model=str(run),
        out=str(work),
        n=n,
        batch_size=args.sample_batch,
        device=str(device),
        num_workers=args.workers if kind == "conditional" else 0,
    )
    t = time.perf_counter()
    generate_dataset(cfg)
    return n / (time.perf_counter() - t)


# ----------------------------------------------------------------------------- main
def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--device", default="auto")
    ap.add_argument("--tiny", action="store_true", help="tiny networks (always on the CPU)")
    ap.add_argument("--kinds", default="conditional,diffusion")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--warmup", type=int, default=None)
    ap.add_argument("--steps", type=int, default=None)
    ap.add_argument("--batch-size", type=int, default=None)
    ap.add_argument("--sample-batch", type=int, default=None)
    ap.add_argument("--samples", type=int, default=None, help="images per sampling run")
    ap.add_argument("--workers", type=int, default=None)
    ap.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: default)")
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(
        ("cuda" if torch.cuda.is_available() else "cpu") if args.device == "auto" else args.device
    )
    cuda = device.type == "cuda"
    tiny = args.tiny or not cuda
    defaults = dict(warmup=5, steps=20, batch_size=16, sample_batch=32, samples=256, workers=8)
    if not cuda:
        defaults = dict(warmup=2, steps=5, batch_size=2, sample_batch=8, samples=16, workers=0)
    for k, v in defaults.items():
        if getattr(args, k) is None:
            setattr(args, k, v)
    if cuda:
        torch.backends.cudnn.benchmark = True
    cond, diff = configs(tiny)
    print(
        f"device {device} ({torch.cuda.get_device_name(device) if cuda else 'CPU'}), "
        f"{'tiny' if tiny else 'default'} networks, {SIZE}², batch {args.batch_size}, "
        f"threads {torch.get_num_threads()}"
    )
    results: dict[str, dict[str, float]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        data = write_dataset(tmp / "data", max(32, args.batch_size * 2), SIZE)
        for kind in args.kinds.split(","):
            model = cond if kind == "conditional" else diff
            model = model.resolved(SIZE)
            figures: dict[str, list[float]] = {}
            for r in range(args.repeats):
                run = tmp / f"{kind}_run{r}"
                figures.setdefault("train ours", []).append(
                    ours_training(kind, model, data, run, args, device)
                )
                step = (plain_conditional_step if kind == "conditional" else plain_diffusion_step)(
                    model, args, device
                )
                figures.setdefault("train plain fp32", []).append(
                    plain_training(step, args, device)
                )
                del step
                n = args.samples if kind == "conditional" else max(4, args.samples // 4)
                figures.setdefault("sample ours", []).append(ours_sampling(run, args, device, n))
                figures.setdefault("sample plain fp32 bs1", []).append(
                    plain_sampling(run, device, max(2, n // 4))
                )
                figures.setdefault("generate end-to-end", []).append(
                    end_to_end(run, tmp / f"{kind}_gen{r}", args, device, n, kind)
                )
                if cuda:
                    torch.cuda.empty_cache()
            med = {k: statistics.median(v) for k, v in figures.items()}
            med["train ratio"] = med["train ours"] / med["train plain fp32"]
            med["sample ratio"] = med["sample ours"] / med["sample plain fp32 bs1"]
            if cuda:
                med["peak GiB"] = torch.cuda.max_memory_allocated(device) / 2**30
            results[kind] = med
            print(
                f"\n{kind}"
                + (
                    f" (sampling: {diff.sampler}, {diff.inference_steps} steps)"
                    if kind == "diffusion"
                    else ""
                )
            )
            for k, v in med.items():
                unit = "x" if "ratio" in k else ("" if "GiB" in k else " img/s")
                print(f"  {k:24s} {v:10.2f}{unit}")
            if args.json:  # after each kind, so a run cut short keeps what it measured
                args.json.write_text(
                    json.dumps({"device": str(device), "tiny": tiny, **results}, indent=2)
                )


if __name__ == "__main__":
    main()
