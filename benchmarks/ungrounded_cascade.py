"""Can an unconditional (ungrounded) diffusion model learn region A at demo scale?

Measures, on a finished demo's region A, the Fréchet distance of unconditional samples to
the real images in the features of the demo's own learning check (the seed-0 real
segmenter's pooled encoder features), against the distance between two halves of the real
set (the check's bound is 10x that). Two generators, both trained here on one thread:

- ``--mode base``: a U-Net at ``--base-size`` px (area-downsampled training images),
  sampled and upsampled bilinearly to the patch size;
- ``--mode cascade``: that base, then a U-Net at the patch size that diffuses the residual
  from the upsampled base sample, conditioned on it (Ho et al., 2021, cascaded diffusion),
  trained for ``--sr-steps`` steps with a little noise on its condition.

Both diffuse standardised data (the ``standardise`` option of the ``diffusion`` kind) with
``--groups`` GroupNorm groups. With the defaults on the demo's region A this prints real
halves 0.314 (bound 3.14; the demo's own 64 px U-Net: 4.96), the base 3.115 (9.9x) after
89 s and the cascade 2.654 (8.5x) after 123 s more, on one idle thread (session 10).

    make demo                       # writes demo_out/
    python benchmarks/ungrounded_cascade.py --demo demo_out --mode cascade --base-steps 1000
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F


def _images(root: Path, splits: tuple[str, ...]) -> torch.Tensor:
    from groundsynth.data.reader import open_dataset

    reader = open_dataset(root)
    arrays = [reader.read_image(s, i) for s in splits for i in reader.ids(s)]
    x = torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).float()
    return x / 127.5 - 1.0


class _Yardstick:
    """FD to the real images in a segmenter's features, and the real halves' FD."""

    def __init__(self, segmenter: Path, real: torch.Tensor) -> None:
        from groundsynth.benchmark.model import load_segmenter

        self.model, _ = load_segmenter(segmenter, map_location="cpu")
        self.model.eval()
        feats = self._features(real)
        parity = np.arange(len(feats)) % 2
        self.real = self._stats(feats)
        self.halves = self._fd(self._stats(feats[parity == 0]), self._stats(feats[parity == 1]))

    @torch.no_grad()
    def _features(self, x: torch.Tensor) -> np.ndarray:
        parts = [self.model.features(((b + 1) / 2).clamp(0, 1)).numpy() for b in x.split(32)]
        return np.concatenate(parts)

    @staticmethod
    def _stats(features: np.ndarray):
        from groundsynth.evaluate.fidelity import FeatureStats

        stats = FeatureStats()
        stats.update(features)
        return stats

    @staticmethod
    def _fd(a, b) -> float:
        from groundsynth.evaluate.fidelity import frechet_distance

        return float(frechet_distance(a.mean, a.cov, b.mean, b.cov))

    def __call__(self, samples: torch.Tensor) -> float:
        return self._fd(self._stats(self._features(samples)), self.real)


def _config(groups: int, lr: float):
    from groundsynth.generate.diffusion import DiffusionConfig

    return DiffusionConfig(
        block_out_channels=(16, 32, 64), layers_per_block=1, attention=False, norm_groups=groups,
        num_train_timesteps=100, beta_schedule="squaredcos_cap_v2",
        prediction_type="v_prediction", lr=lr, ema_decay=0.99, inference_steps=10,
    )  # fmt: skip


def _augment(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    x = torch.rot90(x, int(torch.randint(0, 4, (1,), generator=gen)), (2, 3))
    return x.flip(3) if float(torch.rand(1, generator=gen)) < 0.5 else x


def _train(cfg, data, steps: int, batch: int, cond_of=None, seed: int = 0):
    """Train a U-Net on ``data`` (standardised targets); ``cond_of(x) -> (target, cond)``
    makes a conditional one. Returns its EMA copy."""
    from groundsynth.generate.diffusion import build_unet, training_scheduler
    from groundsynth.generate.ema import ema_decay_at, make_ema, update_ema

    gen = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    unet = build_unet(cfg, data.shape[-1], 0 if cond_of is None else 3)
    ema, schedule = make_ema(unet), training_scheduler(cfg)
    opt = torch.optim.AdamW(unet.parameters(), lr=cfg.lr)
    for step in range(1, steps + 1):
        x = _augment(data[torch.randint(0, len(data), (batch,), generator=gen)], gen)
        x0, cond = (x, None) if cond_of is None else cond_of(x, gen)
        noise = torch.randn(x0.shape, generator=gen)
        t = torch.randint(0, cfg.num_train_timesteps, (batch,), generator=gen)
        inp = schedule.add_noise(x0, noise, t)
        if cond is not None:
            inp = torch.cat([inp, cond], 1)
        loss = F.mse_loss(unet(inp, t).sample, schedule.get_velocity(x0, noise, t))
        opt.zero_grad()
        loss.backward()
        opt.step()
        update_ema(ema, unet, ema_decay_at(cfg.ema_decay, step))
    return ema.eval()


@torch.no_grad()
def _sample(cfg, unet, seeds: list[int], size: int, cond: torch.Tensor | None = None):
    from groundsynth.generate.diffusion import initial_noise, sampling_scheduler

    out = []
    for i in range(0, len(seeds), 64):
        sched = sampling_scheduler(cfg)
        sched.set_timesteps(cfg.inference_steps)
        x = initial_noise(seeds[i : i + 64], size, "cpu") * sched.init_noise_sigma
        for t in sched.timesteps:
            inp = sched.scale_model_input(x, t)
            if cond is not None:
                inp = torch.cat([inp, cond[i : i + 64]], 1)
            x = sched.step(unet(inp, t).sample, t, x).prev_sample
        out.append(x)
    return torch.cat(out)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--demo", type=Path, default=Path("demo_out"), help="a finished demo's folder")
    p.add_argument("--mode", choices=("base", "cascade"), default="cascade")
    p.add_argument("--base-size", type=int, default=16)
    p.add_argument("--base-steps", type=int, default=1000)
    p.add_argument("--base-batch", type=int, default=16)
    p.add_argument("--base-lr", type=float, default=1e-3)
    p.add_argument("--sr-steps", type=int, default=150)
    p.add_argument("--sr-batch", type=int, default=8)
    p.add_argument("--sr-lr", type=float, default=3e-3)
    p.add_argument("--groups", type=int, default=4, help="GroupNorm groups (the demo: 16)")
    p.add_argument("--samples", type=int, default=279, help="the demo's synthetic set size")
    args = p.parse_args()
    torch.set_num_threads(1)
    region = args.demo / "regions" / "A"
    segmenter = args.demo / "experiment/benchmark/runs/unet/real/seed0/segmenter.pt"
    if not segmenter.is_file():
        raise SystemExit(f"{segmenter}: not found; run `make demo` (or pass --demo) first")
    train = _images(region, ("train",))
    size = train.shape[-1]
    yardstick = _Yardstick(segmenter, _images(region, ("train", "val", "test")))
    print(f"real halves FD {yardstick.halves:.3f} (bound {10 * yardstick.halves:.2f})")

    t0 = time.perf_counter()
    low = F.interpolate(train, size=args.base_size, mode="area")
    mean, std = low.mean((0, 2, 3), keepdim=True), low.std((0, 2, 3), keepdim=True)
    cfg = _config(args.groups, args.base_lr)
    base = _train(cfg, (low - mean) / std, args.base_steps, args.base_batch)
    seeds = list(range(args.samples))
    small = (_sample(cfg, base, seeds, args.base_size) * std + mean).clamp(-1, 1)
    up = F.interpolate(small, size=size, mode="bilinear", align_corners=False)
    fd = yardstick(up)
    print(f"base {args.base_size} px, {args.base_steps} steps: FD {fd:.3f} "
          f"({fd / yardstick.halves:.1f}x halves), {time.perf_counter() - t0:.0f} s")  # fmt: skip
    if args.mode == "base":
        return

    t0 = time.perf_counter()

    def blur(x: torch.Tensor) -> torch.Tensor:
        small = F.interpolate(x, size=args.base_size, mode="area")
        return F.interpolate(small, size=size, mode="bilinear", align_corners=False)

    scale = (train - blur(train)).std((0, 2, 3), keepdim=True)

    def cond_of(x: torch.Tensor, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        c = blur(x)
        return (x - c) / scale, c + 0.05 * torch.randn(c.shape, generator=gen)

    sr_cfg = _config(args.groups, args.sr_lr)
    sr = _train(sr_cfg, train, args.sr_steps, args.sr_batch, cond_of, seed=1)
    offset = [s + 10_000 for s in seeds]
    out = (up + _sample(sr_cfg, sr, offset, size, up) * scale).clamp(-1, 1)
    fd = yardstick(out)
    print(f"cascade, residual U-Net {args.sr_steps} steps: FD {fd:.3f} "
          f"({fd / yardstick.halves:.1f}x halves), {time.perf_counter() - t0:.0f} s")  # fmt: skip


if __name__ == "__main__":
    main()
