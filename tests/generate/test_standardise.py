"""Diffusion's standardisation: measured on what is diffused, kept, mapped back, and why."""

from __future__ import annotations

import copy
import warnings

import numpy as np
import torch

from groundsynth.data.reader import open_dataset
from groundsynth.generate.checkpoint import list_checkpoints, load_checkpoint
from groundsynth.generate.conditional_diffusion import class_mean_image, mean_colours
from groundsynth.generate.data import TrainingItems, to_model_range
from groundsynth.generate.diffusion import (
    SCALE,
    SHIFT,
    DiffusionConfig,
    build_unet,
    sample_images,
)
from groundsynth.generate.sampling import load_generator
from groundsynth.generate.training import train_generator
from tests.generate.datasets import blocky_masks, write_dataset
from tests.generate.tiny import (
    learning_config,
    tiny_conditional_diffusion,
    tiny_diffusion,
    train_config,
)


def _train(cfg) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        train_generator(cfg, progress=False)


def _items(dataset, size=32):
    items = TrainingItems(open_dataset(dataset), "train", size, with_masks=True)
    return [items.arrays(i, None) for i in range(len(items))]


def _channel_stats(images: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    x = np.concatenate([im.reshape(-1, 3) for im in images]).astype(np.float64)
    return x.mean(0), x.std(0)


def test_the_standardisation_is_measured_kept_and_restored(tiny_dataset, tmp_path):
    cfg = train_config(
        "diffusion", tiny_dataset, tmp_path / "run", model=tiny_diffusion(standardise=True)
    )
    _train(cfg)
    images = [to_model_range(im).numpy().transpose(1, 2, 0) for im, _ in _items(tiny_dataset)]
    mean, std = _channel_stats(images)
    assert std.min() > 0.05 and np.ptp(mean) > 0.01  # channels that differ: a real check
    payload = load_checkpoint(list_checkpoints(tmp_path / "run")[-1][1])
    for net in ("unet", "unet_ema"):
        np.testing.assert_allclose(payload["networks"][net][SHIFT].numpy(), mean, atol=1e-5)
        np.testing.assert_allclose(payload["networks"][net][SCALE].numpy(), std, atol=1e-5)
    gen = load_generator(tmp_path / "run")
    np.testing.assert_allclose(getattr(gen.network, SCALE).numpy(), std, atol=1e-5)
    # without the option there are no such buffers (older checkpoints load as before)
    _train(train_config("diffusion", tiny_dataset, tmp_path / "plain"))
    assert not hasattr(load_generator(tmp_path / "plain").network, SHIFT)


def test_with_a_prior_the_residual_is_standardised(tiny_dataset, tmp_path):
    model = tiny_conditional_diffusion(mean_prior=True, standardise=True)
    _train(train_config("conditional-diffusion", tiny_dataset, tmp_path / "run", model=model))
    pairs = _items(tiny_dataset)
    colours = mean_colours(pairs)
    residuals = []
    for image, mask in pairs:
        prior = class_mean_image(colours, torch.from_numpy(mask.astype(np.int64))[None])[0]
        residuals.append((to_model_range(image) - prior).numpy().transpose(1, 2, 0))
    mean, std = _channel_stats(residuals)
    net = load_generator(tmp_path / "run").network
    np.testing.assert_allclose(getattr(net, SHIFT).numpy(), mean, atol=1e-5)
    np.testing.assert_allclose(getattr(net, SCALE).numpy(), std, atol=1e-5)
    assert abs(mean).max() < 1e-3  # the class means take the mean out: residuals centre on 0


def test_samples_are_mapped_back_to_the_image_scale():
    cfg = DiffusionConfig(block_out_channels=(4, 8), layers_per_block=1, attention=False,
                          num_train_timesteps=20, inference_steps=3, standardise=True)  # fmt: skip
    torch.manual_seed(0)
    unet = build_unet(cfg, 16).eval()
    other = copy.deepcopy(unet)
    getattr(unet, SCALE).fill_(0.01)  # small enough that nothing is clipped
    getattr(other, SHIFT).copy_(torch.tensor([0.3, -0.2, 0.1]))
    getattr(other, SCALE).fill_(0.02)
    a = sample_images(unet, cfg, [1, 2], 16)
    b = sample_images(other, cfg, [1, 2], 16)
    assert a.std() > 1e-3
    shift = torch.tensor([0.3, -0.2, 0.1]).view(1, 3, 1, 1)
    torch.testing.assert_close(b, 2 * a + shift, atol=1e-5, rtol=1e-4)
    plain = DiffusionConfig(**{**cfg.__dict__, "standardise": False})
    raw = build_unet(plain, 16).eval()
    raw.load_state_dict({k: v for k, v in unet.state_dict().items() if k not in (SHIFT, SCALE)})
    torch.testing.assert_close(sample_images(raw, plain, [1, 2], 16), (100 * a).clamp(-1, 1),
                               atol=1e-3, rtol=1e-3)  # fmt: skip


LR = 1e-3
MODES = (60, 95)  # green levels of the two flat colours


def _off_mode(tmp_path, name: str, standardise: bool, steps: int = 100) -> float:
    """Mean distance (grey levels) of each sample's green level to the nearer of the two
    colours of a dataset of flat images (dark or light green; std 0.14 in [-1, 1]): 0 when
    the samples are the data's colours, 17.5 for a blend of both."""
    rng = np.random.default_rng(0)
    levels = rng.choice(MODES, size=16)
    images = [np.full((32, 32, 3), (lv // 2, lv, lv // 2), np.uint8) for lv in levels]
    ds = tmp_path / "ds"
    if not ds.exists():
        write_dataset(ds, blocky_masks(16, 32, seed=0), images=images)
    model = DiffusionConfig(
        block_out_channels=(16, 16), layers_per_block=1, attention=False, norm_groups=4,
        num_train_timesteps=100, beta_schedule="squaredcos_cap_v2",
        prediction_type="v_prediction", lr=LR, ema_decay=0.9, sampler="ddim",
        inference_steps=10, standardise=standardise,
    )  # fmt: skip
    _train(learning_config("diffusion", ds, tmp_path / name, steps, model))
    gen = load_generator(tmp_path / name, "cpu")
    green = gen.images(list(range(100, 132)), None)[..., 1].astype(np.float64).mean((1, 2))
    return float(np.abs(green[:, None] - np.array(MODES)[None]).min(1).mean())


def test_standardised_diffusion_learns_the_colours_an_unscaled_one_blends(tmp_path):
    """After 100 steps the standardised model samples the data's two colours; the unscaled
    one paints blends of them."""
    scaled = _off_mode(tmp_path, "scaled", True)
    unscaled = _off_mode(tmp_path, "unscaled", False)
    assert scaled < 5, scaled  # measured: 3.6 (unscaled: 10.3)
    assert unscaled > 2 * scaled, (unscaled, scaled)
