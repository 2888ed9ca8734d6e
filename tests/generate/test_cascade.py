"""The cascaded unconditional diffusion model: what each U-Net learns from, how it samples,
that it loads back, and that it learns."""

from __future__ import annotations

import csv
import math
import warnings

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from groundsynth.data.reader import open_dataset
from groundsynth.errors import InputError
from groundsynth.generate.cascade import CascadeUNet, cascade_losses, sample_cascade
from groundsynth.generate.checkpoint import list_checkpoints, load_checkpoint
from groundsynth.generate.conditional_diffusion import ConditionalDiffusionConfig
from groundsynth.generate.data import TrainingItems, to_model_range
from groundsynth.generate.diffusion import SCALE, SHIFT, DiffusionConfig, sample_images
from groundsynth.generate.sampling import load_generator
from groundsynth.generate.training import train_generator
from tests.generate.datasets import blocky_masks, write_dataset
from tests.generate.tiny import learning_config, tiny_diffusion, train_config


def _train(cfg) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        train_generator(cfg, progress=False)


def _cfg(**kw) -> DiffusionConfig:
    base = dict(block_out_channels=(4, 8), layers_per_block=1, attention=False,
                num_train_timesteps=20, inference_steps=3, cascade_size=8)  # fmt: skip
    base.update(kw)
    return DiffusionConfig(**base)


@pytest.mark.parametrize(
    "kw, image, match",
    [
        ({"cascade_size": 32}, 32, "must divide the image size 32 and be smaller"),
        ({"cascade_size": 12}, 32, "must divide"),
        ({"cascade_size": 4, "block_out_channels": (4, 8, 8, 8)}, 32, "cascade_size 4 is not a multiple of 8"),
    ],
)  # fmt: skip
def test_a_cascade_that_does_not_fit_the_image_is_refused(kw, image, match):
    with pytest.raises(InputError, match=match):
        _cfg(**kw).resolved(image)


def test_bad_cascade_options_are_refused():
    for kw in ({"cascade_size": 0}, {"cascade_every": 0}, {"cascade_noise": -1.0},
               {"cascade_lr": 0.0}):  # fmt: skip
        with pytest.raises(InputError):
            _cfg(**kw)
    with pytest.raises(InputError, match="unconditional diffusion kind only"):
        ConditionalDiffusionConfig(cascade_size=8)


def test_a_sample_is_the_upsampled_base_sample_plus_the_detail():
    cfg = _cfg(standardise=True)
    torch.manual_seed(0)
    net = CascadeUNet(cfg, 32).eval()
    getattr(net.base, SCALE).fill_(0.2)
    getattr(net.detail, SHIFT).copy_(torch.tensor([0.05, -0.05, 0.0]))
    getattr(net.detail, SCALE).fill_(0.01)
    seeds = [3, 4]
    out = sample_images(net, cfg, seeds, 32)  # dispatches to the cascade
    assert out.shape == (2, 3, 32, 32)
    small = sample_images(net.base, cfg, seeds, 8)
    up = F.interpolate(small, scale_factor=4, mode="bilinear", align_corners=False)
    residual = out - up  # nothing clips: the base sample stays well inside [-1, 1]
    assert small.abs().max() < 0.95 and residual.abs().max() < 0.2
    # the residual is the detail U-Net's sample (its standardisation mapped back) ...
    torch.testing.assert_close(residual.mean((0, 2, 3)), torch.tensor([0.05, -0.05, 0.0]),
                               atol=0.01, rtol=0)  # fmt: skip
    assert residual.std() > 1e-3
    # ... which depends on the base image it is conditioned on
    with torch.no_grad():
        net.base.conv_out.bias.add_(0.5)
    moved = sample_cascade(net, cfg, seeds, 32) - F.interpolate(
        sample_images(net.base, cfg, seeds, 8), scale_factor=4, mode="bilinear"
    )
    assert (moved - residual).abs().max() > 1e-4
    # a detail of scale 0 leaves the upsampled base sample
    getattr(net.detail, SHIFT).zero_()
    getattr(net.detail, SCALE).zero_()
    up = F.interpolate(sample_images(net.base, cfg, seeds, 8), scale_factor=4, mode="bilinear")
    torch.testing.assert_close(sample_cascade(net, cfg, seeds, 32), up.clamp(-1, 1))


