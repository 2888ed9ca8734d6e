"""Label fidelity (image <-> map consistency): does a real-trained segmenter agree with a map?

For each sample, the segmenter's prediction on the image is compared with the sample's mask:

- per-sample **mIoU**: the mean IoU over the classes present in the mask *or* the prediction
  (a class absent from both has no IoU and is left out, as in
  :mod:`groundsynth.benchmark.metrics`); 1.0 when prediction and mask are identical;
- per-sample **pixel agreement**: the share of pixels where they agree;
- per-sample, per-class IoU (NaN for classes absent from both).

Over the whole set, one confusion matrix is accumulated (never the predictions) and turned into
pooled scores by :func:`groundsynth.benchmark.metrics.metrics_from_confusion`: pooled per-class
IoU, macro IoU, pixel agreement. Three pure stages, as elsewhere: :func:`sample_confusions`
(update, per sample), :func:`sample_scores` (compute, per sample), :class:`LabelFidelity`
(streaming accumulator of the set).

Masks of ARAS-style datasets are WorldCover labels or pseudo-labels; WorldCover is ~77 %
accurate, so these numbers measure agreement between a segmenter and a map, not truth. The
same scores on real samples give the reference (what agreement a real map reaches).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from groundsynth._optional import lazy_import
from groundsynth.classes import CLASS_NAMES, NUM_CLASSES
from groundsynth.errors import InputError

__all__ = [
    "HISTOGRAM_BINS",
    "THRESHOLDS",
    "LabelFidelity",
    "sample_confusions",
    "sample_scores",
]

#: Bins of the histogram of per-sample mIoU kept by :class:`LabelFidelity` (width 0.01).
HISTOGRAM_BINS = 100
#: mIoU thresholds whose pass rates the summary reports (what a filter would keep).
THRESHOLDS: tuple[float, ...] = (0.3, 0.5, 0.7, 0.9)


def sample_confusions(preds: Any, target: Any, num_classes: int = NUM_CLASSES) -> np.ndarray:
    """Per-sample confusion matrices ``(N, C, C)`` int64 (rows target, columns prediction).

    Args:
        preds: ``(N, C, H, W)`` logits/scores (argmax over classes) or ``(N, H, W)`` class
            indices; a torch tensor (computed on its device) or a numpy array.
        target: ``(N, H, W)`` class indices 0..C-1.

    Raises:
        InputError: shapes disagree or a value is not a class index.
    """
    torch = lazy_import("torch")
    p = preds if isinstance(preds, torch.Tensor) else torch.as_tensor(np.asarray(preds))
    t = target if isinstance(target, torch.Tensor) else torch.as_tensor(np.asarray(target))
    if p.is_floating_point():
        if p.ndim != 4 or p.shape[1] != num_classes:
            raise InputError(
                f"score predictions must be (N, {num_classes}, H, W), got {tuple(p.shape)}"
            )
        p = p.argmax(dim=1)
    t = t.to(p.device)
    if p.shape != t.shape or p.ndim != 3:
        raise InputError(
            f"predictions {tuple(p.shape)} and masks {tuple(t.shape)} must both be (N, H, W)"
        )
    n = p.shape[0]
    p = p.reshape(n, -1).to(torch.int64)
    t = t.reshape(n, -1).to(torch.int64)
    if t.numel():
        for name, x in (("mask", t), ("prediction", p)):
            lo, hi = int(x.min()), int(x.max())
            if lo < 0 or hi >= num_classes:
                raise InputError(
                    f"{name} values must be class indices 0..{num_classes - 1}; "
                    f"found values in {lo}..{hi}"
                )
    offset = torch.arange(n, device=p.device, dtype=torch.int64)[:, None] * num_classes**2
    index = (offset + t * num_classes + p).reshape(-1)
    counts = torch.bincount(index, minlength=n * num_classes**2)
    return counts.reshape(n, num_classes, num_classes).cpu().numpy()


def sample_scores(confusions: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-sample ``(miou (N,), iou (N, C), agreement (N,))`` from ``(N, C, C)`` matrices.

    IoU of a class absent from both mask and prediction is NaN and left out of the mIoU; a
    sample with no pixel has NaN scores.
    """
    cm = np.asarray(confusions, dtype=np.float64)
    if cm.ndim != 3 or cm.shape[1] != cm.shape[2]:
        raise InputError(f"expected (N, C, C) confusion matrices, got shape {cm.shape}")
    tp = np.diagonal(cm, axis1=1, axis2=2)
    union = cm.sum(axis=2) + cm.sum(axis=1) - tp  # tp + fn + fp
    with np.errstate(invalid="ignore", divide="ignore"):
        iou = np.where(union > 0, tp / np.where(union > 0, union, 1.0), np.nan)
        present = union > 0
        counts = present.sum(axis=1)
        miou = np.where(counts > 0, np.nansum(iou, axis=1) / np.maximum(counts, 1), np.nan)
        total = cm.sum(axis=(1, 2))
        agreement = np.where(total > 0, tp.sum(axis=1) / np.where(total > 0, total, 1.0), np.nan)
    return miou, iou, agreement


