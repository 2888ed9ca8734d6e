"""Learning checks: every architecture can overfit one batch with the benchmark's loss and
optimiser (a broken gradient path, head or loss shows up here, not after a day of training),
and every benchmark run is scored against the pixel floor of its own training samples."""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from groundsynth.benchmark.data import parse_regime, resolve_regime
from groundsynth.benchmark.learning import FIT, in_domain, learning_block
from groundsynth.benchmark.lightning_module import OptimConfig, SegmentationModule
from groundsynth.benchmark.metrics import metrics_from_confusion
from groundsynth.benchmark.model import build_model, list_architectures
from groundsynth.benchmark.segmentation import BenchmarkConfig, run_segmentation_benchmark
from groundsynth.classes import CLASS_NAMES
from groundsynth.data.reader import open_dataset
from groundsynth.errors import InputError
from groundsynth.evaluate.pixel_floor import PixelFloor, fit_floor, sample_pixels, score_floor
from tests.benchmark.conftest import TINY
from tests.generate.datasets import blocky_masks, colour_image

#: Steps on the one batch. Measured on one CPU thread (32 px, decoder width 8, lr 1e-2): the
#: Dice loss first falls 90 % after 7-33 steps (segformer fastest, unet slowest); 60 leaves room.
STEPS = 60
#: Decoder width 8, not TINY's 4: at width 4 Unet and Unet++ end their decoder in 4 channels and
#: stall (Dice loss -54 % / -63 % after 200 steps at lr 1e-3, Unet++ -61 % after 100 at 1e-2).
WIDTH = 8


def _batch(n: int = 4, size: int = 32) -> tuple[torch.Tensor, torch.Tensor]:
    """``n`` blocky 4x4-class masks and their class colours under heavy noise (sigma 24)."""
    masks = blocky_masks(n, size, seed=0, grid=4)
    images = np.stack([colour_image(m, seed=i, noise=24.0) for i, m in enumerate(masks)])
    x = torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255.0
    return x, torch.from_numpy(np.stack(masks)).long()


@pytest.mark.parametrize("arch", list_architectures())
def test_each_architecture_overfits_one_batch(arch):
    torch.manual_seed(0)
    images, masks = _batch()
    model = build_model(arch, **{**TINY, "decoder_width": WIDTH})
    # the benchmark's own loss (Dice) and optimiser (AdamW); no augmentation on one batch
    module = SegmentationModule(model, OptimConfig(lr=1e-2, augment="none"))
    optimiser = module.configure_optimizers()["optimizer"]
    model.train()
    losses = []
    for _ in range(STEPS):
        optimiser.zero_grad()
        loss = module.loss_fn(model(images), masks)
        loss.backward()
        optimiser.step()
        losses.append(loss.item())
    drop = 1 - losses[-1] / losses[0]
    assert drop >= 0.9, f"{arch}: loss {losses[0]:.3f} -> {losses[-1]:.3f} ({drop:.0%})"
    model.eval()  # as the benchmark predicts: batch norm on its running statistics
    with torch.no_grad():
        accuracy = (model(images).argmax(dim=1) == masks).float().mean().item()
    assert accuracy > 0.9, f"{arch}: pixel accuracy {accuracy:.3f} on its own training batch"


# --------------------------------------------------------------------------- the floor check
def test_learning_block_rule():
    floor = {"synthetic/val": {"iou": 0.9, "f1": 0.9}, "real/test": {"iou": 0.40, "f1": 0.5}}
    model = {"synthetic/val": {"iou": 0.1, "f1": 0.1}, "real/test": {"iou": 0.45, "f1": 0.6}}
    block = learning_block(floor, model, "floors/real.json")
    # decided on the first real test set, not the first test set
    assert block["test_set"] == "real/test" and block["passed"] is True
    assert block["margin"] == pytest.approx(0.05)
    assert block["floor"]["synthetic/val"] == {"iou": 0.9, "f1": 0.9}
    tie = learning_block(floor, {**model, "real/test": {"iou": 0.40, "f1": 0.5}}, "f")
    assert tie["passed"] is False and tie["margin"] == 0.0  # equal is not beating it
    undefined = learning_block(floor, {**model, "real/test": {"iou": math.nan, "f1": 0}}, "f")
    assert undefined["passed"] is False and undefined["margin"] is None
    assert in_domain(["synthetic/target", "synthetic/val"]) == "synthetic/target"


