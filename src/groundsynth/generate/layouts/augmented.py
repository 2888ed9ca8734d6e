"""``augmented``: real masks flipped, rotated, and mixed by crop-and-tile.

Layout ``i`` draws from ``(seed, i)``: with probability ``tile_prob`` a ``tiles`` x ``tiles``
mosaic whose tiles are random crops of random source masks, each flipped/rotated at random;
otherwise one random source mask with one of the 8 flips/rotations, cropped at random when
larger than the layout. Every piece is recorded (source id, transform, crop offset).
"""

from __future__ import annotations

import numpy as np

from groundsynth.errors import InputError
from groundsynth.generate.layouts.base import Layout, LayoutStrategy, MaskBank, random_piece
from groundsynth.generate.seeds import numpy_rng

__all__ = ["Augmented"]


class Augmented(LayoutStrategy):
    """Flips, rotations and crop-and-tile mixing of real masks; see the module docstring."""

    name = "augmented"

    def __init__(
        self, bank: MaskBank, size: int, seed: int, tile_prob: float = 0.5, tiles: int = 2
    ) -> None:
        super().__init__(bank, size, seed)
        if not 0 <= tile_prob <= 1:
            raise InputError(f"tile probability must be within 0..1, got {tile_prob}")
        if tiles < 1 or size % tiles:
            raise InputError(f"layout size {size} is not divisible into {tiles}x{tiles} tiles")
        self.tile_prob, self.tiles = tile_prob, tiles

    def sample(self, rng: np.random.Generator, weights: np.ndarray | None = None) -> Layout:
        """One random layout from ``rng``; sources drawn with probabilities ``weights``."""
        n = len(self.bank)
        if self.tiles > 1 and rng.random() < self.tile_prob:
            t = self.size // self.tiles
            sources = rng.choice(n, size=self.tiles**2, p=weights)
            return self.tiled(
                [random_piece(self.bank, int(s), t, rng) for s in sources], self.tiles
            )
        source = int(rng.choice(n, p=weights))
        return self.whole(random_piece(self.bank, source, self.size, rng))

    def layout(self, index: int) -> Layout:
        return self.sample(numpy_rng(self.seed, "layout", index))
