"""Colour-mask decoding: groundsynth's table lookup vs the reference scripts' per-class loop.

Prints the median time per 256x256 mask of each method and the speed-up; checks that both
give identical class indices.  Usage: python benchmarks/bench_masks.py [--n 64]
"""

from __future__ import annotations

import argparse

import numpy as np
from _common import median_time

from groundsynth.classes import COLOURS
from groundsynth.data.masks import decode_colour_mask


def per_class_loop(rgb: np.ndarray) -> np.ndarray:
    """The reference scripts' approach: one np.all comparison per class colour."""
    out = np.zeros(rgb.shape[:2], dtype=np.uint8)
    for idx, colour in enumerate(COLOURS):
        out[np.all(rgb == colour, axis=-1)] = idx
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--n", type=int, default=64, help="masks per timed run")
    ap.add_argument("--size", type=int, default=256)
    args = ap.parse_args()
    rng = np.random.default_rng(0)
    # blocky masks like real land cover
    small = rng.integers(0, 7, size=(args.n, args.size // 8, args.size // 8), dtype=np.uint8)
    masks = small.repeat(8, axis=1).repeat(8, axis=2)
    rgbs = [COLOURS[m] for m in masks]
    for rgb, m in zip(rgbs, masks):
        assert np.array_equal(decode_colour_mask(rgb), m)
        assert np.array_equal(per_class_loop(rgb), m)
    decode_colour_mask(rgbs[0])  # build the lookup table once
    t_ref = median_time(lambda: [per_class_loop(r) for r in rgbs]) / args.n
    t_ours = median_time(lambda: [decode_colour_mask(r) for r in rgbs]) / args.n
    print(f"masks: {args.n} x {args.size}x{args.size} RGB colour masks, identical results")
    print(f"per-class np.all loop (reference): {t_ref * 1e3:8.3f} ms/mask")
    print(f"groundsynth lookup table:          {t_ours * 1e3:8.3f} ms/mask")
    print(f"speed-up:                          {t_ref / t_ours:8.1f}x")


if __name__ == "__main__":
    main()
