"""Streaming segmentation metrics against scikit-learn on seeded random predictions."""

from __future__ import annotations

import re
import sys
import warnings

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


def test_hand_worked_matrix_with_unit_denominators_and_default_names():
    """Rows target, columns prediction; every value below is worked out by hand."""
    cm = np.array([[1, 0, 0, 0], [0, 3, 1, 0], [0, 0, 0, 0], [0, 0, 0, 0]])
    # class 0: tp 1 and nothing else (present on one pixel; every denominator is 1)
    # class 1: tp 3, fn 1 -> precision 1, recall 3/4, f1 6/7, iou 3/4
    # class 2: only predicted once -> precision 0, recall 0, f1 0, iou 0
    # class 3: absent from target and prediction -> nan, not in the macro averages
    out = metrics_from_confusion(cm)
    expected = {
        "accuracy": 4 / 5,
        "precision": (1 + 1 + 0) / 3,
        "recall": (1 + 3 / 4 + 0) / 3,
        "f1": (1 + 6 / 7 + 0) / 3,
        "iou": (1 + 3 / 4 + 0) / 3,
        "precision/0": 1.0,
        "recall/0": 1.0,
        "f1/0": 1.0,
        "iou/0": 1.0,
        "precision/1": 1.0,
        "recall/1": 3 / 4,
        "f1/1": 6 / 7,
        "iou/1": 3 / 4,
        "precision/2": 0.0,
        "recall/2": 0.0,
        "f1/2": 0.0,
        "iou/2": 0.0,
    }
    for key, value in expected.items():
        assert out[key] == pytest.approx(value, abs=1e-12), key
    assert all(np.isnan(out[f"{m}/3"]) for m in ("f1", "iou", "precision", "recall"))
    supports = [out[f"support/{c}"] for c in "0123"]
    assert supports == [1, 4, 0, 0] and all(type(s) is int for s in supports)
    assert out["pixels"] == 5 and out["classes_present"] == 3
    named = metrics_from_confusion(cm, class_names=("a", "b", "c", "d"))
    assert named["recall/b"] == pytest.approx(3 / 4) and named["support/b"] == 4


def test_empty_matrix_warns_nothing():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        out = metrics_from_confusion(np.zeros((3, 3), dtype=np.int64))
    assert np.isnan(out["accuracy"]) and np.isnan(out["iou"]) and out["pixels"] == 0


def test_non_square_matrix_is_refused():
    for shape in ((2, 3), (7,), (7, 7, 1)):
        with pytest.raises(InputError, match="must be square"):
            metrics_from_confusion(np.ones(shape, dtype=np.int64))


def test_tensor_matrix_that_requires_grad():
    cm = np.array([[2.0, 1.0], [0.0, 1.0]])
    out = metrics_from_confusion(torch.tensor(cm, requires_grad=True))
    assert out["accuracy"] == pytest.approx(3 / 4) and out["recall/0"] == pytest.approx(2 / 3)


def test_numpy_scores_are_reduced_by_argmax_over_dimension_1():
    rng = np.random.default_rng(4)
    scores = rng.normal(size=(2, 7, 3, 5))  # (N, C, H, W), argmax over C
    target = rng.integers(0, 7, size=(2, 3, 5))
    pred = scores.argmax(axis=1)
    expected = np.zeros((7, 7), dtype=np.int64)
    np.add.at(expected, (target.ravel(), pred.ravel()), 1)
    assert np.array_equal(confusion_update(scores, target), expected)
    assert np.array_equal(confusion_update(scores.astype(np.float32), target), expected)


@pytest.mark.parametrize("to_torch", [False, True])
def test_score_shape_errors_name_both_shapes(to_torch):
    wrap = torch.from_numpy if to_torch else np.asarray
    target = wrap(np.zeros((2, 3, 5), dtype=np.int64))
    for shape in ((2, 6, 3, 5), (2, 7, 3), (2, 7, 3, 5, 1)):  # wrong C; wrong ndim (C right)
        msg = re.escape(f"score predictions must be (N, 7, ...) for targets (2, 3, 5), got {shape}")
        with pytest.raises(InputError, match=msg):
            confusion_update(wrap(np.zeros(shape, dtype=np.float32)), target)


