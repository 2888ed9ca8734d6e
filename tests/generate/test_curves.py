"""Learning curves of train-generator: rows, references against independent computations, a
rising curve, early stopping on a plateau, exact resume, the held-out training tail, the CLI."""

from __future__ import annotations

import json
import warnings
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image
from typer.testing import CliRunner

from groundsynth.data import contract
from groundsynth.data.reader import open_dataset
from groundsynth.errors import OutputConflictError
from groundsynth.evaluate.descriptor import image_descriptor
from groundsynth.evaluate.fidelity import frechet_distance
from groundsynth.evaluate.pixel_floor import PixelFloor, fit_floor, score_floor
from groundsynth.generate.checkpoint import list_checkpoints, load_checkpoint
from groundsynth.generate.config import MAP_KINDS
from groundsynth.generate.curves import (
    CURVE_COLUMNS,
    eval_seeds,
    evaluations_since_best,
    plateau_step,
    read_curves,
)
from groundsynth.generate.training import read_losses, train_generator
from tests.generate.datasets import blocky_masks, write_dataset
from tests.generate.tiny import TINY_MODELS, tiny_conditional, train_config, wider_spade


def _train(config, **kw):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return train_generator(config, progress=False, **kw)


def _two_splits(root: Path, n_train: int = 8, n_val: int = 8, grid: int = 2) -> Path:
    """A dataset with a train and a val split of blocky 32 px maps (colour images)."""
    write_dataset(root, blocky_masks(n_train, 32, seed=0, grid=grid))
    train = pd.read_parquet(contract.metadata_path(root))
    write_dataset(root, blocky_masks(n_val, 32, seed=7, grid=grid), split="val")
    val = pd.read_parquet(contract.metadata_path(root))
    pd.concat([train, val]).to_parquet(contract.metadata_path(root), index=False)
    return root


@pytest.fixture(scope="module")
def split_dataset(tmp_path_factory) -> Path:
    return _two_splits(tmp_path_factory.mktemp("split_ds"))


@pytest.fixture(scope="module")
def curve_run(split_dataset, tmp_path_factory):
    """A conditional run of 5 steps, evaluated every 2 (and at the last), one checkpoint."""
    out = tmp_path_factory.mktemp("curves") / "run"
    cfg = train_config(
        "conditional", split_dataset, out, max_steps=5, checkpoint_every=5, eval_every=2
    )
    return _train(cfg)


def test_rows_at_the_evaluation_steps_with_finite_values(curve_run):
    rows = read_curves(curve_run.out)
    assert [r["step"] for r in rows] == [0, 2, 4, 5]
    header = (curve_run.out / "curves.csv").read_text().splitlines()[0]
    assert header == ",".join(CURVE_COLUMNS)
    for r in rows:
        for name in ("label_fidelity_floor", "ceiling_floor", "fd", "fd_real_halves", "seconds"):
            assert np.isfinite(r[name]), (name, r)
        assert r["label_fidelity_segmenter"] is None and r["features"] == "descriptor"
        assert 0 <= r["precision"] <= 1 and 0 <= r["recall"] <= 1
    # the references are computed once: the same in every row
    assert len({r["ceiling_floor"] for r in rows}) == 1
    assert len({r["fd_real_halves"] for r in rows}) == 1
    learning = curve_run.manifest["outputs"]["learning"]
    assert learning == curve_run.learning and learning["step"] == 5
    assert learning["label_fidelity"] == rows[-1]["label_fidelity_floor"]
    assert learning["ratio"] == pytest.approx(
        rows[-1]["label_fidelity_floor"] / learning["ceiling"]
    )
    assert learning["fd_ratio"] == pytest.approx(rows[-1]["fd"] / rows[-1]["fd_real_halves"])
    assert curve_run.manifest["stopped_early_at"] is None
    png = curve_run.out / "curves.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with Image.open(png) as im:
        im.verify()
        assert im.format == "PNG" and min(im.size) > 100