_REGIMES = ("real", "real:8,synthetic:0.5")


@pytest.fixture(scope="module")
def bench(sample_world_dataset, tmp_path_factory):
    """Two archs x two regimes, one step each (so no run can beat its floor); the log."""
    records: list[logging.LogRecord] = []
    handler = logging.Handler(logging.INFO)
    handler.emit = records.append  # type: ignore[method-assign]
    logger = logging.getLogger("groundsynth")
    level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    cfg = BenchmarkConfig(
        out=str(tmp_path_factory.mktemp("learning") / "b"), real=str(sample_world_dataset),
        synthetic=str(sample_world_dataset), train=_REGIMES, test="synthetic/val,real",
        archs=("unet", "fpn"), seeds=(0,), batch_size=4, workers=0, max_steps=1,
        accelerator="cpu", progress=False, **TINY,
    )  # fmt: skip
    try:
        result = run_segmentation_benchmark(cfg)
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)
    return cfg, result, records


def _metrics(cfg, arch: str, regime: str) -> dict:
    run = Path(cfg.out) / "runs" / arch / parse_regime(regime).slug / "seed0"
    return json.loads((run / "metrics.json").read_text())


def test_learning_block_equals_an_independent_floor(bench, sample_world_dataset):
    cfg, _, _ = bench
    metrics = _metrics(cfg, "unet", "real")
    block = metrics["learning"]
    # the "real" regime trains on the whole real train split: fit_floor on it, same sampling
    floor = fit_floor(sample_world_dataset, "train", **FIT)
    for test_set, split in (("real/test", "test"), ("synthetic/val", "val")):
        ref = score_floor(floor, sample_world_dataset, split)
        assert block["floor"][test_set] == pytest.approx({"iou": ref["iou"], "f1": ref["f1"]})
        assert block["model"][test_set]["iou"] == metrics["test"][test_set]["iou"]
    assert block["test_set"] == "real/test"
    assert block["margin"] == pytest.approx(
        metrics["test"]["real/test"]["iou"] - block["floor"]["real/test"]["iou"]
    )
    # one step of training cannot beat a linear classifier of colour on the sample world
    assert block["floor"]["real/test"]["iou"] > 0.3
    assert block["passed"] is False and block["margin"] < 0
    saved = PixelFloor.load(Path(cfg.out) / block["floor_file"])
    np.testing.assert_allclose(saved.weight, floor.weight)


def test_a_subset_regime_floor_is_fitted_on_the_runs_own_samples(bench, sample_world_dataset):
    cfg, _, _ = bench
    metrics = _metrics(cfg, "unet", _REGIMES[1])
    assert [p["samples"] for p in metrics["data"]["train"]] == [8, 4]
    assert metrics["learning"]["floor_file"] == "floors/real@8+synthetic@0.5-seed0.json"
    reader = open_dataset(sample_world_dataset)
    parts = resolve_regime(parse_regime(_REGIMES[1]), {"real": reader, "synthetic": reader}, 0)
    pairs = (
        (reader.read_image(split, i), reader.read_mask(split, i))
        for _, split, ids in parts
        for i in ids
    )
    ref = PixelFloor.fit(*sample_pixels(pairs, **FIT))
    saved = PixelFloor.load(Path(cfg.out) / metrics["learning"]["floor_file"])
    np.testing.assert_allclose(saved.weight, ref.weight)
    assert saved.info["pixels"] == 12 * 256  # 12 images, 256 pixels each
    cm = ref.confusion((s.image, s.mask) for s in reader.iter_samples("test"))
    iou = metrics_from_confusion(cm, CLASS_NAMES)["iou"]
    assert metrics["learning"]["floor"]["real/test"]["iou"] == pytest.approx(iou)