def test_training_measures_both_standardisations_and_trains_the_detail_every_kth_step(
    tiny_dataset, tmp_path
):
    model = tiny_diffusion(standardise=True, cascade_size=8, cascade_every=2)
    cfg = train_config("diffusion", tiny_dataset, tmp_path / "run", model=model,
                       max_steps=4, checkpoint_every=4)  # fmt: skip
    _train(cfg)
    items = TrainingItems(open_dataset(tiny_dataset), "train", 32, with_masks=False)
    x = torch.stack([to_model_range(items.arrays(i, None)[0]) for i in range(len(items))]).double()
    small = F.avg_pool2d(x, 4)
    residual = x - F.interpolate(small, scale_factor=4, mode="bilinear", align_corners=False)
    payload = load_checkpoint(list_checkpoints(tmp_path / "run")[-1][1])
    for name in ("unet", "unet_ema"):
        nets = payload["networks"][name]
        for part, data in (("base", small), ("detail", residual)):
            np.testing.assert_allclose(
                nets[f"{part}.{SHIFT}"].numpy(), data.mean((0, 2, 3)), atol=1e-5
            )
            np.testing.assert_allclose(nets[f"{part}.{SCALE}"].numpy(), data.std((0, 2, 3), unbiased=False), atol=1e-5)  # fmt: skip
    assert residual.std() < 0.5 * small.std()  # two different measurements
    with open(tmp_path / "run" / "losses.csv", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    assert [r["step"] for r in rows] == ["1", "2", "3", "4"]
    assert all(float(r["loss"]) > 0 for r in rows)
    detail = [float(r["detail_loss"]) for r in rows]
    assert detail[0] > 0 and detail[2] > 0 and math.isnan(detail[1]) and math.isnan(detail[3])
    gen = load_generator(tmp_path / "run")
    assert isinstance(gen.network, CascadeUNet) and gen.network.factor == 4
    images = gen.images([1, 2, 3], None)
    assert images.shape == (3, 32, 32, 3) and images.std() > 0
    np.testing.assert_array_equal(images, gen.images([1, 2, 3], None))  # seeded


def test_a_base_only_step_leaves_the_detail_unet_alone(tiny_dataset, tmp_path):
    from groundsynth.generate.diffusion import DiffusionModule

    cfg = train_config("diffusion", tiny_dataset, tmp_path / "run",
                       model=tiny_diffusion(cascade_size=8, cascade_every=3))  # fmt: skip
    module = DiffusionModule(cfg)
    opt = module.configure_optimizers()
    assert [g["lr"] for g in opt.param_groups] == [cfg.model.lr, cfg.model.lr]
    batch = {"image": torch.rand(2, 3, 32, 32) * 2 - 1}
    gen = torch.Generator().manual_seed(0)
    for step, trains_detail in ((0, True), (1, False), (2, False), (3, True)):
        module.steps_done = step
        loss, losses = cascade_losses(module, batch, gen)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        assert all(p.grad is not None for p in module.unet.base.parameters())
        got = [p.grad is not None for p in module.unet.detail.parameters()]
        assert all(got) if trains_detail else not any(got)
        assert math.isnan(float(losses["detail_loss"].detach())) != trains_detail
    lr = DiffusionModule(train_config("diffusion", tiny_dataset, tmp_path / "r2",
                         model=tiny_diffusion(cascade_size=8, cascade_lr=0.5)))  # fmt: skip
    assert [g["lr"] for g in lr.configure_optimizers().param_groups] == [0.5, 1e-4]


def test_the_cascade_learns_the_layout_of_its_images(tmp_path):
    """Images whose left half is dark and right half light (one orientation): after 150
    steps the cascade's samples keep the two halves apart."""
    images = []
    rng = np.random.default_rng(0)
    for _ in range(16):
        im = np.zeros((32, 32, 3), np.uint8)
        im[:, :16] = (30, 60, 30)
        im[:, 16:] = (150, 190, 150)
        noise = rng.integers(-6, 7, im.shape)
        images.append(np.clip(im.astype(int) + noise, 0, 255).astype(np.uint8))
    ds = write_dataset(tmp_path / "ds", blocky_masks(16, 32, seed=0), images=images)
    model = DiffusionConfig(
        block_out_channels=(16, 16), layers_per_block=1, attention=False, norm_groups=4,
        num_train_timesteps=100, beta_schedule="squaredcos_cap_v2",
        prediction_type="v_prediction", lr=3e-3, cascade_lr=1e-3, ema_decay=0.9,
        sampler="ddim", inference_steps=10, standardise=True, cascade_size=8, cascade_every=2,
    )  # fmt: skip
    _train(learning_config("diffusion", ds, tmp_path / "run", 150, model))
    out = load_generator(tmp_path / "run").images(list(range(100, 116)), None)
    green = out[..., 1].astype(np.float64)
    left, right = green[:, :, :16].mean((1, 2)), green[:, :, 16:].mean((1, 2))
    assert (right - left).min() > 60, (left, right)  # the data: 130
    assert abs(left.mean() - 60) < 25 and abs(right.mean() - 190) < 25, (left, right)


def test_each_unet_s_average_follows_its_own_updates(tiny_dataset, tmp_path):
    from groundsynth.generate.cascade import update_cascade_ema
    from groundsynth.generate.diffusion import DiffusionModule
    from groundsynth.generate.ema import ema_decay_at

    model = tiny_diffusion(cascade_size=8, cascade_every=3, ema_decay=0.99)
    module = DiffusionModule(train_config("diffusion", tiny_dataset, tmp_path / "r", model=model))

    def first(net):
        return next(net.parameters())

    with torch.no_grad():
        for p in module.unet.parameters():
            p.add_(1.0)  # the live weights moved away from their average
    before = {k: first(getattr(module.unet_ema, k)).clone() for k in ("base", "detail")}
    module.steps_done = 4  # a base-only step
    update_cascade_ema(module)
    d = ema_decay_at(0.99, 4)
    live_base = first(module.unet.base)
    torch.testing.assert_close(
        first(module.unet_ema.base), d * before["base"] + (1 - d) * live_base
    )
    torch.testing.assert_close(first(module.unet_ema.detail), before["detail"])
    module.steps_done = 6  # the detail's third update (steps 0, 3, 6): decay of 2 updates
    update_cascade_ema(module)
    d = ema_decay_at(0.99, 2)
    expected = d * before["detail"] + (1 - d) * first(module.unet.detail)
    torch.testing.assert_close(first(module.unet_ema.detail), expected)
