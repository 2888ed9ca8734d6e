"""``train-masks``: each real training mask in turn (the reference scripts' choice).

Layout ``i`` is mask ``i mod N`` of the bank (sorted ids), untransformed; masks larger than the
layout size are cut at their centre. Asking for more layouts than masks cycles through them
again (each sample still gets its own noise).
"""

from __future__ import annotations

from groundsynth.errors import InputError
from groundsynth.generate.layouts.base import Layout, LayoutStrategy, Piece

__all__ = ["TrainMasks"]


class TrainMasks(LayoutStrategy):
    """Each source mask in turn; see the module docstring."""

    name = "train-masks"

    def layout(self, index: int) -> Layout:
        source = index % len(self.bank)
        h, w = self.bank.mask(source).shape
        if h < self.size or w < self.size:
            raise InputError(
                f"{self.bank.reader.mask_path(self.bank.split, self.bank.ids[source])}: mask is "
                f"{w}x{h}, smaller than the layout size {self.size}"
            )
        return self.whole(Piece(source, 0, (h - self.size) // 2, (w - self.size) // 2))