def test_ceiling_is_the_floor_fitted_on_train_scored_on_val(curve_run, split_dataset):
    floor = fit_floor(split_dataset, "train")
    cached = PixelFloor.load(curve_run.out / "floor.json")
    np.testing.assert_allclose(cached.weight, floor.weight)
    expected = score_floor(floor, split_dataset, "val")["iou"]
    for r in read_curves(curve_run.out):
        assert r["ceiling_floor"] == pytest.approx(expected, rel=1e-9)


def test_fd_is_the_frechet_distance_of_independent_features(curve_run, split_dataset):
    """The step-5 row against features computed here from the step-5 checkpoint."""
    from groundsynth.generate.loading import load_generator

    reader = open_dataset(split_dataset)
    ids = reader.ids("val")  # 8 <= eval_samples: all of them, sorted
    masks = np.stack([reader.read_mask("val", i) for i in ids])
    real = np.stack([reader.read_image("val", i) for i in ids])
    gen = load_generator(curve_run.out, "cpu")
    assert gen.step == 5
    cfg = gen.train_config
    seeds = eval_seeds(cfg, len(ids))
    fake = np.concatenate(
        [gen.images(seeds[i : i + 2], masks[i : i + 2]) for i in range(0, len(ids), 2)]
    )
    floor = PixelFloor.load(curve_run.out / "floor.json")
    f_fake, f_real = image_descriptor(fake, floor), image_descriptor(real, floor)
    fd = frechet_distance(f_fake.mean(0), np.cov(f_fake.T), f_real.mean(0), np.cov(f_real.T))
    row = read_curves(curve_run.out)[-1]
    assert row["step"] == 5
    assert row["fd"] == pytest.approx(fd, rel=1e-6)


def test_label_fidelity_rises_on_a_learnable_dataset(tmp_path):
    """SPADE with a strong L1 loss learns the class colours in ~100 steps: the floor reads the
    held-out maps back from its samples far better at the end than at the start."""
    ds = _two_splits(tmp_path / "ds", n_train=8, n_val=4, grid=4)
    model = wider_spade(l1_weight=10.0, ema_decay=0.9, lr_g=1e-3, lr_d=1e-3)
    cfg = train_config(
        "conditional", ds, tmp_path / "run", model=model, max_steps=100, batch_size=4,
        checkpoint_every=100, eval_every=50, augment=False, grid_rows=0,
    )  # fmt: skip
    result = _train(cfg)
    rows = read_curves(result.out)
    assert [r["step"] for r in rows] == [0, 50, 100]
    first, last = rows[0]["label_fidelity_floor"], rows[-1]["label_fidelity_floor"]
    assert last > first + 0.3, (first, last)
    assert rows[-1]["fd"] < rows[0]["fd"]


def test_plateau_counting():
    assert evaluations_since_best([0.1, 0.2, 0.3]) == 0
    assert evaluations_since_best([0.1, 0.3, 0.3, 0.29]) == 2
    assert evaluations_since_best([0.1, 0.105, 0.108], min_delta=0.01) == 2
    assert evaluations_since_best([5.0, 4.0, 4.5], higher_is_better=False) == 1
    assert evaluations_since_best([None, float("nan"), 1.0]) == 0


def test_plateau_main_figure_by_kind(tmp_path):
    """Label fidelity (higher is better) for kinds that paint a map, FD (lower) otherwise."""
    rows = [
        {"step": 2 * i, "label_fidelity_floor": lf, "fd": fd, "features": "descriptor"}
        for i, (lf, fd) in enumerate([(0.1, 9.0), (0.5, 8.0), (0.4, 4.0), (0.45, 3.0)])
    ]
    kw = dict(stop_on_plateau=True, plateau_patience=2, eval_every=2)
    assert plateau_step(rows, train_config("conditional", tmp_path, tmp_path, **kw)) == 6
    assert plateau_step(rows, train_config("diffusion", tmp_path, tmp_path, **kw)) is None
    assert plateau_step(rows, train_config("conditional", tmp_path, tmp_path)) is None  # off
    # FD rows of another feature space (an earlier segmenter) do not count
    rows = [{**r, "fd": 1.0, "features": "segmenter:x"} for r in rows[:2]] + rows[2:]
    assert plateau_step(rows, train_config("diffusion", tmp_path, tmp_path, **kw)) is None


