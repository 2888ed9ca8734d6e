"""Random composed land-cover masks for caption tests: blobby class regions from a coarse
random grid, with a river, a lake or scattered houses now and then (deterministic)."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

WATER, BUILT_UP = 6, 4


def random_masks(n: int, size: int = 48, seed: int = 0) -> Iterator[np.ndarray]:
    """``n`` uint8 masks of ``size``²; like ARAS, none is more than 90 % water."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size]
    made = 0
    while made < n:
        k = int(rng.integers(1, 6))
        classes = rng.choice(7, size=k, replace=False)
        grid = int(rng.choice([2, 3, 4, 6, 8]))
        low = rng.choice(classes, size=(grid, grid), p=rng.dirichlet(np.full(k, 0.7)))
        rep = -(-size // grid)
        m = np.repeat(np.repeat(low, rep, 0), rep, 1)[:size, :size].astype(np.uint8)
        r = rng.random()
        if r < 0.25:  # a meandering river, horizontal or vertical
            width = rng.integers(1, max(2, size // 16))
            centre = rng.integers(size // 4, 3 * size // 4) + rng.uniform(0, size / 8) * np.sin(
                2 * np.pi * rng.uniform(0.5, 3) * xx / size
            )
            line = np.abs(yy - centre) < width
            m[line if rng.random() < 0.5 else line.T] = WATER
        elif r < 0.4:  # a lake
            cy, cx = rng.integers(0, size, 2)
            m[(yy - cy) ** 2 + (xx - cx) ** 2 < rng.uniform(size / 16, size / 4) ** 2] = WATER
        if rng.random() < 0.3:  # scattered houses
            for _ in range(rng.integers(1, 12)):
                y, x = rng.integers(0, size - 3, 2)
                m[y : y + rng.integers(1, 4), x : x + rng.integers(1, 4)] = BUILT_UP
        if (m == WATER).mean() > 0.9:
            continue
        made += 1
        yield m
