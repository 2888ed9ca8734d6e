"""Streaming segmentation metrics against scikit-learn on seeded random predictions."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.metrics import accuracy_score, f1_score, jaccard_score, precision_score, recall_score

from groundsynth.benchmark.metrics import confusion_update, metrics_from_confusion
from groundsynth.benchmark.streaming import SegmentationMetrics
from groundsynth.classes import CLASS_NAMES, IGNORE_INDEX
from groundsynth.errors import InputError


def _random_batch(
    seed: int, n: int = 6, size: int = 24, absent: tuple[int, ...] = (), ignore: float = 0.1
):
    """Targets and noisy predictions; ``absent`` classes appear in neither; some pixels ignored."""
    rng = np.random.default_rng(seed)
    classes = np.array([c for c in range(7) if c not in absent])
    target = rng.choice(classes, size=(n, size, size)).astype(np.int64)
    pred = np.where(rng.random(target.shape) < 0.6, target, rng.choice(classes, size=target.shape))
    target[rng.random(target.shape) < ignore] = IGNORE_INDEX
    return pred, target


def _sklearn(pred: np.ndarray, target: np.ndarray) -> dict[str, float]:
    keep = target != IGNORE_INDEX
    y, p = target[keep], pred[keep]
    labels = np.union1d(y, p)  # what scikit-learn averages over without `labels`
    out = {"accuracy": accuracy_score(y, p)}
    for name, fn in (
        ("f1", f1_score),
        ("iou", jaccard_score),
        ("precision", precision_score),
        ("recall", recall_score),
    ):
        out[name] = fn(y, p, average="macro", zero_division=0)
        per = fn(y, p, average=None, labels=labels, zero_division=0)
        for label, value in zip(labels, per):
            out[f"{name}/{CLASS_NAMES[label]}"] = value
    return out


def _check_equal(ours: dict[str, float], ref: dict[str, float]) -> None:
    for key, value in ref.items():
        assert ours[key] == pytest.approx(value, abs=1e-12), key


@pytest.mark.parametrize("absent", [(), (1,), (1, 5)])
@pytest.mark.parametrize("seed", [0, 1])
def test_equal_to_sklearn(seed, absent):
    pred, target = _random_batch(seed, absent=absent)
    ours = metrics_from_confusion(confusion_update(pred, target))
    _check_equal(ours, _sklearn(pred, target))
    for c in absent:  # absent from target and prediction: nan, left out of the macro
        assert np.isnan(ours[f"f1/{CLASS_NAMES[c]}"]) and np.isnan(ours[f"iou/{CLASS_NAMES[c]}"])
    assert ours["classes_present"] == 7 - len(absent)
    assert ours["pixels"] == int((target != IGNORE_INDEX).sum())


def test_predicted_but_absent_from_target_and_missed_classes():
    """A class only predicted has recall 0; a class never predicted has precision 0."""
    rng = np.random.default_rng(3)
    target = rng.choice([0, 2, 3], size=(4, 16, 16))
    pred = target.copy()
    pred[:, :4] = 6  # class 6 predicted, never in the target
    pred[target == 3] = 0  # class 3 never predicted
    ours = metrics_from_confusion(confusion_update(pred, target))
    _check_equal(ours, _sklearn(pred, target))
    assert ours["recall/Water"] == 0 and ours["precision/Crop"] == 0
    assert ours["classes_present"] == 4


def test_streaming_in_batches_equals_one_shot():
    pred, target = _random_batch(7, n=12, absent=(4,))
    one_shot = metrics_from_confusion(confusion_update(pred, target))
    metric = SegmentationMetrics()
    for i in range(0, 12, 5):
        metric.update(torch.from_numpy(pred[i : i + 5]), torch.from_numpy(target[i : i + 5]))
    streamed = metric.compute()
    assert metric.confmat.dtype == torch.int64 and metric.confmat.shape == (7, 7)
    for key, value in one_shot.items():
        if isinstance(value, float) and np.isnan(value):
            assert np.isnan(streamed[key]), key
        else:
            assert streamed[key] == value, key
    metric.reset()
    assert int(metric.confmat.sum()) == 0


def test_logits_are_reduced_by_argmax():
    pred, target = _random_batch(2, n=3)
    logits = torch.nn.functional.one_hot(torch.from_numpy(pred), 7).permute(0, 3, 1, 2).float()
    from_logits = confusion_update(logits, torch.from_numpy(target))
    assert isinstance(from_logits, torch.Tensor) and from_logits.dtype == torch.int64
    from_numpy = confusion_update(pred, target)  # numpy in, numpy out (torch not needed)
    assert isinstance(from_numpy, np.ndarray) and from_numpy.dtype == np.int64
    assert np.array_equal(from_logits.numpy(), from_numpy)
    assert np.array_equal(
        confusion_update(pred.astype(np.uint8), target.astype(np.uint8)), from_numpy
    )


@pytest.mark.parametrize("absent", [(), (2,)])
def test_torch_device_path_equals_numpy_path(absent):
    """The on-device (CUDA) torch arithmetic, run here on CPU tensors."""
    from groundsynth.benchmark.metrics import _confusion_torch

    pred, target = _random_batch(5, absent=absent)
    on_device = _confusion_torch(
        torch.from_numpy(pred), torch.from_numpy(target), 7, IGNORE_INDEX, numpy_on_cpu=False
    )
    assert np.array_equal(on_device.numpy(), confusion_update(pred, target))
    with pytest.raises(InputError, match="prediction values"):
        _confusion_torch(
            torch.full((1, 2, 2), 7), torch.zeros(1, 2, 2), 7, None, numpy_on_cpu=False
        )


def test_bad_inputs_name_the_problem():
    with pytest.raises(InputError, match="differ in shape"):
        confusion_update(np.zeros((2, 4, 4), int), np.zeros((2, 4, 5), int))
    with pytest.raises(InputError, match="target values"):
        confusion_update(np.zeros((1, 2, 2), int), np.full((1, 2, 2), 9))
    with pytest.raises(InputError, match="prediction values"):
        confusion_update(np.full((1, 2, 2), 7), np.zeros((1, 2, 2), int))


def test_empty_matrix_gives_nan_not_an_error():
    out = metrics_from_confusion(np.zeros((7, 7), dtype=np.int64))
    assert np.isnan(out["f1"]) and np.isnan(out["accuracy"]) and out["classes_present"] == 0
