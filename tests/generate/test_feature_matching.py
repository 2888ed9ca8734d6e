"""Feature matching on a real-trained segmenter's encoder (``--fm-segmenter``): the loss, its
frozen segmenter, a run that trains and resumes with it, sampling without it, bad files."""

from __future__ import annotations

import shutil
import warnings

import pytest
import torch
import yaml
from typer.testing import CliRunner

from groundsynth.classes import NUM_CLASSES
from groundsynth.cli import app
from groundsynth.errors import InputError, OutputConflictError
from groundsynth.generate.checkpoint import load_checkpoint
from groundsynth.generate.conditional.losses import SegmenterFeatureLoss
from groundsynth.generate.conditional.spade import SpadeConfig, SPADEGenerator
from groundsynth.generate.data import one_hot
from groundsynth.generate.loading import load_generator
from groundsynth.generate.training import read_losses, train_generator
from tests.generate.tiny import tiny_conditional, train_config


def _train(config):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return train_generator(config, progress=False)


@pytest.fixture(scope="module")
def segmenter_file(tmp_path_factory):
    """A tiny U-Net (ResNet-18's first 3 stages) saved as a real-trained segmenter would be."""
    from groundsynth.benchmark.model import build_model, save_segmenter

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = build_model("unet", "resnet18", encoder_depth=3, decoder_width=4)
    return save_segmenter(tmp_path_factory.mktemp("seg") / "segmenter.pt", model)


def _images(seed: int) -> torch.Tensor:
    return torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(seed)) * 2 - 1


def test_loss_is_zero_on_identical_images_and_positive_otherwise(segmenter_file):
    loss = SegmenterFeatureLoss.from_file(segmenter_file).train()
    assert not loss.segmenter.training  # frozen in eval mode whatever the module's mode
    x = _images(0)
    assert loss(x, x.clone()).item() == pytest.approx(0.0, abs=1e-7)
    assert loss(x, _images(1)).item() > 0.01
    # stages 1..3 of the encoder: features, not the input pixels (stage 0)
    stages = loss.stages(x)
    assert [s.shape[-1] for s in stages] == [16, 8, 4]
    # the segmenter's own normalisation is applied: a shift of 0..1 images changes the loss
    assert loss(x, (x + 0.1).clamp(-1, 1)).item() > 0


def test_gradients_reach_the_generator_not_the_segmenter(segmenter_file):
    loss = SegmenterFeatureLoss.from_file(segmenter_file)
    gen = SPADEGenerator(SpadeConfig(width=4, max_channels=16, depth=3, z_dim=4, spade_hidden=8))
    masks = torch.randint(0, NUM_CLASSES, (2, 32, 32), generator=torch.Generator().manual_seed(0))
    fake = gen(one_hot(masks, NUM_CLASSES), torch.randn(2, 4))
    real = _images(2).requires_grad_(True)
    loss(fake, real).backward()
    grads = [p.grad for p in gen.parameters() if p.requires_grad]
    assert grads and all(g is not None for g in grads)
    assert sum(g.abs().sum().item() for g in grads) > 0
    assert real.grad is None  # the real image's features are a fixed target
    assert all(not p.requires_grad and p.grad is None for p in loss.segmenter.parameters())


def test_bad_files_are_named(tmp_path, segmenter_file):
    missing = tmp_path / "missing.pt"
    with pytest.raises(InputError, match=r"missing\.pt.*not found"):
        SegmenterFeatureLoss.from_file(missing)
    with pytest.raises(InputError, match=r"missing\.pt: file not found"):
        tiny_conditional(fm_segmenter=str(missing)).resolved(32)
    other = tmp_path / "other.pt"
    torch.save({"weight": torch.zeros(1)}, other)
    with pytest.raises(InputError, match=r"other\.pt: not a groundsynth segmenter"):
        SegmenterFeatureLoss.from_file(other)
    with pytest.raises(InputError, match=r"segmenter\.pt: .*changed"):
        SegmenterFeatureLoss.from_file(segmenter_file, sha256="0" * 64)
    with pytest.raises(InputError, match="fm_weight must be >= 0"):
        tiny_conditional(fm_segmenter=str(segmenter_file), fm_weight=-1.0)


def test_run_trains_resumes_exactly_and_samples_without_the_segmenter(
    tiny_dataset, tmp_path, segmenter_file
):
    seg = tmp_path / "segmenter.pt"
    shutil.copy(segmenter_file, seg)
    model = tiny_conditional(fm_segmenter=str(seg), fm_weight=10.0)
    straight = _train(train_config("conditional", tiny_dataset, tmp_path / "a", max_steps=4,
                                   model=model))  # fmt: skip
    _train(train_config("conditional", tiny_dataset, tmp_path / "b", max_steps=2, model=model))
    resumed = _train(
        train_config("conditional", tiny_dataset, tmp_path / "b", max_steps=4, model=model)
    )
    assert resumed.resumed_from == 2
    a, b = load_checkpoint(straight.last_checkpoint), load_checkpoint(resumed.last_checkpoint)
    for name in ("generator", "generator_ema", "discriminator"):
        for key, value in a["networks"][name].items():
            assert torch.equal(value, b["networks"][name][key]), (name, key)
    assert set(a["networks"]) == {"generator", "generator_ema", "discriminator"}  # no segmenter
    losses = read_losses(tmp_path / "a")
    assert losses == read_losses(tmp_path / "b")
    assert all(row["g_fm"] > 0 for row in losses)
    for row in losses:  # the generator's loss is the adversarial plus the weighted fm term
        assert row["g_loss"] == pytest.approx(row["g_adv"] + 10.0 * row["g_fm"], rel=1e-4)
    # the run config records the segmenter by absolute path and content
    saved = yaml.safe_load((tmp_path / "a" / "config.yaml").read_text())["model"]
    assert saved["fm_segmenter"] == str(seg.resolve()) and saved["fm_weight"] == 10.0
    assert len(saved["fm_segmenter_sha256"]) == 64
    # sampling needs no segmenter file
    seg.unlink()
    gen = load_generator(tmp_path / "a", "cpu")
    masks = torch.zeros(2, 32, 32, dtype=torch.long).numpy()
    assert gen.images([0, 1], masks).shape == (2, 32, 32, 3)
    # resuming does, and names it
    with pytest.raises(InputError, match=r"segmenter\.pt: file not found"):
        _train(train_config("conditional", tiny_dataset, tmp_path / "b", max_steps=6, model=model))
    # another segmenter file is another run
    shutil.copy(segmenter_file, seg)
    with open(seg, "ab") as fh:
        fh.write(b"\0")
    with pytest.raises(OutputConflictError, match="different options"):
        _train(train_config("conditional", tiny_dataset, tmp_path / "b", max_steps=6, model=model))


def test_cli_records_the_option_and_names_a_missing_file(tiny_dataset, tmp_path, segmenter_file):
    runner = CliRunner()
    args = ["train-generator", str(tiny_dataset), "--out", str(tmp_path / "r"), "--dry-run"]
    res = runner.invoke(app, [*args, "--fm-segmenter", str(segmenter_file), "--fm-weight", "5"])
    assert res.exit_code == 0, res.output
    assert f"fm_segmenter: {segmenter_file.resolve()}" in res.output
    assert "fm_weight: 5.0" in res.output and "fm_segmenter_sha256: " in res.output
    res = runner.invoke(app, [*args, "--fm-segmenter", str(tmp_path / "nope.pt")])
    assert res.exit_code != 0 and "nope.pt: file not found" in res.output
    assert "Traceback" not in res.output
