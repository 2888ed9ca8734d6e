"""Training: exact resume, run-directory artefacts and refusals, determinism, overfitting."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest
import torch
from PIL import Image

from groundsynth.classes import COLOURS
from groundsynth.errors import InputError, OutputConflictError
from groundsynth.generate.checkpoint import list_checkpoints, load_checkpoint, resolve_checkpoint
from groundsynth.generate.data import StreamSampler
from groundsynth.generate.training import read_losses, train_generator
from tests.generate.datasets import blocky_masks, write_dataset
from tests.generate.tiny import learning_config, tiny_conditional, train_config, wider_spade


def _train(config):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return train_generator(config, progress=False)


def _same_state(a, b) -> bool:
    if isinstance(a, torch.Tensor):
        return isinstance(b, torch.Tensor) and torch.equal(a, b)
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(_same_state(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return len(a) == len(b) and all(_same_state(x, y) for x, y in zip(a, b))
    return a == b


def test_stream_sampler_restarts_exactly():
    full = StreamSampler(5, seed=3)
    it = iter(full)
    stream = [next(it) for _ in range(12)]
    assert sorted(i for i, _ in stream[:5]) == list(range(5))  # an epoch is a permutation
    assert stream[:5] != stream[5:10]  # epochs differ
    resumed = iter(StreamSampler(5, seed=3, start=7))
    assert [next(resumed) for _ in range(5)] == stream[7:12]
    r0, r1 = iter(StreamSampler(5, 3, rank=0, world=2)), iter(StreamSampler(5, 3, rank=1, world=2))
    assert [next(r0), next(r1), next(r0), next(r1)] == stream[:4]


@pytest.mark.parametrize("kind", ["conditional", "diffusion", "conditional-diffusion"])
def test_resume_gives_the_weights_of_an_uninterrupted_run(tiny_dataset, tmp_path, kind):
    straight = _train(train_config(kind, tiny_dataset, tmp_path / "a", max_steps=4))
    first = _train(train_config(kind, tiny_dataset, tmp_path / "b", max_steps=2))
    assert first.resumed_from is None and first.steps == 2
    resumed = _train(train_config(kind, tiny_dataset, tmp_path / "b", max_steps=4))
    assert resumed.resumed_from == 2 and resumed.steps == 4
    a, b = load_checkpoint(straight.last_checkpoint), load_checkpoint(resumed.last_checkpoint)
    assert a["step"] == b["step"] == 4 and a["samples_seen"] == b["samples_seen"] == 8
    assert _same_state(a["networks"], b["networks"])
    assert _same_state(a["optimizers"], b["optimizers"])
    assert (tmp_path / "a" / "losses.csv").read_text() == (
        tmp_path / "b" / "losses.csv"
    ).read_text()
    # training further than needed does nothing; an already finished run is left as it is
    again = _train(train_config(kind, tiny_dataset, tmp_path / "b", max_steps=4))
    assert again.steps == 4 and len(again.checkpoints) == 2


def test_run_directory_holds_checkpoints_grids_losses(conditional_run):
    found = list_checkpoints(conditional_run)
    assert [s for s, _ in found] == [2]
    assert resolve_checkpoint(conditional_run) == found[-1][1]
    payload = load_checkpoint(found[-1][1])  # weights_only=True
    assert payload["kind"] == "conditional" and payload["run_name"] == "cond"
    assert set(payload["networks"]) == {"generator", "generator_ema", "discriminator"}
    assert set(payload["optimizers"]) == {"generator", "discriminator"}
    assert {"torch", "numpy", "python"} <= set(payload["rng"])
    grid = np.asarray(Image.open(conditional_run / "samples" / "step00000002.png"))
    assert grid.shape == (2 * 32, 5 * 32, 3)  # rows: map | real | 3 generated
    losses = read_losses(conditional_run)
    assert [r["step"] for r in losses] == [1, 2] and np.isfinite(losses[0]["d_loss"])
    index = json.loads((conditional_run / "checkpoints.json").read_text())
    assert index[0]["step"] == 2 and "g_loss" in index[0]["mean_losses"]
    for name in ("config.yaml", "manifest.json", "train-generator.log"):
        assert (conditional_run / name).is_file()


def test_grid_first_column_is_the_map(conditional_run, tiny_dataset):
    from groundsynth.data.reader import open_dataset

    reader = open_dataset(tiny_dataset)
    grid = np.asarray(Image.open(conditional_run / "samples" / "step00000002.png"))
    first = reader.ids("train")[0]
    assert np.array_equal(grid[:32, :32], COLOURS[reader.read_mask("train", first)])
    assert np.array_equal(grid[:32, 32:64], reader.read_image("train", first))


def test_other_options_in_the_same_run_directory_are_refused(tiny_dataset, conditional_run):
    other = train_config("conditional", tiny_dataset, conditional_run, seed=5)
    with pytest.raises(OutputConflictError, match="seed"):
        _train(other)
    (conditional_run.parent / "junk").mkdir()
    (conditional_run.parent / "junk" / "file.txt").write_text("x")
    with pytest.raises(OutputConflictError, match="not empty"):
        _train(train_config("conditional", tiny_dataset, conditional_run.parent / "junk"))


def test_config_errors_name_the_value(tiny_dataset, tmp_path):
    with pytest.raises(InputError, match="multiple of 8"):
        train_config("conditional", tiny_dataset, tmp_path, image_size=36).resolved()
    with pytest.raises(InputError, match="precision"):
        train_config("conditional", tiny_dataset, tmp_path, precision="fp8")
    with pytest.raises(InputError, match="split 'val' has no samples"):
        _train(train_config("conditional", tiny_dataset, tmp_path / "r", split="val"))


def test_overfitted_generator_reproduces_the_class_layout(tmp_path):
    """Four 32 px maps, images = class colours + noise. After 120 steps the generator's images,
    read back by nearest class colour, must follow the map they were painted from -- and not a
    different map (which rules out painting a fixed average image)."""
    from groundsynth.generate.sampling import load_generator

    masks = blocky_masks(4, 32, seed=1, grid=4)
    write_dataset(tmp_path / "ds", masks)
    model = wider_spade(l1_weight=10.0, ema_decay=0.9, lr_g=1e-3, lr_d=1e-3)
    cfg = learning_config("conditional", tmp_path / "ds", tmp_path / "run", 120, model)
    _train(cfg)
    gen = load_generator(tmp_path / "run", "cpu")
    seeds = [11, 12, 13, 14]
    images = gen.images(seeds, np.stack(masks)).astype(np.float64)
    dist = ((images[..., None, :] - COLOURS.astype(np.float64)) ** 2).sum(-1)
    read_back = dist.argmin(-1)
    truth = np.stack(masks)
    agreement = (read_back == truth).mean()
    other_map = (read_back == truth[[1, 2, 3, 0]]).mean()
    assert agreement > 0.8, agreement
    assert agreement - other_map > 0.5, (agreement, other_map)


@pytest.mark.slow
def test_adversarial_loss_alone_learns_label_fidelity(tmp_path):
    """The SPADE generator without the L1 term (the adversarial loss alone, as the demo trains
    it): after 200 steps its images, read back by the pixel floor fitted on the training set,
    have a high mIoU against the map they were painted from and a low one against another map."""
    from groundsynth.benchmark.metrics import confusion_update, metrics_from_confusion
    from groundsynth.evaluate.pixel_floor import fit_floor
    from groundsynth.generate.sampling import load_generator

    masks = blocky_masks(4, 32, seed=1, grid=4)
    write_dataset(tmp_path / "ds", masks)
    model = wider_spade(
        d_width=8, d_max_channels=32, l1_weight=0.0, ema_decay=0.9, lr_g=2e-3, lr_d=2e-3
    )
    cfg = learning_config("conditional", tmp_path / "ds", tmp_path / "run", 200, model)
    _train(cfg)
    gen = load_generator(tmp_path / "run", "cpu")
    truth = np.stack(masks)
    read_back = fit_floor(tmp_path / "ds").predict(gen.images([11, 12, 13, 14], truth))
    miou = metrics_from_confusion(confusion_update(read_back, truth))["iou"]
    other = metrics_from_confusion(confusion_update(read_back, truth[[1, 2, 3, 0]]))["iou"]
    assert miou > 0.6, miou
    assert other < 0.2, other


def test_patchgan_hinge_under_bf16_autocast_trains(tiny_dataset, tmp_path):
    """The PatchGAN + hinge path, through Lightning's bf16 mixed precision (on the CPU here)."""
    model = tiny_conditional(discriminator="patchgan", d_depth=2)
    cfg = train_config(
        "conditional", tiny_dataset, tmp_path / "r", model=model, precision="bf16-mixed"
    )
    res = _train(cfg)
    assert res.manifest["outputs"]["precision"] == "bf16-mixed"
    payload = load_checkpoint(res.last_checkpoint)
    assert payload["config"]["model"]["loss"] == "hinge"
    losses = read_losses(tmp_path / "r")
    assert len(losses) == 2 and all(np.isfinite(r["g_loss"]) for r in losses)


def test_ctrl_c_reaches_the_caller_and_the_rerun_completes(tiny_dataset, tmp_path):
    """Lightning turns Ctrl-C into sys.exit(1); the library hands back KeyboardInterrupt."""
    import signal

    import lightning as L

    class CtrlC(L.Callback):
        def on_train_batch_start(self, *args):
            raise KeyboardInterrupt

    cfg = train_config("conditional", tiny_dataset, tmp_path / "r")
    handler = signal.getsignal(signal.SIGINT)
    with warnings.catch_warnings(), pytest.raises(KeyboardInterrupt):
        warnings.simplefilter("ignore")
        train_generator(cfg, progress=False, callbacks=[CtrlC()])
    assert signal.getsignal(signal.SIGINT) == handler  # Lightning's SIG_IGN is undone
    assert list_checkpoints(tmp_path / "r") == []
    again = _train(cfg)
    assert again.steps == 2 and again.resumed_from is None
    assert [s for s, _ in list_checkpoints(tmp_path / "r")] == [2]
