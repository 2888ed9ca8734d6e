"""The segmentation benchmark end to end on a tiny dataset: tables, CIs, resume, conflicts."""

from __future__ import annotations

import json
import math

import pandas as pd
import pytest
from scipy import stats
from typer.testing import CliRunner

from groundsynth.benchmark.model import load_segmenter
from groundsynth.benchmark.results import mean_std_ci
from groundsynth.benchmark.segmentation import BenchmarkConfig, run_segmentation_benchmark
from groundsynth.cli import app
from tests.benchmark.conftest import TINY

runner = CliRunner()

_QUICK = [
    "--encoder", TINY["encoder"],
    "--encoder-depth", str(TINY["encoder_depth"]),
    "--decoder-width", str(TINY["decoder_width"]),
    "--batch-size", "4",
    "--workers", "0",
    "--max-epochs", "1",
    "--limit-train-batches", "2",
    "--accelerator", "cpu",
    "--no-progress",
]  # fmt: skip


def _strict_json(path):
    def refuse(name):
        raise ValueError(f"{path}: non-standard JSON constant {name}")

    return json.loads(path.read_text(), parse_constant=refuse)


def test_mean_std_ci_is_a_student_t_interval():
    values = [0.61, 0.65, 0.7]
    mean, std, lo, hi = mean_std_ci(values)
    ref = stats.t.interval(0.95, len(values) - 1, loc=sum(values) / 3, scale=stats.sem(values))
    assert (lo, hi) == pytest.approx(ref) and mean == pytest.approx(0.6533333)
    assert std == pytest.approx(pd.Series(values).std())
    one = mean_std_ci([0.5])
    assert one[0] == 0.5 and all(math.isnan(v) for v in one[1:])


def test_tiny_benchmark_end_to_end_then_resume(sample_world_dataset, tmp_path):
    out = tmp_path / "bench"
    args = ["benchmark", "segmentation", "--real", str(sample_world_dataset), "--archs", "unet,fpn",
            "--seeds", "2", "--out", str(out), *_QUICK]  # fmt: skip
    res = runner.invoke(app, args, terminal_width=200)
    assert res.exit_code == 0, res.output
    assert "trained 4, resumed 0" in res.output
    assert "did not beat their pixel floor" in res.output  # two steps do not beat it

    runs = pd.read_csv(out / "results.csv")
    assert len(runs) == 4
    assert set(zip(runs["arch"], runs["seed"])) == {
        ("unet", 0),
        ("unet", 1),
        ("fpn", 0),
        ("fpn", 1),
    }
    assert {"f1", "iou", "precision", "recall", "accuracy", "iou/Shrub", "support/Water"} <= set(
        runs.columns
    )
    assert runs["f1"].between(0, 1).all()
    summary = pd.read_csv(out / "summary.csv")
    assert list(summary["arch"]) == ["fpn", "unet", "mean"]
    for col in (
        "f1_mean",
        "f1_std",
        "f1_ci95_low",
        "f1_ci95_high",
        "iou_mean",
        "accuracy_ci95_high",
    ):
        assert col in summary.columns
    unet = summary[summary["arch"] == "unet"].iloc[0]
    mean, std, lo, hi = mean_std_ci(runs[runs["arch"] == "unet"]["iou"].tolist())
    assert (
        unet["iou_mean"],
        unet["iou_std"],
        unet["iou_ci95_low"],
        unet["iou_ci95_high"],
    ) == pytest.approx((mean, std, lo, hi))
    assert unet["n_seeds"] == 2
    md = (out / "results.md").read_text()
    assert "±" in md and "WorldCover" in md and "| mean |" in md
    doc = _strict_json(out / "results.json")
    assert len(doc["runs"]) == 4 and len(doc["summary"]) == 3
    manifest = _strict_json(out / "manifest.json")
    assert len(manifest["trained"]) == 4

    run_dir = out / "runs" / "unet" / "real" / "seed0"
    for name in ("config.yaml", "manifest.json", "train.log", "metrics.json", "segmenter.pt"):
        assert (run_dir / name).is_file(), name
    model, info = load_segmenter(run_dir / "segmenter.pt")
    assert info["name"] == "unet-real-seed0" and info["trained"]["seed"] == 0
    from groundsynth.data.reader import open_dataset

    assert info["data"]["train"][0]["samples"] == open_dataset(sample_world_dataset).len("train")

    # rerun: every run is finished and skipped
    stamp = (run_dir / "metrics.json").stat().st_mtime_ns
    res = runner.invoke(app, args, terminal_width=200)
    assert res.exit_code == 0, res.output
    assert "trained 0, resumed 4" in res.output
    assert (run_dir / "metrics.json").stat().st_mtime_ns == stamp
    assert pd.read_csv(out / "results.csv").equals(runs)

    # an unfinished run (no metrics.json) is redone, alone
    (out / "runs" / "fpn" / "real" / "seed1" / "metrics.json").unlink()
    res = runner.invoke(app, args, terminal_width=200)
    assert res.exit_code == 0, res.output
    assert "trained 1, resumed 3" in res.output

    # other settings in the same --out are refused before anything is written
    res = runner.invoke(app, [*args, "--lr", "0.01"], terminal_width=200)
    assert res.exit_code == 2
    assert "holds another segmentation benchmark (options differ: lr)" in res.output