def test_only_integer_or_boolean_indices():
    ints = np.zeros((1, 2, 2), dtype=np.int64)
    for preds, target in ((ints, ints.astype(np.float64)), (ints.astype(complex), ints)):
        with pytest.raises(InputError, match="must be integers"):
            confusion_update(preds, target)
    pred = np.array([[True, False], [True, True]])
    target = np.array([[True, True], [False, True]])
    cm = confusion_update(pred, target, num_classes=2, ignore_index=None)
    assert cm.tolist() == [[0, 1], [1, 2]]


@pytest.mark.parametrize("to_torch", [False, True])
def test_range_errors_say_which_target_value_is_ignored(to_torch):
    def run(preds, target, ignore_index):
        if to_torch:
            from groundsynth.benchmark.metrics import _confusion_torch

            return _confusion_torch(
                torch.from_numpy(preds), torch.from_numpy(target), 7, ignore_index,
                numpy_on_cpu=False,
            )  # fmt: skip
        return confusion_update(preds, target, 7, ignore_index)

    ok, bad = np.zeros((1, 2, 2), np.int64), np.full((1, 2, 2), 9, np.int64)
    msg = "target values must be class indices 0..6 or 255 (ignored); found values in 9..9"
    with pytest.raises(InputError, match=re.escape(msg)):
        run(ok, bad, IGNORE_INDEX)
    msg = "target values must be class indices 0..6; found values in 9..9"
    with pytest.raises(InputError, match=re.escape(msg)):
        run(ok, bad, None)
    msg = "prediction values must be class indices 0..6; found values in 9..9"
    with pytest.raises(InputError, match=re.escape(msg)):
        run(bad, ok, IGNORE_INDEX)


def test_torch_device_path_with_narrow_dtypes_and_last_class_absent():
    """uint8 indices must not overflow (39 * 40 + 39 > 255); a missing last class keeps C x C."""
    from groundsynth.benchmark.metrics import _confusion_torch

    rng = np.random.default_rng(6)
    target = rng.integers(0, 40, size=(3, 8, 8)).astype(np.uint8)
    pred = rng.integers(0, 40, size=(3, 8, 8)).astype(np.uint8)
    target[0, 0, 0] = pred[0, 0, 0] = 39
    expected = np.zeros((40, 40), dtype=np.int64)
    np.add.at(expected, (target.ravel(), pred.ravel()), 1)
    got = _confusion_torch(
        torch.from_numpy(pred), torch.from_numpy(target), 40, None, numpy_on_cpu=False
    )
    assert np.array_equal(got.numpy(), expected)
    zeros = torch.zeros((1, 2, 2), dtype=torch.int64)
    got = _confusion_torch(zeros, zeros, 7, None, numpy_on_cpu=False)
    assert got.shape == (7, 7) and int(got[0, 0]) == 4 and int(got.sum()) == 4


def test_mixed_torch_and_numpy_inputs_give_a_tensor():
    pred, target = _random_batch(8, n=2)
    expected = confusion_update(pred, target)
    for p, t in ((torch.from_numpy(pred), target), (pred, torch.from_numpy(target))):
        got = confusion_update(p, t)
        assert isinstance(got, torch.Tensor) and np.array_equal(got.numpy(), expected)


def test_numpy_inputs_work_without_torch(monkeypatch):
    monkeypatch.delitem(sys.modules, "torch")
    cm = confusion_update(np.array([[0, 1]]), np.array([[0, 0]]), 2)
    assert isinstance(cm, np.ndarray) and cm.tolist() == [[1, 1], [0, 0]]
    assert metrics_from_confusion(cm)["accuracy"] == 0.5
