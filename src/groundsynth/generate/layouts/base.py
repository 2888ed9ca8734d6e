"""What every layout strategy shares: the layout record, the bank of source masks, transforms.

A *layout* is the land-cover map a conditional generator paints: an (S, S) class-index mask
plus its provenance -- the strategy that made it, the source masks it came from
(``<split>/<id>``) and the transform applied (flip/rotation, crop offsets, tiling), in words
that reproduce it. Strategies are deterministic: layout ``i`` depends only on ``(seed, i)``.

Transforms are named ``identity``, ``rot90``, ``rot180``, ``rot270``, ``hflip``,
``hflip+rot90``, ``hflip+rot180``, ``hflip+rot270`` (flip first, then rotate
counter-clockwise), applied to the whole source mask before the crop ``crop y,x`` is taken.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from dataclasses import dataclass

import numpy as np

from groundsynth.classes import CLASS_NAMES, NUM_CLASSES
from groundsynth.data.composition import class_fractions
from groundsynth.data.reader import DatasetReader
from groundsynth.errors import InputError
from groundsynth.generate.data import dihedral

__all__ = [
    "DIHEDRAL_NAMES",
    "Layout",
    "LayoutStrategy",
    "MaskBank",
    "Piece",
    "cut",
    "random_piece",
]

log = logging.getLogger(__name__)

DIHEDRAL_NAMES = (
    "identity",
    "rot90",
    "rot180",
    "rot270",
    "hflip",
    "hflip+rot90",
    "hflip+rot180",
    "hflip+rot270",
)


@dataclass(frozen=True)
class Layout:
    """A map to generate from, with where it came from.

    Attributes:
        mask: (S, S) uint8 class indices.
        strategy: name of the strategy that made it.
        sources: source masks used, ``<split>/<id>``, one per piece (in tile order).
        transform: the transform in words (see the module docstring).
        satisfied: for composition targets, whether the constraints hold (``None`` otherwise).
    """

    mask: np.ndarray
    strategy: str
    sources: tuple[str, ...]
    transform: str
    satisfied: bool | None = None


@dataclass(frozen=True)
class Piece:
    """One source mask, transformed (dihedral ``code``) and cropped at ``(y, x)``."""

    source: int
    code: int
    y: int
    x: int

    def describe(self, cropped: bool) -> str:
        name = DIHEDRAL_NAMES[self.code]
        return f"{name} crop {self.y},{self.x}" if cropped else name


class MaskBank:
    """The source masks of one split of a dataset, read lazily (a small cache of decoded
    masks), with their class fractions (from metadata.parquet when it has them, else computed
    once by reading every mask, streaming)."""

    def __init__(self, reader: DatasetReader, split: str = "train", cache: int = 512) -> None:
        self.reader = reader
        self.split = split
        self.ids = reader.ids(split)
        if not self.ids:
            raise InputError(
                f"{reader.root}: split {split!r} has no masks to draw layouts from; "
                f"splits: {reader.splits()}"
            )
        self._cache: OrderedDict[int, np.ndarray] = OrderedDict()
        self._cache_size = cache
        self._fractions: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.ids)

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        state["_cache"] = OrderedDict()  # do not ship decoded masks to worker processes
        return state

    def name(self, index: int) -> str:
        """``<split>/<id>`` of mask ``index``."""
        return f"{self.split}/{self.ids[index]}"

    def mask(self, index: int) -> np.ndarray:
        """Mask ``index`` as (H, W) class indices (cached)."""
        hit = self._cache.get(index)
        if hit is not None:
            self._cache.move_to_end(index)
            return hit
        mask = self.reader.read_mask(self.split, self.ids[index])
        mask.setflags(write=False)
        self._cache[index] = mask
        if len(self._cache) > self._cache_size:
            self._cache.popitem(last=False)
        return mask

    @property
    def fractions(self) -> np.ndarray:
        """(N, NUM_CLASSES) class fractions of every mask."""
        if self._fractions is None:
            self._fractions = self._load_fractions()
        return self._fractions

    def _load_fractions(self) -> np.ndarray:
        cols = [f"frac_{n}" for n in CLASS_NAMES]
        if set(cols) <= set(self.reader.metadata_columns()):
            df = self.reader.metadata(self.split, columns=["id", *cols])
            if df is not None:
                table = df.set_index(df["id"].astype(str))[cols]
                values = table.reindex(self.ids).to_numpy(dtype=np.float64)
                if not np.isnan(values).any():
                    return values
        log.info("computing class fractions of %d masks of %s", len(self.ids), self.reader.root)
        out = np.empty((len(self.ids), NUM_CLASSES))
        for i, sid in enumerate(self.ids):
            out[i] = class_fractions(self.reader.read_mask(self.split, sid))
        return out


def cut(bank: MaskBank, piece: Piece, size: int) -> np.ndarray:
    """The ``size`` x ``size`` window of a transformed source mask described by ``piece``."""
    mask = dihedral(bank.mask(piece.source), piece.code)
    return np.ascontiguousarray(mask[piece.y : piece.y + size, piece.x : piece.x + size])


def random_piece(
    bank: MaskBank, source: int, size: int, rng: np.random.Generator, transform: bool = True
) -> Piece:
    """A random transform and crop position of ``source`` for a ``size`` window."""
    h, w = bank.mask(source).shape
    code = int(rng.integers(8)) if transform else 0
    hh, ww = (w, h) if code % 2 else (h, w)  # odd rotations swap the axes
    if hh < size or ww < size:
        raise InputError(
            f"{bank.reader.mask_path(bank.split, bank.ids[source])}: mask is {w}x{h}, smaller "
            f"than the layout size {size}; generate at a smaller size"
        )
    return Piece(source, code, int(rng.integers(hh - size + 1)), int(rng.integers(ww - size + 1)))


class LayoutStrategy:
    """Base of the strategies: ``layout(index)`` -> :class:`Layout`, deterministic by seed."""

    name = ""

    def __init__(self, bank: MaskBank, size: int, seed: int) -> None:
        self.bank, self.size, self.seed = bank, size, seed
        h, w = bank.mask(0).shape
        if h < size or w < size:
            raise InputError(
                f"{bank.reader.mask_path(bank.split, bank.ids[0])}: mask is {w}x{h}, smaller than "
                f"the layout size {size}; generate at a smaller size or use larger masks"
            )

    def layout(self, index: int) -> Layout:
        raise NotImplementedError

    def whole(self, piece: Piece, satisfied: bool | None = None) -> Layout:
        """The layout of one transformed, cropped source mask."""
        mask = cut(self.bank, piece, self.size)
        cropped = self.bank.mask(piece.source).shape != (self.size, self.size)
        return Layout(
            mask, self.name, (self.bank.name(piece.source),), piece.describe(cropped), satisfied
        )

    def tiled(self, pieces: list[Piece], tiles: int, satisfied: bool | None = None) -> Layout:
        """The layout of ``tiles`` x ``tiles`` pieces, row by row."""
        t = self.size // tiles
        rows = [
            np.concatenate([cut(self.bank, p, t) for p in pieces[r * tiles : (r + 1) * tiles]], 1)
            for r in range(tiles)
        ]
        desc = f"tile {tiles}x{tiles}: " + " | ".join(p.describe(True) for p in pieces)
        return Layout(
            np.concatenate(rows, 0),
            self.name,
            tuple(self.bank.name(p.source) for p in pieces),
            desc,
            satisfied,
        )
