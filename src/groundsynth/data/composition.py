"""Composition of a mask: class fractions and ARAS-style integer percentages."""

from __future__ import annotations

import math
from collections.abc import Iterable

import numpy as np

from groundsynth.classes import CLASS_NAMES, NUM_CLASSES
from groundsynth.errors import InputError

__all__ = ["check_class_values", "class_counts", "class_fractions", "integer_percentages"]


def class_counts(mask: np.ndarray) -> np.ndarray:
    """Pixel count per class (length NUM_CLASSES); values >= NUM_CLASSES are not counted."""
    counts = np.bincount(np.asarray(mask, dtype=np.uint8).ravel(), minlength=256)
    return counts[:NUM_CLASSES].astype(np.int64)


def class_fractions(mask: np.ndarray) -> np.ndarray:
    """Fraction of the mask's class pixels in each class (float64, sums to 1, or all 0)."""
    counts = class_counts(mask)
    total = counts.sum()
    return counts / total if total else np.zeros(NUM_CLASSES, dtype=np.float64)


def integer_percentages(fractions: np.ndarray) -> np.ndarray:
    """Integer percentages that sum to exactly 100, by largest-remainder rounding.

    Works on one composition (shape (C,)) or a batch (shape (N, C)). Each class gets the floor
    of its percentage; the points left over go to the largest remainders, ties to the lower
    class index, so the result is deterministic. All-zero rows stay all zero.
    """
    f = np.asarray(fractions, dtype=np.float64)
    single = f.ndim == 1
    f = np.atleast_2d(f)
    total = f.sum(axis=1, keepdims=True)
    safe = np.where(total > 0, total, 1.0)
    pct = f / safe * 100.0
    floor = np.floor(pct + 1e-9)
    rem = pct - floor
    missing = (100 - floor.sum(axis=1)).astype(np.int64)
    missing[total[:, 0] <= 0] = 0
    # Rank remainders: largest first, ties to the lower index (stable sort on -rem).
    order = np.argsort(-rem, axis=1, kind="stable")
    ranks = np.empty_like(order)
    np.put_along_axis(ranks, order, np.arange(f.shape[1])[None, :].repeat(len(f), 0), axis=1)
    out = (floor + (ranks < missing[:, None])).astype(np.int64)
    return out[0] if single else out


def check_class_values(values: Iterable[object], what: str = "composition") -> list[float]:
    """Seven finite, non-negative class values (fractions or percentages) with a positive sum,
    as plain floats (not normalised); :class:`InputError` naming ``what`` otherwise."""
    raw = list(values)
    try:
        vals = [float(v) for v in raw]  # type: ignore[arg-type]
    except (TypeError, ValueError):
        vals = []
    if len(vals) != NUM_CLASSES or any(not math.isfinite(v) or v < 0 for v in vals):
        raise InputError(
            f"{what}: expected {NUM_CLASSES} non-negative class values "
            f"({', '.join(CLASS_NAMES)}), got {raw!r}"
        )
    total = sum(vals)
    if total <= 0:
        raise InputError(f"{what}: class values sum to {total}; a composition needs some pixels")
    return vals