def test_one_floor_per_training_set_reused_on_resume(bench):
    cfg, _, records = bench
    fitted = [r.getMessage() for r in records if "fitting the pixel floor" in r.getMessage()]
    assert sorted(fitted) == [  # once per regime, not per architecture
        "fitting the pixel floor real",
        "fitting the pixel floor real@8+synthetic@0.5-seed0",
    ]
    floors = Path(cfg.out) / "floors"
    assert sorted(p.name for p in floors.iterdir()) == [
        "real.json",
        "real@8+synthetic@0.5-seed0.json",
    ]
    stamp = (floors / "real.json").stat().st_mtime_ns
    unfinished = Path(cfg.out) / "runs" / "fpn" / "real" / "seed0" / "metrics.json"
    before = json.loads(unfinished.read_text())["learning"]
    unfinished.unlink()
    result = run_segmentation_benchmark(cfg)  # trains that run again, with the saved floor
    assert result.trained == ["fpn/real/seed0"]
    assert (floors / "real.json").stat().st_mtime_ns == stamp
    assert json.loads(unfinished.read_text())["learning"]["floor"] == before["floor"]


def test_tables_carry_the_floor_and_whether_the_run_learned(bench):
    cfg, result, _ = bench
    runs = pd.read_csv(Path(cfg.out) / "results.csv")
    assert {"floor_iou", "learned"} <= set(runs.columns) and len(runs) == 8
    doc = json.loads((Path(cfg.out) / "results.json").read_text())
    for table in (runs.to_dict(orient="records"), doc["runs"], result.rows):
        for row in table:
            block = _metrics(cfg, row["arch"], row["regime"])["learning"]
            assert row["floor_iou"] == pytest.approx(block["floor"][row["test_set"]]["iou"])
            assert row["learned"] is block["passed"] or row["learned"] == block["passed"]
    assert not runs["learned"].any()
    md = (Path(cfg.out) / "results.md").read_text()
    assert "| floor IoU | learned |" in md and "| **no** |" in md


def test_a_run_that_does_not_beat_its_floor_is_warned_by_name(bench):
    _, _, records = bench
    warned = [r.getMessage() for r in records if r.levelno == logging.WARNING]
    for arch in ("unet", "fpn"):
        for regime in _REGIMES:
            name = f"run {arch}/{regime}/seed0 did not beat its pixel floor on real/test"
            assert any(w.startswith(name) for w in warned), (name, warned)


def test_floor_basis_real_shares_the_real_parts_floor(sample_world_dataset, tmp_path):
    """``floor="real"``: a mixed regime is checked against the floor of its real part alone
    (one fit, the real regime's file); a regime without a real part keeps its own floor."""
    regimes = ("real:8", "real:8,synthetic:0.5", "synthetic:0.5")
    cfg = BenchmarkConfig(
        out=str(tmp_path / "b"), real=str(sample_world_dataset), synthetic=str(sample_world_dataset),
        train=regimes, test="real", archs=("unet",), seeds=(0,), batch_size=4, workers=0,
        max_steps=1, accelerator="cpu", progress=False, floor="real", **TINY,
    )  # fmt: skip
    run_segmentation_benchmark(cfg)
    blocks = {r: _metrics(cfg, "unet", r)["learning"] for r in regimes}
    assert sorted(p.name for p in (tmp_path / "b" / "floors").iterdir()) == [
        "real@8-seed0.json",
        "synthetic@0.5-seed0.json",
    ]
    assert blocks[regimes[1]]["floor_file"] == "floors/real@8-seed0.json"
    assert blocks[regimes[1]]["floor_fitted_on"] == "real:8"
    assert blocks[regimes[1]]["floor"] == blocks[regimes[0]]["floor"]
    assert blocks[regimes[2]]["floor_fitted_on"] == "synthetic:0.5"
    # the shared floor is the one fitted on the 8 real samples the mixed run drew
    reader = open_dataset(sample_world_dataset)
    (part,) = resolve_regime(parse_regime("real:8"), {"real": reader}, 0)
    ref = PixelFloor.fit(
        *sample_pixels(
            ((reader.read_image(part[1], i), reader.read_mask(part[1], i)) for i in part[2]), **FIT
        )
    )
    cm = ref.confusion((s.image, s.mask) for s in reader.iter_samples("test"))
    assert blocks[regimes[1]]["floor"]["real/test"]["iou"] == pytest.approx(
        metrics_from_confusion(cm, CLASS_NAMES)["iou"]
    )
    # the default basis stays out of a run's identity (runs made before the option resume)
    assert "floor" not in BenchmarkConfig(out="x", real=str(sample_world_dataset)).run_identity(
        "unet", "real", 0
    )
    assert cfg.run_identity("unet", "real", 0)["floor"] == "real"
    with pytest.raises(InputError, match="floor must be one of"):
        BenchmarkConfig(out="x", real=str(sample_world_dataset), floor="bad")  # type: ignore[arg-type]


