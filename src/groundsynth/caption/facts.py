"""Grounding facts: what a land-cover map says, in a form captioners and prompts can use.

From a mask (class indices 0-6, HxW) :func:`facts_from_mask` derives

- the **composition**: class fractions and ARAS-style integer percentages
  (:mod:`groundsynth.data.composition`);
- a **layout**: the dominant class of each cell of a 3×3 grid (cells named
  :data:`CELL_NAMES`, north up) and, per class, the cells holding at least
  :data:`CELL_SHARE` (25 %) of its pixels, most first (none for an evenly spread class);
- the **shape of water**: ``"line"`` (river, canal) when most water pixels lie in elongated
  components, ``"blob"`` (lake, reservoir) otherwise, ``"none"`` without water. A component's
  elongation is ``D² / A``: its bounding-box diagonal squared over its area; a straight
  line of width w has L/w, a disc 8/π ≈ 2.5, a square 2. Components of elongation
  ≥ :data:`LINE_ELONGATION` (8) are lines; those under :data:`MIN_COMPONENT_PX` pixels are
  ignored as noise;
- the **fragmentation of built-up land**: its number of 8-connected patches (of at least
  :data:`MIN_COMPONENT_PX` pixels) and ``"compact"`` when the largest patch holds at least
  half of the built-up pixels, ``"scattered"`` otherwise.

:func:`facts_from_percentages` builds facts from a class-percentage table row, when no
mask is at hand (no layout, water shape or fragmentation: those fields are None).
"""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy import ndimage

from groundsynth.classes import CLASS_NAMES, NUM_CLASSES, WATER, class_index
from groundsynth.data.composition import check_class_values, integer_percentages
from groundsynth.errors import InputError
from groundsynth.evaluate.caption_consistency import PRESENCE_SHARE

__all__ = [
    "BUILT_UP",
    "CELL_NAMES",
    "CELL_SHARE",
    "LINE_ELONGATION",
    "MIN_COMPONENT_PX",
    "GroundingFacts",
    "facts_from_mask",
    "facts_from_percentages",
]

BUILT_UP: int = CLASS_NAMES.index("Built-up")
#: Names of the 3×3 grid cells, row-major from the top-left (north up).
CELL_NAMES: tuple[str, ...] = (
    "north-west",
    "north",
    "north-east",
    "west",
    "centre",
    "east",
    "south-west",
    "south",
    "south-east",
)
#: A class is placed in a cell that holds at least this share of its pixels.
CELL_SHARE = 0.25
#: Elongation (bounding-box diagonal² / area) from which a water component is a line.
LINE_ELONGATION = 8.0
#: Connected components smaller than this (pixels) are ignored for shape and fragmentation.
MIN_COMPONENT_PX = 4
_EIGHT = np.ones((3, 3), dtype=bool)


@dataclass(frozen=True)
class GroundingFacts:
    """What a land-cover map says about one image (class indices follow ``CLASS_NAMES``)."""

    image_id: str
    fractions: tuple[float, ...]
    percentages: tuple[int, ...]
    layout: tuple[int, ...] | None = None  # dominant class per 3×3 cell (-1: no pixels)
    class_cells: tuple[tuple[int, ...], ...] | None = None  # per class, cells with >= 25 %
    water_shape: str | None = None  # "none" | "line" | "blob"; None when unknown
    water_elongation: float | None = None  # of the largest water component
    builtup_patches: int | None = None
    builtup_pattern: str | None = None  # "none" | "compact" | "scattered"; None when unknown

    def __post_init__(self) -> None:
        if len(self.fractions) != NUM_CLASSES or len(self.percentages) != NUM_CLASSES:
            raise InputError(
                f"{self.image_id or 'facts'}: need {NUM_CLASSES} fractions and percentages, "
                f"got {len(self.fractions)} and {len(self.percentages)}"
            )
        if self.layout is not None and len(self.layout) != len(CELL_NAMES):
            raise InputError(f"{self.image_id or 'facts'}: layout needs {len(CELL_NAMES)} cells")
        if self.class_cells is not None and len(self.class_cells) != NUM_CLASSES:
            raise InputError(f"{self.image_id or 'facts'}: class_cells needs {NUM_CLASSES} entries")

    @property
    def dominant(self) -> int:
        """Index of the class with the largest share (the lower index on ties)."""
        return max(range(NUM_CLASSES), key=lambda i: (self.fractions[i], -i))

    @property
    def has_layout(self) -> bool:
        return self.layout is not None

    def present(self, share: float = PRESENCE_SHARE) -> tuple[int, ...]:
        """Classes with at least ``share`` of the image, largest share first."""
        idx = [i for i in range(NUM_CLASSES) if self.fractions[i] >= share]
        return tuple(sorted(idx, key=lambda i: (-self.fractions[i], i)))

    def to_dict(self) -> dict[str, Any]:
        """A JSON-friendly dict (classes and cells by name)."""

        return {
            "image_id": self.image_id,
            "fractions": dict(zip(CLASS_NAMES, self.fractions, strict=True)),
            "percentages": dict(zip(CLASS_NAMES, self.percentages, strict=True)),
            "dominant": CLASS_NAMES[self.dominant],
            "layout": None
            if self.layout is None
            else {
                cell: CLASS_NAMES[c] if c >= 0 else None
                for cell, c in zip(CELL_NAMES, self.layout, strict=True)
            },
            "class_cells": None
            if self.class_cells is None
            else {
                name: [CELL_NAMES[i] for i in cells]
                for name, cells in zip(CLASS_NAMES, self.class_cells, strict=True)
            },
            "water_shape": self.water_shape,
            "water_elongation": self.water_elongation,
            "builtup_patches": self.builtup_patches,
            "builtup_pattern": self.builtup_pattern,
        }


