"""Composition statistics of a set of masks, and how two sets differ, streaming.

:class:`CompositionStats` accumulates, one mask (or one row of class fractions) at a time:
per-class pixel totals, a histogram of each class's per-image fraction, and class
co-occurrence (how often two classes are both present in an image). :func:`compare` turns two
of them (real vs synthetic) into interpretable numbers:

- ``pixel_share``: each class's share of all pixels, per set;
- ``jsd_pixel_share``: Jensen–Shannon divergence (base 2, in [0, 1]) between the two 7-class
  pixel-share distributions — the "overall" divergence;
- ``jsd_per_class``: per class, the JSD between the two histograms of that class's per-image
  fraction — whether images hold the class in similar amounts, not only in total;
- ``cooccurrence``: per set, P(class i and class j both present) over images.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from groundsynth.classes import CLASS_NAMES, NUM_CLASSES
from groundsynth.data.composition import class_counts

__all__ = ["CompositionStats", "compare", "jensen_shannon"]

#: Histogram bins of per-image class fractions: [0, 0.05), ..., [0.95, 1.0].
BINS = 20


def jensen_shannon(p: np.ndarray, q: np.ndarray) -> float:
    """Jensen–Shannon divergence in bits between two (unnormalised) histograms; 0..1."""
    p = np.asarray(p, dtype=np.float64)
    q = np.asarray(q, dtype=np.float64)
    if p.sum() <= 0 or q.sum() <= 0:
        return float("nan")
    p, q = p / p.sum(), q / q.sum()
    m = (p + q) / 2

    def kl(a: np.ndarray) -> float:
        nz = a > 0
        return float(np.sum(a[nz] * np.log2(a[nz] / m[nz])))

    return max(0.0, (kl(p) + kl(q)) / 2)


@dataclass
class CompositionStats:
    """Streaming composition statistics of a set of masks."""

    presence_threshold: float = 0.01
    images: int = 0
    pixels: np.ndarray = field(default_factory=lambda: np.zeros(NUM_CLASSES, np.int64))
    histogram: np.ndarray = field(default_factory=lambda: np.zeros((NUM_CLASSES, BINS), np.int64))
    cooccur: np.ndarray = field(
        default_factory=lambda: np.zeros((NUM_CLASSES, NUM_CLASSES), np.int64)
    )

    def update_mask(self, mask: np.ndarray) -> None:
        """Add one (H, W) index mask."""
        counts = class_counts(mask)
        total = counts.sum()
        if total == 0:
            return
        self.pixels += counts
        self._add_images(counts[None, :] / total)

    def update_fractions(self, fractions: np.ndarray, pixels_per_image: int = 256 * 256) -> None:
        """Add images given only as class fractions ((7,) or (N, 7)), e.g. from a table;
        each counts as ``pixels_per_image`` pixels in the pixel totals."""
        f = np.atleast_2d(np.asarray(fractions, dtype=np.float64))
        if f.shape[1] != NUM_CLASSES:
            raise ValueError(f"expected {NUM_CLASSES} class fractions per image, got {f.shape[1]}")
        self.pixels += np.rint(f * pixels_per_image).astype(np.int64).sum(axis=0)
        self._add_images(f)

    def _add_images(self, f: np.ndarray) -> None:
        bins = np.minimum((f * BINS).astype(np.int64), BINS - 1)
        for k in range(NUM_CLASSES):
            self.histogram[k] += np.bincount(bins[:, k], minlength=BINS)
        present = (f >= self.presence_threshold).astype(np.int64)
        self.cooccur += present.T @ present
        self.images += len(f)

    def pixel_share(self) -> np.ndarray:
        total = self.pixels.sum()
        return self.pixels / total if total else np.zeros(NUM_CLASSES)

    def cooccurrence(self) -> np.ndarray:
        """P(class i and class j present) over images ((7, 7); the diagonal is P(present))."""
        return self.cooccur / self.images if self.images else np.zeros((NUM_CLASSES, NUM_CLASSES))

    def summary(self) -> dict[str, Any]:
        return {
            "images": self.images,
            "pixel_share": dict(
                zip(CLASS_NAMES, self.pixel_share().round(6).tolist(), strict=True)
            ),
            "presence": dict(
                zip(CLASS_NAMES, np.diag(self.cooccurrence()).round(6).tolist(), strict=True)
            ),
        }


def compare(
    a: CompositionStats, b: CompositionStats, names: tuple[str, str] = ("real", "synthetic")
) -> dict[str, Any]:
    """Interpretable differences between two composition statistics (see module doc)."""
    return {
        "pixel_share": {
            names[0]: dict(zip(CLASS_NAMES, a.pixel_share().round(6).tolist(), strict=True)),
            names[1]: dict(zip(CLASS_NAMES, b.pixel_share().round(6).tolist(), strict=True)),
        },
        "jsd_pixel_share": round(jensen_shannon(a.pixels, b.pixels), 6),
        "jsd_per_class": {
            n: round(jensen_shannon(a.histogram[k], b.histogram[k]), 6)
            for k, n in enumerate(CLASS_NAMES)
        },
        "cooccurrence": {
            names[0]: a.cooccurrence().round(4).tolist(),
            names[1]: b.cooccurrence().round(4).tolist(),
            "classes": list(CLASS_NAMES),
        },
        "images": {names[0]: a.images, names[1]: b.images},
    }