@dataclass
class LabelFidelity:
    """Streaming label fidelity of one set: pooled confusion matrix, per-sample mIoU stats.

    Holds a ``(C, C)`` matrix, a histogram and a few sums, whatever the number of samples.
    """

    num_classes: int = NUM_CLASSES
    samples: int = 0
    confusion: np.ndarray = field(default_factory=lambda: np.zeros((NUM_CLASSES,) * 2, np.int64))
    histogram: np.ndarray = field(default_factory=lambda: np.zeros(HISTOGRAM_BINS, np.int64))
    miou_sum: float = 0.0
    agreement_sum: float = 0.0
    scored: int = 0

    def update(self, confusions: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Add ``(N, C, C)`` per-sample matrices; return their :func:`sample_scores`."""
        confusions = np.asarray(confusions)
        miou, iou, agreement = sample_scores(confusions)
        self.confusion += confusions.sum(axis=0).astype(np.int64)
        self.samples += len(confusions)
        ok = np.isfinite(miou)
        self.scored += int(ok.sum())
        self.miou_sum += float(miou[ok].sum())
        self.agreement_sum += float(agreement[ok].sum())
        bins = np.minimum((miou[ok] * HISTOGRAM_BINS).astype(np.int64), HISTOGRAM_BINS - 1)
        self.histogram += np.bincount(bins, minlength=HISTOGRAM_BINS)
        return miou, iou, agreement

    def quantile(self, q: float) -> float:
        """Approximate ``q``-quantile of per-sample mIoU (upper edge of its histogram bin)."""
        if not self.scored:
            return float("nan")
        cum = np.cumsum(self.histogram)
        k = int(np.searchsorted(cum, q * self.scored, side="left"))
        return round(min(k + 1, HISTOGRAM_BINS) / HISTOGRAM_BINS, 6)

    def share_at_least(self, threshold: float) -> float:
        """Share of samples whose mIoU is >= ``threshold`` (exact at multiples of 0.01)."""
        if not self.scored:
            return float("nan")
        k = int(round(threshold * HISTOGRAM_BINS))
        return float(self.histogram[k:].sum() / self.scored)

    def summary(self) -> dict[str, Any]:
        """Per-sample statistics and pooled (whole-set) scores, JSON-able."""
        from groundsynth.benchmark.metrics import metrics_from_confusion

        pooled = metrics_from_confusion(self.confusion, CLASS_NAMES)
        mean = self.miou_sum / self.scored if self.scored else float("nan")
        return {
            "samples": self.samples,
            "sample_miou": {
                "mean": round(mean, 6),
                "median_approx": self.quantile(0.5),
                "p10_approx": self.quantile(0.1),
                "p90_approx": self.quantile(0.9),
                "share_at_least": {f"{t:g}": round(self.share_at_least(t), 6) for t in THRESHOLDS},
            },
            "sample_pixel_agreement_mean": round(
                self.agreement_sum / self.scored if self.scored else float("nan"), 6
            ),
            "pooled": {
                "miou": _r(pooled["iou"]),
                "pixel_agreement": _r(pooled["accuracy"]),
                "f1": _r(pooled["f1"]),
                "iou_per_class": {c: _r(pooled[f"iou/{c}"]) for c in CLASS_NAMES},
                "classes_present": pooled["classes_present"],
                "pixels": pooled["pixels"],
            },
            "histogram": {"bins": HISTOGRAM_BINS, "counts": self.histogram.tolist()},
        }


def _r(x: float) -> float | None:
    """Round for JSON; NaN (class never seen) becomes None."""
    return None if x != x else round(float(x), 6)
