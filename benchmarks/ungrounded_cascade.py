"""Does the cascaded unconditional diffusion model learn region A at demo scale?

Trains, on a finished demo's region A, the demo's unconditional generator before the cascade
(one U-Net at the patch size, the ``small`` preset's ``diffusion`` options) and cascades of
the ``diffusion`` kind (``cascade_size`` etc., :mod:`groundsynth.generate.cascade`) through
``train_generator``, as the experiment does, then scores each one's samples by the demo's
own learning check: the Fréchet distance to the real images in the seed-0 real segmenter's
pooled encoder features, against the distance between two halves of the real set (the
median over random splits; the check's bound is 10x that). Prints per model: FD, its ratio
to the real halves and the training + sampling seconds (one thread, each model trained
``--repeats`` times with seeds 0, 1, ...; median). Every figure comes from the same run, so
ratios compare like with like. ``--grids DIR`` writes 16 samples of each model to look at.

    make demo                       # writes demo_out/
    python benchmarks/ungrounded_cascade.py --demo demo_out --cascade 16:1050:7:4 --grids grids/
"""

from __future__ import annotations

import argparse
import re
import statistics
import tempfile
import time
import warnings
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
from PIL import Image


def _images(root: Path, splits: tuple[str, ...]) -> torch.Tensor:
    from groundsynth.data.reader import open_dataset

    reader = open_dataset(root)
    arrays = [reader.read_image(s, i) for s in splits for i in reader.ids(s)]
    return torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).float() / 255.0


class _Yardstick:
    """FD to the real images in a segmenter's features, and the real halves' FD."""

    def __init__(self, segmenter: Path, real: torch.Tensor) -> None:
        from groundsynth.benchmark.model import load_segmenter

        self.model, _ = load_segmenter(segmenter, map_location="cpu")
        self.model.eval()
        from groundsynth.evaluate.fidelity import HalfSplits

        feats = self._features(real)
        self.real = self._stats(feats)
        splits = HalfSplits()
        splits.update(feats)
        self.halves = splits.median()  # as the demo's check: the median over random splits

    @torch.no_grad()
    def _features(self, x: torch.Tensor) -> np.ndarray:
        return np.concatenate([self.model.features(b).numpy() for b in x.split(32)])

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

    def __call__(self, images: np.ndarray) -> float:
        x = torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255.0
        return self._fd(self._stats(self._features(x)), self.real)


def _train_and_score(name, model, steps, region, yardstick, args, seed) -> tuple[float, float]:
    from groundsynth.generate.config import TrainConfig
    from groundsynth.generate.sampling import load_generator
    from groundsynth.generate.training import train_generator

    with tempfile.TemporaryDirectory() as tmp:
        cfg = TrainConfig(
            kind="diffusion", dataset=str(region), out=f"{tmp}/{name}", image_size=64,
            max_steps=steps, batch_size=args.batch, checkpoint_every=steps, eval_every=0,
            grid_rows=0, seed=seed, num_workers=0, model=model,
        )  # fmt: skip
        t0 = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            train_generator(cfg, progress=False)
        gen = load_generator(cfg.out)
        seeds = list(range(10_000, 10_000 + args.samples))
        images = np.concatenate(
            [gen.images(seeds[i : i + 64], None) for i in range(0, len(seeds), 64)]
        )
        seconds = time.perf_counter() - t0
        if args.grids is not None:  # the first 16 samples, 4 x 4, to look at
            args.grids.mkdir(parents=True, exist_ok=True)
            rows = [np.concatenate(list(images[r * 4 : r * 4 + 4]), axis=1) for r in range(4)]
            stem = re.sub(r"[^\w.-]+", "_", name)
            Image.fromarray(np.concatenate(rows)).save(args.grids / f"{stem}_seed{seed}.png")
        return yardstick(images), seconds


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--demo", type=Path, default=Path("demo_out"), help="a finished demo's folder")
    p.add_argument("--cascade", action="append", default=[],
                   help="SIZE:STEPS:EVERY[:GROUPS[:BASE_LR]] of a cascade to train (repeatable; "
                        "default 16:1050:7:4:1e-3, the demo's)")  # fmt: skip
    p.add_argument("--plain-steps", type=int, default=150, help="the demo's single U-Net (0: skip)")
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--repeats", type=int, default=1)
    p.add_argument("--samples", type=int, default=279, help="the demo's synthetic set size")
    p.add_argument("--grids", type=Path, default=None, help="write 4x4 sample grids here")
    args = p.parse_args()
    torch.set_num_threads(1)
    from groundsynth.experiment.presets import PRESETS
    from groundsynth.generate.diffusion import DiffusionConfig

    region = args.demo / "regions" / "A"
    segmenter = args.demo / "experiment/benchmark/runs/unet/real/seed0/segmenter.pt"
    if not segmenter.is_file():
        raise SystemExit(f"{segmenter}: not found; run `make demo` (or pass --demo) first")
    yardstick = _Yardstick(segmenter, _images(region, ("train", "val", "test")))
    print(f"real halves FD {yardstick.halves:.3f} (bound {10 * yardstick.halves:.2f})")
    preset = DiffusionConfig(**PRESETS["small"]["diffusion"])
    models = []
    if args.plain_steps:
        models.append((f"single U-Net, {args.plain_steps} steps", preset, args.plain_steps))
    for spec in args.cascade or ["16:1050:7:4:1e-3"]:
        size, steps, every, *rest = spec.split(":")
        groups = int(rest[0]) if rest else preset.norm_groups
        lr = float(rest[1]) if len(rest) > 1 else 1e-3
        model = replace(preset, cascade_size=int(size), cascade_every=int(every),
                        norm_groups=groups, cascade_lr=lr, standardise=True)  # fmt: skip
        models.append((f"cascade {spec}", model, int(steps)))
    for name, model, steps in models:
        fds, secs = zip(*(_train_and_score(name.replace(" ", "_"), model, steps, region,
                                           yardstick, args, seed)
                          for seed in range(args.repeats)))  # fmt: skip
        fd = statistics.median(fds)
        print(f"{name}: FD {fd:.3f} ({fd / yardstick.halves:.1f}x halves; "
              f"{', '.join(f'{f:.3f}' for f in fds)}), {statistics.median(secs):.0f} s")  # fmt: skip


if __name__ == "__main__":
    main()