@functools.lru_cache(maxsize=16)
def _cell_keys(height: int, width: int) -> np.ndarray:
    """Per pixel, ``cell * 256`` (cells of a 3×3 grid, row-major), as int32."""
    rows = (np.arange(height) * 3) // height
    cols = (np.arange(width) * 3) // width
    keys = ((rows[:, None] * 3 + cols[None, :]) * 256).astype(np.int32)
    keys.setflags(write=False)
    return keys


def _components(binary: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Labels and areas (index = label) of the 8-connected components of ``binary``."""
    labels, n = ndimage.label(binary, structure=_EIGHT)
    return labels, np.bincount(labels.ravel(), minlength=n + 1)


def _water_shape(mask: np.ndarray) -> tuple[str, float | None]:
    labels, areas = _components(mask == WATER)
    big = np.flatnonzero(areas[1:] >= MIN_COMPONENT_PX) + 1
    if not len(big):
        return "none", None
    boxes = ndimage.find_objects(labels, max_label=int(big[-1]))
    line = blob = 0
    largest, largest_el = 0, 0.0
    for k in big.tolist():
        box, a = boxes[k - 1], int(areas[k])
        h, w = box[0].stop - box[0].start, box[1].stop - box[1].start
        el = (h * h + w * w) / a
        if el >= LINE_ELONGATION:
            line += a
        else:
            blob += a
        if a > largest:
            largest, largest_el = a, el
    return ("line" if line > blob else "blob"), round(largest_el, 3)


def _builtup(mask: np.ndarray) -> tuple[int, str]:
    _, areas = _components(mask == BUILT_UP)
    big = areas[1:][areas[1:] >= MIN_COMPONENT_PX]
    if not len(big):
        return 0, "none"
    return int(len(big)), "compact" if big.max() * 2 >= big.sum() else "scattered"


def facts_from_mask(
    mask: np.ndarray, image_id: str = "", *, presence: float = PRESENCE_SHARE
) -> GroundingFacts:
    """Grounding facts of an index mask (HxW, class indices 0-6; other values ignored).

    Water shape and built-up fragmentation are analysed only when the class has at least
    ``presence`` of the image (else ``"none"``).
    """
    mask = np.asarray(mask)
    if mask.ndim != 2 or not np.issubdtype(mask.dtype, np.integer):
        raise InputError(
            f"{image_id or 'mask'}: expected a 2-D integer class-index mask, "
            f"got shape {mask.shape} and dtype {mask.dtype}"
        )
    if mask.dtype != np.uint8:
        mask = np.where((mask >= 0) & (mask < NUM_CLASSES), mask, 255).astype(np.uint8)
    keys = _cell_keys(*mask.shape) + mask
    table = np.bincount(keys.ravel(), minlength=9 * 256).reshape(9, 256)[:, :NUM_CLASSES]
    counts = table.sum(axis=0)
    total = int(counts.sum())
    if total == 0:
        raise InputError(f"{image_id or 'mask'}: no pixel holds a class index 0-{NUM_CLASSES - 1}")
    fractions = counts / total
    layout = np.where(table.sum(axis=1) > 0, table.argmax(axis=1), -1)
    share = (table / np.maximum(counts, 1)).T.tolist()  # [class][cell]
    class_cells = tuple(
        tuple(sorted((i for i in range(9) if row[i] >= CELL_SHARE), key=lambda i: -row[i]))
        for row in share
    )
    if fractions[WATER] >= presence:
        water_shape, elongation = _water_shape(mask)
    else:
        water_shape, elongation = "none", None
    if fractions[BUILT_UP] >= presence:
        patches, pattern = _builtup(mask)
    else:
        patches, pattern = 0, "none"
    return GroundingFacts(
        image_id=str(image_id),
        fractions=tuple(float(v) for v in fractions),
        percentages=tuple(int(v) for v in integer_percentages(fractions)),
        layout=tuple(int(v) for v in layout),
        class_cells=class_cells,
        water_shape=water_shape,
        water_elongation=elongation,
        builtup_patches=patches,
        builtup_pattern=pattern,
    )


def facts_from_percentages(
    row: Mapping[str, Any] | Sequence[float] | np.ndarray, image_id: str | None = None
) -> GroundingFacts:
    """Grounding facts from a class-percentage row (no layout, shapes or fragmentation).

    ``row`` is a mapping with the class names as keys (an ARAS table row, a dict, a pandas
    Series; ``filename`` or ``id`` gives the image id when ``image_id`` is None) or a
    sequence of 7 values in class order. Values are percentages (0-100) or, when they sum
    to about 1, fractions.
    """
    if isinstance(row, Mapping) or hasattr(row, "keys"):
        values: dict[int, float] = {}
        for key in row.keys():  # noqa: SIM118 - pandas Series too
            try:
                values[class_index(str(key))] = row[key]
            except ValueError:
                continue
        missing = [CLASS_NAMES[i] for i in range(NUM_CLASSES) if i not in values]
        if missing:
            raise InputError(f"row has no column for {', '.join(missing)}; got {list(row.keys())}")
        raw = [values[i] for i in range(NUM_CLASSES)]
        if image_id is None:
            image_id = str(row.get("filename", row.get("id", "")))
    else:
        raw = list(row)
    vals = check_class_values(raw, image_id or "row")
    total = sum(vals)
    fractions = np.array(vals) / total
    if abs(total - 100.0) < 1e-6 and all(v == int(v) for v in vals):
        pct = tuple(int(v) for v in vals)
    else:
        pct = tuple(int(v) for v in integer_percentages(fractions))
    return GroundingFacts(
        image_id=str(image_id or ""),
        fractions=tuple(float(v) for v in fractions),
        percentages=pct,
    )