def test_stop_on_plateau_stops_early_and_a_rerun_does_nothing(split_dataset, tmp_path):
    """Learning rates of 1e-9 leave the generator as it is: the curve is flat from the start."""
    model = tiny_conditional(lr_g=1e-9, lr_d=1e-9)
    cfg = train_config(
        "conditional", split_dataset, tmp_path / "run", model=model, max_steps=20,
        checkpoint_every=10, eval_every=2, stop_on_plateau=True, plateau_patience=2,
        plateau_min_delta=0.01,
    )  # fmt: skip
    result = _train(cfg)
    assert result.stopped_early_at == 4 and result.steps == 4
    assert result.manifest["stopped_early_at"] == 4
    assert [s for s, _ in list_checkpoints(result.out)] == [4]  # saved where it stopped
    assert [r["step"] for r in read_curves(result.out)] == [0, 2, 4]
    assert "stopping early at step 4" in (result.out / "train-generator.log").read_text()
    before = (result.out / "curves.csv").read_text()
    again = _train(cfg)
    assert again.steps == 4 and again.resumed_from == 4 and again.stopped_early_at == 4
    assert again.manifest["stopped_early_at"] == 4
    assert (result.out / "curves.csv").read_text() == before
    assert len(read_losses(result.out)) == 4
    # without the plateau rule the same run trains on to max_steps
    more = _train(replace(cfg, stop_on_plateau=False, max_steps=6))
    assert more.steps == 6 and more.stopped_early_at is None


def _without_seconds(out: Path) -> list[dict]:
    return [{k: v for k, v in r.items() if k != "seconds"} for r in read_curves(out)]


@pytest.mark.parametrize("kind", ["conditional", "diffusion"])
def test_resume_with_curves_is_exact(split_dataset, tmp_path, kind):
    """Evaluating does not touch the training stream: weights equal those of a run without
    curves and of an uninterrupted run, and the curves are the same rows; rows beyond the
    resumed step are dropped."""
    kw = dict(eval_every=2, eval_samples=6)
    plain = _train(train_config(kind, split_dataset, tmp_path / "c", max_steps=4))
    straight = _train(train_config(kind, split_dataset, tmp_path / "a", max_steps=4, **kw))
    _train(train_config(kind, split_dataset, tmp_path / "b", max_steps=2, **kw))
    resumed = _train(train_config(kind, split_dataset, tmp_path / "b", max_steps=4, **kw))
    assert resumed.resumed_from == 2 and not (tmp_path / "c" / "curves.csv").exists()
    c = load_checkpoint(plain.last_checkpoint)
    a, b = load_checkpoint(straight.last_checkpoint), load_checkpoint(resumed.last_checkpoint)
    for other in (b, c):
        for name, state in a["networks"].items():
            for key, value in state.items():
                assert np.array_equal(value.numpy(), other["networks"][name][key].numpy()), key
    assert _without_seconds(tmp_path / "a") == _without_seconds(tmp_path / "b")
    assert [r["step"] for r in read_curves(tmp_path / "b")] == [0, 2, 4]
    # lose the last checkpoint (and spoil row 4): the rerun resumes at 2, drops row 4 and
    # writes it again
    (tmp_path / "b" / "checkpoints" / "step00000004.pt").unlink()
    path = tmp_path / "b" / "curves.csv"
    lines = path.read_text().splitlines()
    path.write_text("\n".join([*lines[:-1], lines[-1].replace(",descriptor,", ",spoilt,")]) + "\n")
    again = _train(train_config(kind, split_dataset, tmp_path / "b", max_steps=4, **kw))
    assert again.resumed_from == 2
    assert _without_seconds(tmp_path / "a") == _without_seconds(tmp_path / "b")


def test_without_a_val_split_the_training_tail_is_held_out(tiny_dataset, tmp_path):
    cfg = train_config("conditional", tiny_dataset, tmp_path / "r", eval_every=2)
    result = _train(cfg)
    assert result.manifest["outputs"]["samples"] == 4  # 6 samples, the last 2 held out
    assert "held out of training" in (tmp_path / "r" / "train-generator.log").read_text()
    assert [r["step"] for r in read_curves(tmp_path / "r")] == [0, 2]
    # turning the curves off would train on the held-out tail: not the same run
    with pytest.raises(OutputConflictError, match="held out 2 samples"):
        _train(replace(cfg, eval_every=0, max_steps=4))


