"""The streaming, stateful form of the segmentation metrics: a :class:`torchmetrics.Metric`.

Its only state is the ``(C, C)`` int64 confusion matrix (``dist_reduce_fx="sum"``): memory does
not grow with the split, and under DDP the matrices of all processes are summed before the
scores are computed, so the result equals a single-process run over the same samples. The
scores and their rules (absent classes, ignore index) are those of
:mod:`groundsynth.benchmark.metrics`.

>>> metric = SegmentationMetrics()                                      # doctest: +SKIP
>>> for batch in loader:                                                # doctest: +SKIP
...     metric.update(model(batch["image"]), batch["mask"])
>>> metric.compute()["iou"]                                             # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from groundsynth._optional import lazy_import
from groundsynth.benchmark.metrics import confusion_update, metrics_from_confusion
from groundsynth.classes import IGNORE_INDEX, NUM_CLASSES
from groundsynth.errors import InputError

torch = lazy_import("torch")
torchmetrics = lazy_import("torchmetrics")

__all__ = ["SegmentationMetrics"]


class SegmentationMetrics(torchmetrics.Metric):
    """Streaming segmentation metrics over every ``update`` since the last ``reset``.

    ``update(preds, target)`` takes class indices or ``(N, C, ...)`` scores (argmax) as
    :func:`~groundsynth.benchmark.metrics.confusion_update` does; ``compute()`` returns
    :func:`~groundsynth.benchmark.metrics.metrics_from_confusion`'s dict of Python numbers.
    """

    is_differentiable = False
    higher_is_better = True
    full_state_update = False

    def __init__(
        self,
        num_classes: int = NUM_CLASSES,
        ignore_index: int | None = IGNORE_INDEX,
        class_names: Sequence[str] | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if class_names is not None and len(class_names) != num_classes:
            raise InputError(f"{len(class_names)} class names given for {num_classes} classes")
        self.num_classes = num_classes
        self.ignore_index = ignore_index
        self.class_names = None if class_names is None else tuple(class_names)
        self.confmat: torch.Tensor
        self.add_state(
            "confmat",
            default=torch.zeros(num_classes, num_classes, dtype=torch.int64),
            dist_reduce_fx="sum",
        )

    def update(self, preds: torch.Tensor, target: torch.Tensor) -> None:
        """Add one batch to the confusion matrix."""
        cm = confusion_update(preds, target, self.num_classes, self.ignore_index)
        self.confmat += torch.as_tensor(cm).to(self.confmat.device)

    def compute(self) -> dict[str, float]:
        """Scores over everything seen since the last reset (all processes under DDP)."""
        return metrics_from_confusion(self.confmat, self.class_names)
