"""Learning curves of the generators on a sample world, within a time budget per kind.

Builds a sample world and its patch dataset (``--size``, ``--image-size``), then trains each
generator kind of an experiment preset (``--preset``, default ``full``: the GPU setting) in
chunks of ``--eval-every`` steps -- every chunk resumes the run from its checkpoint, so the
budget is kept without a half-finished step -- and prints the learning-curve row of each
evaluation: label fidelity read back by the pixel floor against the real ceiling (map-
conditioned kinds) and the Fréchet distance against two halves of the real set. Stops a kind
when ``--seconds`` of training have passed or ``--max-steps`` are reached.

    python benchmarks/learning_curves.py --preset small --size 1024 --image-size 64 --seconds 60
    python benchmarks/learning_curves.py --device cuda --seconds 150      # on a GPU (gpu_check.sh)

Writes each run under ``--out`` (``curves.csv``, ``curves.png``, sample grids) and a summary
``learning_curves.json``.
"""

from __future__ import annotations

import argparse
import csv
import json
import logging
import time
import warnings
from pathlib import Path


def _dataset(out: Path, size: int, patch: int) -> Path:
    from groundsynth.data.build import BuildConfig, build_dataset
    from groundsynth.data.sample_world import SampleWorldConfig, make_sample_world

    world = make_sample_world(out / "world", SampleWorldConfig(size=size, seed=0))
    cfg = BuildConfig(
        imagery=(str(world.imagery),), landcover=(str(world.landcover),), out=str(out / "data"),
        size=patch, seed=0, workers=1, block_size=2,
    )  # fmt: skip
    return build_dataset(cfg).out


def _model(kind: str, preset: dict) -> dict:
    from groundsynth.experiment.presets import generator_model

    model = generator_model(preset, kind)  # as the experiment trains it
    if kind == "conditional-diffusion":
        model["map_dropout"] = 0.1
    return model


def _rows(run: Path) -> list[dict[str, str]]:
    path = run / "curves.csv"
    return list(csv.DictReader(path.open())) if path.is_file() else []


def _fmt(row: dict[str, str]) -> str:
    keys = ("step", "label_fidelity_floor", "ceiling_floor", "fd", "fd_real_halves", "precision",
            "recall", "seconds")  # fmt: skip
    return "  ".join(f"{k}={row[k][:8]}" for k in keys if row.get(k))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--out", default=".bench-tmp/learning_curves")
    p.add_argument("--preset", default="full", choices=("tiny", "small", "full"))
    p.add_argument("--kinds", default="conditional-diffusion,diffusion,conditional")
    p.add_argument("--size", type=int, default=2048, help="sample world size (pixels)")
    p.add_argument("--image-size", type=int, default=256, help="patch and training size")
    p.add_argument("--eval-every", type=int, default=250)
    p.add_argument("--eval-samples", type=int, default=64)
    p.add_argument("--seconds", type=float, default=150.0, help="training budget per kind")
    p.add_argument("--max-steps", type=int, default=100_000)
    p.add_argument("--batch-size", type=int, default=None, help="default: the preset's")
    p.add_argument("--device", default="auto", help="auto, cpu or cuda")
    args = p.parse_args()
    warnings.simplefilter("ignore")
    logging.basicConfig(level=logging.WARNING)
    for name in ("", "lightning", "lightning.pytorch", "groundsynth"):
        logging.getLogger(name).setLevel(logging.WARNING)

    from groundsynth.experiment.presets import PRESETS
    from groundsynth.generate.config import TrainConfig
    from groundsynth.generate.training import train_generator

    out = Path(args.out)
    t0 = time.perf_counter()
    data = _dataset(out, args.size, args.image_size)
    print(f"dataset {data} in {time.perf_counter() - t0:.1f} s", flush=True)
    preset = PRESETS[args.preset]
    accelerator = {"auto": "auto", "cpu": "cpu", "cuda": "gpu"}[args.device]
    summary = {}
    for kind in [k.strip() for k in args.kinds.split(",") if k.strip()]:
        run = out / f"{args.preset}-{kind}"
        spent, step = 0.0, 0
        print(f"\n== {kind} ({args.preset} preset, {args.image_size} px)", flush=True)
        while spent < args.seconds and step < args.max_steps:
            step = min(step + args.eval_every, args.max_steps)
            cfg = TrainConfig(
                kind=kind, dataset=str(data), out=str(run), image_size=args.image_size,
                max_steps=step, batch_size=args.batch_size or preset["generator_batch"],
                checkpoint_every=args.eval_every, keep_checkpoints=1, seed=0, num_workers=2,
                eval_every=args.eval_every, eval_samples=args.eval_samples,
                accelerator=accelerator, model=_model(kind, preset),
            )  # fmt: skip
            t = time.perf_counter()
            train_generator(cfg, progress=False)
            spent += time.perf_counter() - t
            rows = _rows(run)
            if rows:
                print(f"{spent:7.1f} s  {_fmt(rows[-1])}", flush=True)
        rows = _rows(run)
        summary[kind] = {"seconds": round(spent, 1), "steps": step, "curve": rows}
        (out / "learning_curves.json").write_text(json.dumps(summary, indent=1))
    print(f"\nwritten: {out / 'learning_curves.json'}")


if __name__ == "__main__":
    main()