def test_single_seed_mixing_regime_and_two_test_sets(tiny_dataset, tmp_path):
    cfg = BenchmarkConfig(
        out=str(tmp_path / "b"),
        real=str(tiny_dataset),
        synthetic=str(tiny_dataset),
        train=("real:16,synthetic:0.5",),
        test="real,synthetic/val",
        archs=("segformer",),
        seeds=(3,),
        batch_size=4,
        workers=0,
        max_epochs=1,
        limit_train_batches=2,
        accelerator="cpu",
        progress=False,
        **TINY,
    )
    result = run_segmentation_benchmark(cfg)
    assert [r["test_set"] for r in result.rows] == ["real/test", "synthetic/val"]
    row = result.summary[0]
    assert row["n_seeds"] == 1 and not math.isnan(row["f1_mean"])
    assert math.isnan(row["f1_std"]) and math.isnan(row["f1_ci95_low"])
    doc = _strict_json(tmp_path / "b" / "results.json")
    assert doc["summary"][0]["f1_ci95_low"] is None
    assert any("single seed" in n for n in doc["notes"])
    metrics = _strict_json(
        tmp_path / "b" / "runs" / "segformer" / "real@16+synthetic@0.5" / "seed3" / "metrics.json"
    )
    assert [p["samples"] for p in metrics["data"]["train"]] == [16, 8]


def test_config_errors_are_clear(tiny_dataset, tmp_path):
    from groundsynth.errors import InputError

    with pytest.raises(InputError, match="uses synthetic data; pass --synthetic DIR"):
        BenchmarkConfig(out=str(tmp_path), real=str(tiny_dataset), train=("real,synthetic:0.5",))
    with pytest.raises(InputError, match="unknown architecture 'unett'"):
        BenchmarkConfig(out=str(tmp_path), real=str(tiny_dataset), archs=("unett",))
    res = runner.invoke(
        app,
        ["benchmark", "segmentation", "--real", str(tiny_dataset), "--val", "real/nosuch",
         "--out", str(tmp_path / "x"), *_QUICK],
    )  # fmt: skip
    assert res.exit_code == 2 and "has no split 'nosuch'" in res.output
    assert not (tmp_path / "x").exists()  # refused before anything was written


def _config(tmp_path, real, **kw) -> BenchmarkConfig:
    """A one-run, two-batch benchmark of the tiny Unet on the CPU."""
    base = dict(
        out=str(tmp_path / "b"), real=str(real), seeds=(0,), batch_size=4, workers=0,
        max_epochs=1, limit_train_batches=2, accelerator="cpu", progress=False, **TINY,
    )  # fmt: skip
    base.update(kw)
    return BenchmarkConfig(**base)