def test_onecycle_schedule_warms_up_then_anneals_per_step():
    from types import SimpleNamespace

    from groundsynth.errors import InputError

    with pytest.raises(InputError, match="schedule"):
        OptimConfig(schedule="cosine")  # type: ignore[arg-type]
    model = build_model("unet", "tu-test_resnet", encoder_depth=3, decoder_width=4)
    module = SegmentationModule(model, OptimConfig(lr=3e-3, schedule="onecycle"))
    module._trainer = SimpleNamespace(estimated_stepping_batches=20)  # what Lightning gives
    conf = module.configure_optimizers()
    opt, sched = conf["optimizer"], conf["lr_scheduler"]["scheduler"]
    assert conf["lr_scheduler"]["interval"] == "step"
    lrs = []
    for _ in range(20):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert max(lrs) == pytest.approx(3e-3, rel=1e-6)  # reaches the configured rate
    assert int(np.argmax(lrs)) == 2  # at 15 % of the 20 steps (PyTorch counts from step 0)
    assert lrs[0] < 3e-3 / 10 and lrs[-1] < 3e-3 / 100  # starts low, ends near 0
    # the plateau schedule (default) is per epoch on the validation F1
    plain = SegmentationModule(model, OptimConfig(lr=3e-3)).configure_optimizers()
    assert plain["lr_scheduler"]["interval"] == "epoch"
    assert plain["lr_scheduler"]["monitor"] == "val/f1"


def test_a_benchmark_made_before_the_floor_option_resumes(sample_world_dataset, tmp_path):
    """Folders and runs written before ``floor`` existed (no key) resume at its default
    (``regime``), and runs that saved the default in full too; another basis is refused."""
    import yaml

    from groundsynth.benchmark.config import LATER_OPTIONS
    from groundsynth.benchmark.segmentation import _check_out, _finished
    from groundsynth.errors import OutputConflictError
    from groundsynth.runs import to_plain

    cfg = BenchmarkConfig(out=str(tmp_path), real=str(sample_world_dataset)).resolved()
    old = {k: v for k, v in to_plain(cfg).items() if k != "floor"}
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(old))
    _check_out(tmp_path, cfg)  # resumes
    real = BenchmarkConfig(out=str(tmp_path), real=str(sample_world_dataset), floor="real")
    with pytest.raises(OutputConflictError, match="options differ: floor"):
        _check_out(tmp_path, real.resolved())
    run = tmp_path / "runs" / "unet" / "real" / "seed0"
    run.mkdir(parents=True)
    (run / "metrics.json").write_text('{"seed": 0}')
    identity = cfg.run_identity("unet", "real", 0)
    for stored in (identity, {**identity, "floor": "regime"}):  # before the option; in full
        (run / "config.yaml").write_text(yaml.safe_dump(stored))
        assert _finished(run, identity, LATER_OPTIONS) == {"seed": 0}
    with pytest.raises(OutputConflictError, match="differ: floor"):
        _finished(run, real.resolved().run_identity("unet", "real", 0), LATER_OPTIONS)
