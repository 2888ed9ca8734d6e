"""The segmentation benchmark under Lightning DDP: 2 CPU processes (gloo over loopback).

Validation and test scores of the DDP run must be those of one process scoring the same
weights over the same split: every pixel counted exactly once (the evaluation sampler must not
pad an odd-sized split with repeated samples) and the confusion matrices summed over ranks,
never per-rank scores averaged.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from groundsynth.benchmark.metrics import confusion_update, metrics_from_confusion
from groundsynth.classes import CLASS_NAMES, IGNORE_INDEX, NUM_CLASSES
from groundsynth.data.reader import open_dataset
from tests.benchmark.conftest import TINY
from tests.ddp import run_ddp

torch = pytest.importorskip("torch")
pytest.importorskip("lightning")


def _single_process(run_dir, root, split: str) -> tuple[dict, int]:
    """Scores of the run's ``segmenter.pt`` on ``split`` in this process, one sample at a
    time, and the split's labelled pixels counted from the masks themselves."""
    from groundsynth.benchmark.model import load_segmenter
    from groundsynth.data.torch_dataset import SegmentationDataset

    model, _ = load_segmenter(run_dir / "segmenter.pt")
    data = SegmentationDataset(root, split)
    cm = np.zeros((NUM_CLASSES, NUM_CLASSES), dtype=np.int64)
    labelled = 0
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with torch.no_grad():
            for i in range(len(data)):
                item = data[i]
                pred = model(item["image"][None]).argmax(dim=1).numpy()
                cm += confusion_update(pred, item["mask"][None].numpy(), NUM_CLASSES)
                labelled += int((item["mask"].numpy() != IGNORE_INDEX).sum())
    finally:
        torch.set_num_threads(before)
    return metrics_from_confusion(cm, CLASS_NAMES), labelled


def _same(a: float, b: float) -> bool:
    return (math.isnan(a) and math.isnan(b)) or a == b


def test_ddp_scores_pool_pixels_like_one_process(tiny_dataset, tmp_path):
    reader = open_dataset(tiny_dataset)
    n_test, n_val = reader.len("test"), reader.len("val")
    assert n_test % 2 == 1 and n_val % 2 == 1  # 2 ranks: a padding sampler would repeat one
    out = tmp_path / "bench"
    res = run_ddp(
        ["-m", "groundsynth", "benchmark", "segmentation", "--real", str(tiny_dataset),
         "--archs", "unet", "--seeds", "1", "--out", str(out),
         "--encoder", TINY["encoder"], "--encoder-depth", str(TINY["encoder_depth"]),
         "--decoder-width", str(TINY["decoder_width"]), "--batch-size", "4",
         "--eval-batch-size", "1", "--workers", "0", "--max-epochs", "1", "--max-steps", "2",
         "--accelerator", "cpu", "--devices", "2", "--strategy", "ddp", "--no-progress"]
    )  # fmt: skip
    assert "MEMBER: 2/2" in res.stdout + res.stderr  # rank 1 took part
    run_dir = out / "runs" / "unet" / "real" / "seed0"
    metrics = json.loads((run_dir / "metrics.json").read_text())

    # test: the pooled scores are those of one process over the same weights and samples
    scores, labelled = _single_process(run_dir, tiny_dataset, "test")
    ddp = metrics["test"]["real/test"]
    assert ddp["pixels"] == scores["pixels"] == labelled  # each pixel counted once
    assert labelled + 64 * 64 > ddp["pixels"]  # (a repeated 64 px sample would add 4096)
    for name in CLASS_NAMES:
        assert ddp[f"support/{name}"] == scores[f"support/{name}"], name
    assert set(ddp) == set(scores)
    differ = {k: (ddp[k], scores[k]) for k in scores if not _same(ddp[k], scores[k])}
    assert not differ

    # validation: the tested (best) round's scores equal one process's over the val split
    tested = metrics["tested_checkpoint"]
    round_ = next(r for r in metrics["val_history"] if r["step"] == tested["step"])
    val_scores, _ = _single_process(run_dir, tiny_dataset, "val")
    for key in ("accuracy", "f1", "iou", "precision", "recall"):
        assert _same(round_[key], val_scores[key]), key
    assert tested["val_f1"] == round_["f1"]