def test_out_holding_another_run_or_other_files_is_refused(tiny_dataset, tmp_path):
    import shutil

    from groundsynth.errors import OutputConflictError

    # a dataset folder: its config.yaml and manifest.json must survive
    ds = tmp_path / "ds"
    ds.mkdir()
    for name in ("config.yaml", "manifest.json"):
        shutil.copy(tiny_dataset / name, ds / name)
    before = {p.name: p.read_bytes() for p in ds.iterdir()}
    args = ["benchmark", "segmentation", "--real", str(tiny_dataset), "--archs", "unet"]
    res = runner.invoke(app, [*args, "--seeds", "1", *_QUICK, "--out", str(ds)], terminal_width=200)
    assert res.exit_code == 2, res.output
    assert str(ds) in res.output and "holds another command's run" in res.output
    assert {p.name: p.read_bytes() for p in ds.iterdir()} == before
    # any other non-empty folder
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine")
    with pytest.raises(OutputConflictError, match="no config.yaml"):
        run_segmentation_benchmark(_config(tmp_path, tiny_dataset, out=str(foreign)))
    assert [p.name for p in foreign.iterdir()] == ["notes.txt"]


def test_ctrl_c_during_training_exits_130_and_the_rerun_resumes(
    tiny_dataset, tmp_path, monkeypatch
):
    import signal

    import lightning.pytorch as lp

    class CtrlC(lp.Callback):
        def on_train_batch_start(self, *args):
            raise KeyboardInterrupt

    class InterruptedTrainer(lp.Trainer):
        def __init__(self, *args, callbacks=None, **kwargs):
            super().__init__(*args, callbacks=[*(callbacks or []), CtrlC()], **kwargs)

    cfg = _config(tmp_path, tiny_dataset)
    handler = signal.getsignal(signal.SIGINT)
    with monkeypatch.context() as mp:
        mp.setattr(lp, "Trainer", InterruptedTrainer)
        with pytest.raises(KeyboardInterrupt):
            run_segmentation_benchmark(cfg)
        assert signal.getsignal(signal.SIGINT) == handler  # Lightning's SIG_IGN is undone
        args = ["benchmark", "segmentation", "--real", str(tiny_dataset), "--archs", "unet"]
        res = runner.invoke(app, [*args, "--seeds", "1", "--out", cfg.out, *_QUICK])
        assert res.exit_code == 130, res.output
        assert "interrupted" in res.output and "rerun the same command" in res.output
    run_dir = tmp_path / "b" / "runs" / "unet" / "real" / "seed0"
    assert run_dir.is_dir() and not (run_dir / "metrics.json").exists()
    result = run_segmentation_benchmark(cfg)
    assert result.trained == ["unet/real/seed0"] and (run_dir / "metrics.json").is_file()


def test_mixed_image_sizes_are_refused_before_training(tiny_dataset, tmp_path):
    from groundsynth.errors import InputError
    from tests.generate.datasets import blocky_masks, write_dataset

    small = write_dataset(tmp_path / "s32", blocky_masks(6, 32), split="synth")
    for kw in ({"train": ("real,synthetic",)}, {"test": "real,synthetic/synth"}):
        cfg = _config(tmp_path, tiny_dataset, synthetic=str(small), **kw)
        with pytest.raises(InputError, match="image sizes differ") as err:
            run_segmentation_benchmark(cfg)
        msg = str(err.value)
        assert "real/train 64x64 px" in msg and "synthetic/synth 32x32 px" in msg
        assert str(small) in msg and str(tiny_dataset) in msg
        assert not (tmp_path / "b").exists()


def test_bad_encoder_is_refused_up_front_in_a_short_message(tiny_dataset, tmp_path):
    from groundsynth.errors import InputError

    with pytest.raises(InputError, match="unknown encoder 'resnet3'") as err:
        _config(tmp_path, tiny_dataset, encoder="resnet3")
    assert "tu-<name>" in str(err.value) and len(str(err.value)) < 300
    with pytest.raises(InputError, match="unknown encoder 'tu-nosuchnet'"):
        _config(tmp_path, tiny_dataset, encoder="tu-nosuchnet")
    res = runner.invoke(
        app,
        ["benchmark", "segmentation", "--real", str(tiny_dataset), "--archs", "unet", *_QUICK,
         "--encoder", "resnet3", "--out", str(tmp_path / "b")],
        terminal_width=200,
    )  # fmt: skip
    assert res.exit_code == 2 and "unknown encoder 'resnet3'" in res.output
    assert "resnext101_32x48d" not in res.output  # not smp's whole list
    # a known encoder the architecture cannot use fails before anything is written
    cfg = _config(
        tmp_path, tiny_dataset, archs=("unetplusplus",), encoder="mit_b0", encoder_depth=5
    )
    with pytest.raises(InputError, match="cannot build unetplusplus with encoder 'mit_b0'"):
        run_segmentation_benchmark(cfg)
    assert not (tmp_path / "b").exists()


