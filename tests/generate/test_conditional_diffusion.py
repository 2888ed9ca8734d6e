"""conditional-diffusion: config, run directory, generate, classifier-free guidance, learning."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

from groundsynth.benchmark.metrics import confusion_update, metrics_from_confusion
from groundsynth.classes import COLOURS, NUM_CLASSES
from groundsynth.data.reader import open_dataset
from groundsynth.data.validate import validate_dataset
from groundsynth.errors import InputError
from groundsynth.evaluate.pixel_floor import fit_floor
from groundsynth.generate.checkpoint import list_checkpoints, load_checkpoint
from groundsynth.generate.conditional_diffusion import (
    ConditionalDiffusionConfig,
    guided_denoiser,
)
from groundsynth.generate.config import TrainConfig
from groundsynth.generate.data import one_hot, to_uint8
from groundsynth.generate.diffusion import sample_images
from groundsynth.generate.layouts import LayoutConfig
from groundsynth.generate.sampling import GenerateConfig, generate_dataset, load_generator
from groundsynth.generate.training import train_generator
from groundsynth.generate.writer import MASK_FROM_MAP
from groundsynth.runs import to_plain
from tests.generate.datasets import blocky_masks, write_dataset
from tests.generate.tiny import learning_config, tiny_diffusion, train_config


def _maps(n: int, seed: int = 5) -> np.ndarray:
    return np.stack(blocky_masks(n, 32, seed=seed, grid=4))


# ----------------------------------------------------------------------------- config
def test_config_validation_names_the_value(tiny_dataset, tmp_path):
    for bad in (1.0, -0.1):
        with pytest.raises(InputError, match="map_dropout"):
            ConditionalDiffusionConfig(map_dropout=bad)
    with pytest.raises(InputError, match="guidance must be >= 0"):
        ConditionalDiffusionConfig(guidance=-1.0)
    with pytest.raises(InputError, match="sharpness"):
        ConditionalDiffusionConfig.from_dict({"map_dropout": 0.2, "sharpness": 3})
    cfg = ConditionalDiffusionConfig.from_dict({"map_dropout": 0.0, "guidance": 0.0})
    assert (cfg.map_dropout, cfg.guidance) == (0.0, 0.0)
    with pytest.raises(InputError, match="ConditionalDiffusionConfig"):
        train_config("conditional-diffusion", tiny_dataset, tmp_path, model=tiny_diffusion())
    with pytest.raises(InputError, match="--guidance must be >= 0"):
        GenerateConfig(model="m", out="o", n=1, guidance=-0.5)
    # the resolved config round-trips through the plain dict saved in checkpoints
    config = train_config("conditional-diffusion", tiny_dataset, tmp_path).resolved()
    plain = yaml.safe_load(yaml.safe_dump(to_plain(config)))
    assert TrainConfig.from_dict(plain) == config


# ----------------------------------------------------------------------------- run, generate
def test_run_directory_and_grid(conditional_diffusion_run, tiny_dataset):
    payload = load_checkpoint(list_checkpoints(conditional_diffusion_run)[-1][1])
    assert payload["kind"] == "conditional-diffusion" and payload["step"] == 2
    assert set(payload["networks"]) == {"unet", "unet_ema"}
    assert payload["networks"]["unet"]["conv_in.weight"].shape[1] == 3 + NUM_CLASSES
    assert payload["config"]["model"]["map_dropout"] == 0.1
    grid = np.asarray(Image.open(conditional_diffusion_run / "samples" / "step00000002.png"))
    assert grid.shape == (2 * 32, 5 * 32, 3)  # rows: map | real | 3 generated
    reader = open_dataset(tiny_dataset)
    first = reader.ids("train")[0]
    assert np.array_equal(grid[:32, :32], COLOURS[reader.read_mask("train", first)])
    assert np.array_equal(grid[:32, 32:64], reader.read_image("train", first))


def test_generate_paints_the_layouts(conditional_diffusion_run, tiny_dataset, tmp_path):
    out = tmp_path / "synth"
    res = generate_dataset(
        GenerateConfig(
            model=str(conditional_diffusion_run),
            out=str(out),
            n=3,
            batch_size=2,
            guidance=1.5,
            sampler="ddim",
        )
    )
    assert res.written == 3 and res.origin == "conditional-diffusion:cdiff@step2"
    assert validate_dataset(out).ok
    real, synth = open_dataset(tiny_dataset), open_dataset(out)
    meta = synth.metadata("synth")
    assert (meta["origin"] == res.origin).all() and (meta["mask_origin"] == MASK_FROM_MAP).all()
    assert (meta["layout"] == "train-masks").all()
    for i, sid in enumerate(synth.ids("synth")):  # masks are the layouts painted
        truth = real.read_mask("train", real.ids("train")[i])
        assert np.array_equal(synth.read_mask("synth", sid), truth)
        assert synth.read_image("synth", sid).shape == (32, 32, 3)
    config = yaml.safe_load((out / "config.yaml").read_text())
    assert (config["guidance"], config["sampler"], config["steps"]) == (1.5, "ddim", 2)
    assert res.manifest["outputs"]["guidance"] == 1.5
    # the model's default guidance when none is given; --target layouts work as for SPADE
    res = generate_dataset(
        GenerateConfig(
            model=str(conditional_diffusion_run),
            out=str(tmp_path / "target"),
            n=2,
            layouts=LayoutConfig(strategy="target", target="Crop>=0.25"),
        )
    )
    assert res.manifest["outputs"]["guidance"] == 1.0
    assert (open_dataset(tmp_path / "target").metadata("synth")["frac_Crop"] >= 0.25).all()


def test_guidance_is_refused_by_other_kinds(conditional_run, diffusion_run, tmp_path):
    for run in (conditional_run, diffusion_run):
        config = GenerateConfig(model=str(run), out=str(tmp_path / "x"), n=1, guidance=2.0)
        with pytest.raises(InputError, match="--guidance is for conditional-diffusion"):
            config.resolved(load_generator(run))


def test_a_sample_depends_on_its_seed_only(conditional_diffusion_run):
    gen = load_generator(conditional_diffusion_run)
    maps = _maps(3)
    a = gen.images([7, 8, 9], maps).astype(int)
    b = gen.images([9], maps[2:]).astype(int)
    assert np.abs(a[2] - b[0]).max() <= 1  # batch changes rounding only
    assert np.array_equal(a, gen.images([7, 8, 9], maps))
    with pytest.raises(InputError, match="one mask per seed"):
        gen.images([1, 2], maps[:1])


# ----------------------------------------------------------------------------- guidance
def test_guidance_combines_the_conditional_and_unconditional_passes(conditional_diffusion_run):
    net = load_generator(conditional_diffusion_run).network
    onehot = one_hot(torch.from_numpy(_maps(2)), NUM_CLASSES)
    x = torch.randn((2, 3, 32, 32), generator=torch.Generator().manual_seed(0))
    t = torch.tensor(7)
    with torch.no_grad():
        cond = net(torch.cat([x, onehot], 1), t).sample
        uncond = net(torch.cat([x, torch.zeros_like(onehot)], 1), t).sample
        assert torch.equal(guided_denoiser(net, onehot, 1.0)(x, t), cond)
        assert torch.equal(guided_denoiser(net, onehot, 0.0)(x, t), uncond)
        guided = guided_denoiser(net, onehot, 3.0)(x, t)
    assert torch.allclose(guided, uncond + 3.0 * (cond - uncond), atol=1e-5)
    assert not torch.allclose(cond, uncond, atol=1e-4)  # the map reaches the network


def test_guidance_one_is_one_conditional_pass(conditional_diffusion_run):
    gen = load_generator(conditional_diffusion_run)
    net, cfg = gen.network, gen.train_config.model
    maps = _maps(2)
    onehot = one_hot(torch.from_numpy(maps), NUM_CLASSES)
    batches: list[int] = []
    hook = net.register_forward_hook(lambda m, args, out: batches.append(len(args[0])))
    try:
        images = gen.images([3, 4], maps, guidance=1.0)
        assert batches == [2] * cfg.inference_steps  # one pass of the batch per step
        batches.clear()
        gen.images([3, 4], maps, guidance=2.0)
        assert batches == [4] * cfg.inference_steps  # conditional and unconditional together
    finally:
        hook.remove()
    cond_only = sample_images(
        net, cfg, [3, 4], 32, denoise=lambda x, t: net(torch.cat([x, onehot], 1), t).sample
    )
    assert np.array_equal(images, to_uint8(cond_only))


def test_guidance_zero_ignores_the_map_and_one_follows_it(conditional_diffusion_run):
    gen = load_generator(conditional_diffusion_run)
    a, b = _maps(1, seed=1), _maps(1, seed=2)
    assert not np.array_equal(a, b)
    # unconditional pass: the map does not matter, and it is the zeroed-map pass
    assert np.array_equal(gen.images([5], a, guidance=0.0), gen.images([5], b, guidance=0.0))
    # conditional: same seed, two maps, two images
    assert not np.array_equal(gen.images([5], a), gen.images([5], b))


# ----------------------------------------------------------------------------- it learns
@pytest.mark.slow
def test_conditional_diffusion_learns_to_paint_its_maps(tmp_path):
    """Four 32 px maps of 8 px class blocks, images = class colours + noise. After 200 steps
    the samples, read back by the pixel floor fitted on the training set, follow the map they
    were painted from (pixel accuracy and mIoU), not a different map -- it is not painting an
    average -- and the unconditional pass (guidance 0) does not follow it."""
    masks = blocky_masks(4, 32, seed=1, grid=4)
    write_dataset(tmp_path / "ds", masks)
    model = ConditionalDiffusionConfig(
        block_out_channels=(16, 16),
        layers_per_block=1,
        attention=False,
        num_train_timesteps=100,
        beta_schedule="squaredcos_cap_v2",  # linear betas over 100 steps end far from noise
        prediction_type="v_prediction",
        lr=3e-3,
        ema_decay=0.9,
        sampler="ddim",
        inference_steps=10,
        map_dropout=0.1,
    )
    cfg = learning_config("conditional-diffusion", tmp_path / "ds", tmp_path / "run", 200, model)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        train_generator(cfg, progress=False)
    gen = load_generator(tmp_path / "run", "cpu")
    floor = fit_floor(tmp_path / "ds")
    truth = np.stack(masks)
    other = truth[[1, 2, 3, 0]]
    read_back = floor.predict(gen.images([11, 12, 13, 14], truth))
    agreement = (read_back == truth).mean()
    other_map = (read_back == other).mean()
    miou = metrics_from_confusion(confusion_update(read_back, truth))["iou"]
    assert agreement > 0.75, agreement
    assert miou > 0.6, miou
    assert agreement - other_map > 0.5, (agreement, other_map)
    unconditional = floor.predict(gen.images([11, 12, 13, 14], truth, guidance=0.0))
    assert (unconditional == truth).mean() < 0.35
