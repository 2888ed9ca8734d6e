"""Segmentation metrics from a confusion matrix accumulated over a whole split.

Three stages, as torchmetrics splits its metrics:

* :func:`confusion_update` -- one batch of predictions and targets -> a ``(C, C)`` int64
  confusion matrix (rows: target class, columns: predicted class). Sum these over batches;
  nothing else is kept, so memory does not grow with the split.
* :func:`metrics_from_confusion` -- the summed matrix -> a flat dict of scores.
* :class:`~groundsynth.benchmark.streaming.SegmentationMetrics` -- a
  :class:`torchmetrics.Metric` holding the ``(C, C)`` sum as its state
  (``dist_reduce_fx="sum"``), so it is exact under DDP.

The pure stages take numpy arrays or torch tensors; with numpy inputs they need (and import)
neither torch nor torchmetrics.

Scores are pooled over every pixel of the split (not averaged per image). Keys of the dict:

* ``accuracy`` -- overall pixel accuracy, ``trace / total``;
* ``f1``, ``iou``, ``precision``, ``recall`` -- macro averages over the *present* classes;
* ``f1/<class>``, ``iou/<class>``, ``precision/<class>``, ``recall/<class>`` -- per class;
* ``support/<class>`` -- target pixels of the class; ``pixels`` -- pixels counted;
  ``classes_present`` -- number of classes in the macro average.

**Absent classes.** A class is *present* when it occurs in the target or in the prediction
(``tp + fp + fn > 0``). A class absent from both has no defined score: its per-class values
are ``nan`` and it is left out of the macro averages (scikit-learn does the same when it is
not given ``labels``: it averages over the union of labels seen). Within present classes an
undefined ratio counts as 0 (a class predicted but never in the target has recall 0; one in
the target but never predicted has precision 0), as scikit-learn's ``zero_division=0``.
Pixels whose target is ``ignore_index`` are not counted at all.

>>> cm = confusion_update(np.array([[0, 1], [1, 1]]), np.array([[0, 1], [0, 1]]), 3)
>>> cm.tolist()
[[1, 1, 0], [0, 2, 0], [0, 0, 0]]
>>> round(metrics_from_confusion(cm)["f1"], 4), metrics_from_confusion(cm)["classes_present"]
(0.7333, 2)
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import Any

import numpy as np

from groundsynth.classes import CLASS_NAMES, IGNORE_INDEX, NUM_CLASSES
from groundsynth.errors import InputError

__all__ = [
    "MACRO_METRICS",
    "PER_CLASS_METRICS",
    "confusion_update",
    "metrics_from_confusion",
]

#: Macro-averaged scores, in report order (plus ``accuracy``).
MACRO_METRICS: tuple[str, ...] = ("f1", "iou", "precision", "recall")
#: Per-class scores (``<name>/<class>`` keys).
PER_CLASS_METRICS: tuple[str, ...] = (*MACRO_METRICS, "support")


def _torch_tensor_type() -> type | None:
    """``torch.Tensor`` if torch is already imported, else None (never imports torch)."""
    torch = sys.modules.get("torch")
    return getattr(torch, "Tensor", None)


def _check_range(values: Any, name: str, num_classes: int, ignore_index: int | None) -> None:
    lo, hi = int(values.min()), int(values.max())
    if lo < 0 or hi >= num_classes:
        ignored = (
            f" or {ignore_index} (ignored)" if name == "target" and ignore_index is not None else ""
        )
        raise InputError(
            f"{name} values must be class indices 0..{num_classes - 1}{ignored}; "
            f"found values in {lo}..{hi}"
        )


def _shapes(preds: Any, target: Any) -> None:
    if preds.shape != target.shape:
        raise InputError(
            f"predictions {tuple(preds.shape)} and targets {tuple(target.shape)} differ in shape"
        )


def _score_shape_error(preds: Any, target: Any, num_classes: int) -> InputError:
    return InputError(
        f"score predictions must be (N, {num_classes}, ...) for targets "
        f"{tuple(target.shape)}, got {tuple(preds.shape)}"
    )


def _confusion_torch(
    preds: Any,
    target: Any,
    num_classes: int,
    ignore_index: int | None,
    *,
    numpy_on_cpu: bool = True,  # pragma: no mutate (both paths count alike; numpy is faster)
) -> Any:
    """Torch form of :func:`confusion_update` (stays on the tensors' device, e.g. CUDA)."""
    torch = sys.modules["torch"]
    preds = torch.as_tensor(preds)
    target = torch.as_tensor(target, device=preds.device)
    if preds.is_floating_point():
        if preds.ndim != target.ndim + 1 or preds.shape[1] != num_classes:
            raise _score_shape_error(preds, target, num_classes)
        preds = preds.argmax(dim=1)
    if numpy_on_cpu and preds.device.type == "cpu":  # pragma: no mutate (numpy: same, faster)
        cm = _confusion_numpy(
            preds.detach().numpy(), target.detach().numpy(), num_classes, ignore_index
        )
        return torch.from_numpy(cm)
    _shapes(preds, target)
    preds = preds.reshape(-1).to(torch.int64)  # pragma: no mutate (int64 target promotes it)
    target = target.reshape(-1).to(torch.int64)
    if ignore_index is not None:
        keep = target != ignore_index
        if not bool(keep.all()):  # pragma: no mutate (an all-True mask changes nothing)
            preds, target = preds[keep], target[keep]
    if target.numel():
        _check_range(target, "target", num_classes, ignore_index)
        _check_range(preds, "prediction", num_classes, None)  # out-of-range is never ignored
    counts = torch.bincount(target * num_classes + preds, minlength=num_classes * num_classes)
    return counts.reshape(num_classes, num_classes)


def _confusion_numpy(
    preds: Any, target: Any, num_classes: int, ignore_index: int | None
) -> np.ndarray:
    preds = np.asarray(preds)
    target = np.asarray(target)
    if preds.dtype.kind == "f":
        if preds.ndim != target.ndim + 1 or preds.shape[1] != num_classes:
            raise _score_shape_error(preds, target, num_classes)
        preds = preds.argmax(axis=1)
    if preds.dtype.kind not in ("i", "u", "b") or target.dtype.kind not in ("i", "u", "b"):
        raise InputError(
            f"class indices must be integers, got {preds.dtype} predictions, {target.dtype} targets"
        )
    _shapes(preds, target)
    preds = preds.reshape(-1)  # pragma: no mutate (numpy reads any negative size as -1)
    target = target.reshape(-1)  # pragma: no mutate (numpy reads any negative size as -1)
    if ignore_index is not None:
        keep = target != ignore_index
        if not keep.all():
            preds, target = preds[keep], target[keep]
    if target.size:
        _check_range(target, "target", num_classes, ignore_index)
        _check_range(preds, "prediction", num_classes, None)  # out-of-range is never ignored
    index = target.astype(np.int64)
    index *= num_classes
    index += preds
    counts = np.bincount(index, minlength=num_classes * num_classes)
    counts = counts.astype(np.int64, copy=False)  # pragma: no mutate (copy only costs time)
    return counts.reshape(num_classes, num_classes)


def confusion_update(
    preds: Any,
    target: Any,
    num_classes: int = NUM_CLASSES,
    ignore_index: int | None = IGNORE_INDEX,
) -> Any:
    """Confusion matrix of one batch: ``(C, C)`` int64, rows target, columns prediction.

    A torch tensor when either input is one (on its device), else a numpy array; torch is not
    needed (nor imported) for numpy inputs.

    Args:
        preds: class indices shaped like ``target`` (e.g. ``(N, H, W)``), or scores / logits
            ``(N, C, H, W)`` reduced by argmax over dimension 1.
        target: class indices, ``0..C-1`` or ``ignore_index``.
        num_classes: ``C``.
        ignore_index: target value of pixels not counted (``None``: every pixel counts).

    Raises:
        InputError: shapes disagree, or a value lies outside ``0..C-1`` (and is not
            ``ignore_index`` in the target).
    """
    tensor = _torch_tensor_type()
    if tensor is not None and (isinstance(preds, tensor) or isinstance(target, tensor)):
        return _confusion_torch(preds, target, num_classes, ignore_index)
    return _confusion_numpy(preds, target, num_classes, ignore_index)


def _ratio(num: np.ndarray, den: np.ndarray, present: np.ndarray) -> np.ndarray:
    """``num / den`` with 0 where ``den`` is 0, and nan for classes not present."""
    out = np.divide(num, den, out=np.zeros_like(num), where=den > 0)
    out[~present] = np.nan  # pragma: no mutate (None also becomes nan in a float array)
    return out


def metrics_from_confusion(cm: Any, class_names: Sequence[str] | None = None) -> dict[str, float]:
    """Scores of a summed confusion matrix (see the module docstring for keys and rules).

    Args:
        cm: ``(C, C)`` counts, rows target, columns prediction (tensor or array).
        class_names: names of the ``C`` classes, used in the per-class keys (default: the
            schema's names when ``C`` is 7, else ``"0"``, ``"1"``, ...).
    """
    tensor = _torch_tensor_type()
    if tensor is not None and isinstance(cm, tensor):
        cm = cm.detach().cpu().numpy()
    cm = np.asarray(cm, dtype=np.float64)
    if cm.ndim != 2 or cm.shape[0] != cm.shape[1]:
        raise InputError(f"confusion matrix must be square (C, C), got shape {cm.shape}")
    if class_names is None:
        n = cm.shape[0]  # pragma: no mutate (square: shape[0] == shape[1])
        class_names = CLASS_NAMES if n == NUM_CLASSES else tuple(str(i) for i in range(n))
    if len(class_names) != cm.shape[0]:  # pragma: no mutate (square: shape[0] == shape[1])
        raise InputError(f"{len(class_names)} class names given for a {cm.shape} matrix")
    tp = np.diag(cm).copy()
    support = cm.sum(axis=1)  # target pixels per class
    predicted = cm.sum(axis=0)
    fp = predicted - tp
    fn = support - tp
    present = (tp + fp + fn) > 0
    scores = {
        "f1": _ratio(2 * tp, 2 * tp + fp + fn, present),
        "iou": _ratio(tp, tp + fp + fn, present),
        "precision": _ratio(tp, predicted, present),
        "recall": _ratio(tp, support, present),
    }
    total = cm.sum()
    out: dict[str, float] = {"accuracy": float(tp.sum() / total) if total else np.nan}
    for name in MACRO_METRICS:
        out[name] = float(scores[name][present].mean()) if present.any() else np.nan
    for name in MACRO_METRICS:
        for cls, value in zip(class_names, scores[name]):
            out[f"{name}/{cls}"] = float(value)
    for cls, value in zip(class_names, support):
        out[f"support/{cls}"] = int(value)
    out["pixels"] = int(total)
    out["classes_present"] = int(present.sum())
    return out