# ------------------------------------------------------------- validation and the tested weights
def _recompute(run_dir, root, split: str) -> dict:
    """Scores of a run's saved segmenter.pt on a split, outside Lightning (numpy confusion)."""
    import torch

    from groundsynth.benchmark.metrics import confusion_update, metrics_from_confusion
    from groundsynth.classes import CLASS_NAMES, NUM_CLASSES
    from groundsynth.data.torch_dataset import SegmentationDataset

    model, _ = load_segmenter(run_dir / "segmenter.pt")
    cm = 0
    loader = torch.utils.data.DataLoader(SegmentationDataset(root, split), batch_size=4)
    with torch.no_grad():
        for batch in loader:
            pred = model(batch["image"]).argmax(dim=1).numpy()
            cm = cm + confusion_update(pred, batch["mask"].numpy(), NUM_CLASSES)
    return metrics_from_confusion(cm, CLASS_NAMES)


def test_max_steps_inside_an_epoch_still_validates_and_tests_those_weights(
    sample_world_dataset, tmp_path
):
    import warnings

    # 3 steps of a 4-sample batch end inside the first epoch (the transfer experiment's case)
    cfg = _config(tmp_path, sample_world_dataset, max_steps=3, limit_train_batches=None)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        run_segmentation_benchmark(cfg)
    assert not [w for w in caught if "could not find the monitored key" in str(w.message)]
    run_dir = tmp_path / "b" / "runs" / "unet" / "real" / "seed0"
    metrics = _strict_json(run_dir / "metrics.json")
    assert metrics["steps"] == 3 and metrics["data"]["train"][0]["samples"] > 3 * 4
    assert [(v["epoch"], v["step"]) for v in metrics["val_history"]] == [(0, 3)]
    tested = metrics["tested_checkpoint"]
    assert tested["kind"] == "best" and tested["step"] == 3
    assert tested["val_f1"] == metrics["val_history"][0]["f1"]
    # segmenter.pt is what was tested: its scores on the test split are metrics.json's
    ref = _recompute(run_dir, sample_world_dataset, "test")
    assert metrics["test"]["real/test"] == pytest.approx(ref, nan_ok=True)


def test_the_tested_checkpoint_is_the_best_validation_round(
    sample_world_dataset, tmp_path, monkeypatch
):
    import lightning.pytorch as lp
    import torch

    class Sabotage(lp.Callback):
        """From the second round on, validate a head that says Water everywhere."""

        def on_validation_epoch_start(self, trainer, module):
            if trainer.current_epoch >= 1:
                head = module.model.net.segmentation_head[0]
                with torch.no_grad():
                    head.weight.zero_()
                    head.bias.fill_(-10.0)
                    head.bias[6] = 10.0

    class SabotagedTrainer(lp.Trainer):
        def __init__(self, *args, callbacks=None, **kwargs):
            super().__init__(*args, callbacks=[*(callbacks or []), Sabotage()], **kwargs)

    monkeypatch.setattr(lp, "Trainer", SabotagedTrainer)
    run_segmentation_benchmark(_config(tmp_path, sample_world_dataset, max_epochs=3))
    run_dir = tmp_path / "b" / "runs" / "unet" / "real" / "seed0"
    metrics = _strict_json(run_dir / "metrics.json")
    history = metrics["val_history"]
    assert [v["epoch"] for v in history] == [0, 1, 2]
    best = max(history, key=lambda v: v["f1"])
    assert best is history[0] and history[0]["f1"] > max(v["f1"] for v in history[1:])
    tested = metrics["tested_checkpoint"]
    assert (tested["step"], tested["val_f1"]) == (best["step"], best["f1"]) == (2, best["f1"])
    # the saved (and tested) weights score the best round's F1 on the val split, not the last's
    assert _recompute(run_dir, sample_world_dataset, "val")["f1"] == pytest.approx(best["f1"])
    ref = _recompute(run_dir, sample_world_dataset, "test")
    assert metrics["test"]["real/test"] == pytest.approx(ref, nan_ok=True)