def test_segmenter_reads_back_and_gives_the_features(split_dataset, tmp_path):
    """Label fidelity and FD of the step-2 row against the segmenter applied here."""
    import torch

    from groundsynth.benchmark.metrics import confusion_update, metrics_from_confusion
    from groundsynth.benchmark.model import build_model, load_segmenter, save_segmenter
    from groundsynth.generate.loading import load_generator

    seg = save_segmenter(
        tmp_path / "segmenter.pt", build_model("unet", "resnet18", encoder_depth=3, decoder_width=4)
    )
    cfg = train_config("conditional", split_dataset, tmp_path / "r", eval_every=2,
                       eval_segmenter=str(seg))  # fmt: skip
    result = _train(cfg)
    rows = read_curves(result.out)
    assert [r["step"] for r in rows] == [0, 2]
    for r in rows:
        assert r["features"].startswith("segmenter:")
        for name in ("label_fidelity_segmenter", "ceiling_segmenter", "label_fidelity_floor", "fd"):
            assert np.isfinite(r[name]), (name, r)
    assert result.learning["reader"] == "segmenter"
    assert result.learning["label_fidelity"] == rows[-1]["label_fidelity_segmenter"]
    reader = open_dataset(split_dataset)
    ids = reader.ids("val")
    masks = np.stack([reader.read_mask("val", i) for i in ids])
    real = np.stack([reader.read_image("val", i) for i in ids])
    gen = load_generator(result.out, "cpu")
    fake = np.concatenate(
        [
            gen.images(eval_seeds(gen.train_config, 8)[i : i + 2], masks[i : i + 2])
            for i in (0, 2, 4, 6)
        ]
    )
    model, _ = load_segmenter(seg)

    def run(images):
        x = torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255
        with torch.no_grad():
            return model(x).argmax(1).numpy(), model.features(x).double().numpy()

    (pred, f_fake), (_, f_real) = run(fake), run(real)
    iou = metrics_from_confusion(confusion_update(pred, masks))["iou"]
    fd = frechet_distance(f_fake.mean(0), np.cov(f_fake.T), f_real.mean(0), np.cov(f_real.T))
    assert rows[-1]["label_fidelity_segmenter"] == pytest.approx(iou, rel=1e-9)
    assert rows[-1]["fd"] == pytest.approx(fd, rel=1e-5, abs=1e-9)


@pytest.mark.parametrize("kind", sorted(TINY_MODELS))
def test_every_generator_kind_gets_curves(split_dataset, tmp_path, kind):
    result = _train(train_config(kind, split_dataset, tmp_path / "r", eval_every=2, eval_samples=6))
    rows = read_curves(result.out)
    assert [r["step"] for r in rows] == [0, 2]
    assert all(np.isfinite(r["fd"]) and np.isfinite(r["fd_real_halves"]) for r in rows)
    paints_maps = kind in MAP_KINDS
    assert all((r["label_fidelity_floor"] is not None) == paints_maps for r in rows)
    assert (result.learning["label_fidelity"] is not None) == paints_maps


def test_cli_options_and_summary(split_dataset, tmp_path):
    from groundsynth.cli import app

    run = tmp_path / "run"
    args = ["train-generator", str(split_dataset), "--out", str(run), "--image-size", "32"]
    args += ["--max-steps", "2", "--checkpoint-every", "2", "--batch-size", "2"]
    args += ["--num-workers", "0", "--no-progress", "--width", "4", "--d-width", "4"]
    args += ["--z-dim", "4", "--eval-every", "1", "--eval-samples", "4"]
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 0, res.output
    assert "label fidelity" in res.output and "curves.png" in res.output
    assert [r["step"] for r in read_curves(run)] == [0, 1, 2]
    manifest = json.loads((run / "manifest.json").read_text())
    assert manifest["outputs"]["learning"]["step"] == 2
    res = CliRunner().invoke(app, [*args[:4], "--eval-every", "-1", "--dry-run"])
    assert res.exit_code != 0 and "--eval-every" in res.output
