"""Conditional generator networks and losses: shapes, seeds, class balancing, VGG loading."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from groundsynth.classes import NUM_CLASSES
from groundsynth.errors import InputError
from groundsynth.generate.conditional.config import ConditionalConfig
from groundsynth.generate.conditional.discriminators import get_discriminator, list_discriminators
from groundsynth.generate.conditional.losses import (
    VGGPerceptualLoss,
    class_balance_weights,
    get_adversarial_loss,
    hinge_d_loss,
    load_vgg19_features,
    oasis_d_loss,
    oasis_g_loss,
)
from groundsynth.generate.conditional.spade import SpadeConfig, SPADEGenerator, stage_channels
from groundsynth.generate.data import one_hot
from groundsynth.generate.ema import make_ema, update_ema

TINY = SpadeConfig(width=4, max_channels=16, depth=3, z_dim=4, spade_hidden=8)


def _onehot(b: int, size: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return one_hot(torch.randint(0, NUM_CLASSES, (b, size, size), generator=g), NUM_CLASSES)


@pytest.mark.parametrize("size", [32, 64])
def test_generator_shapes_and_range(size):
    g = SPADEGenerator(TINY).eval()
    out = g(_onehot(2, size), torch.randn(2, 4))
    assert out.shape == (2, 3, size, size)
    assert out.abs().max() <= 1
    # a noise map (per-pixel noise) works too
    assert g(_onehot(1, size), torch.randn(1, 4, size, size)).shape == (1, 3, size, size)


def test_default_generator_accepts_multiples_of_32():
    cfg = SpadeConfig(width=2, max_channels=4, spade_hidden=4, z_dim=2)
    cfg.check_size(96)
    assert stage_channels(cfg) == [4, 4, 4, 4, 4, 2]
    with pytest.raises(InputError, match="multiple of 32"):
        cfg.check_size(48)
    with pytest.raises(InputError, match="multiples of 32"):
        SPADEGenerator(cfg)(_onehot(1, 48), torch.randn(1, 2))


def test_noise_varies_images_and_no_noise_is_deterministic():
    g = SPADEGenerator(TINY).eval()
    onehot = _onehot(1, 32)
    a, b = g(onehot, torch.randn(1, 4)), g(onehot, torch.randn(1, 4))
    assert not torch.allclose(a, b)
    g0 = SPADEGenerator(SpadeConfig(width=4, max_channels=8, depth=3, z_dim=0, spade_hidden=4))
    g0.eval()
    assert torch.equal(g0(onehot), g0(onehot))


def test_init_is_deterministic_by_seed():
    from groundsynth.generate.conditional.module import ConditionalGAN
    from tests.generate.tiny import train_config

    def weights(seed):
        m = ConditionalGAN(train_config("conditional", "ds", "out", seed=seed).resolved())
        return torch.cat([p.detach().flatten() for p in m.generator.parameters()])

    assert torch.equal(weights(1), weights(1))
    assert not torch.equal(weights(1), weights(2))


def test_discriminator_shapes():
    image = torch.rand(2, 3, 32, 32) * 2 - 1
    onehot = _onehot(2, 32)
    unet = get_discriminator("unet")(NUM_CLASSES, width=4, depth=3, max_channels=16)
    assert unet(image).shape == (2, NUM_CLASSES + 1, 32, 32)
    patch = get_discriminator("patchgan")(NUM_CLASSES, width=4, depth=3, max_channels=16)
    out = patch(image, onehot)
    assert out.shape[:2] == (2, 1) and out.shape[-1] < 32
    assert list_discriminators() == ["unet", "patchgan"]
    with pytest.raises(InputError, match="unet, patchgan"):
        get_discriminator("stylegan")


def test_class_balance_weights_give_each_present_class_equal_weight():
    mask = torch.zeros(1, 8, 8, dtype=torch.long)
    mask[0, :2] = 1  # class 1 on 16 pixels, class 0 on 48
    w = class_balance_weights(one_hot(mask, NUM_CLASSES))
    assert w.mean().item() == pytest.approx(1.0)
    assert w[mask == 1].sum().item() == pytest.approx(w[mask == 0].sum().item())


def test_adversarial_losses():
    onehot = _onehot(2, 8)
    labels = onehot.argmax(1)
    good = torch.nn.functional.one_hot(labels, NUM_CLASSES + 1).permute(0, 3, 1, 2).float() * 20
    fake_target = torch.zeros(2, NUM_CLASSES + 1, 8, 8)
    fake_target[:, NUM_CLASSES] = 20
    # a discriminator that segments real images and calls fakes fake has a near-zero loss
    assert oasis_d_loss(good, fake_target, onehot).item() < 1e-3
    assert oasis_d_loss(fake_target, good, onehot).item() > 10
    # the generator's loss is low when its pixels are classified as their map class
    assert oasis_g_loss(good, onehot).item() < 1e-3
    assert hinge_d_loss(torch.full((2, 1, 3, 3), 2.0), torch.full((2, 1, 3, 3), -2.0), onehot) == 0
    with pytest.raises(InputError, match="hinge, oasis"):
        get_adversarial_loss("wgan")


def test_config_checks_loss_and_discriminator():
    assert ConditionalConfig().adversarial_loss == "oasis"
    assert ConditionalConfig(discriminator="patchgan").adversarial_loss == "hinge"
    with pytest.raises(InputError, match="unet discriminator"):
        ConditionalConfig(discriminator="patchgan", loss="oasis")
    assert ConditionalConfig(generator=TINY).resolved(32).d_depth == 3


def test_vgg_loss_from_local_weights_only(tmp_path):
    import torchvision

    features = torchvision.models.vgg.make_layers(torchvision.models.vgg.cfgs["E"])
    path = tmp_path / "vgg19.pth"
    torch.save({f"features.{k}": v for k, v in features.state_dict().items()}, path)
    loaded = load_vgg19_features(path)
    assert torch.equal(loaded[0].weight, features[0].weight)
    loss = VGGPerceptualLoss(loaded)
    x = torch.rand(1, 3, 32, 32) * 2 - 1
    assert loss(x, x).item() == pytest.approx(0.0, abs=1e-6)
    fake = x.clone().requires_grad_(True)
    value = loss(fake, torch.zeros_like(x))
    value.backward()
    assert value.item() > 0 and fake.grad is not None
    assert not any(p.requires_grad for p in loss.features.parameters())
    with pytest.raises(InputError, match="not found"):
        load_vgg19_features(tmp_path / "missing.pth")
    torch.save({"conv.weight": torch.zeros(1)}, tmp_path / "other.pth")
    with pytest.raises(InputError, match="not VGG19"):
        load_vgg19_features(tmp_path / "other.pth")


def test_ema_tracks_weights_and_copies_buffers():
    g = SPADEGenerator(TINY)
    ema = make_ema(g)
    assert not ema.training and not any(p.requires_grad for p in ema.parameters())
    with torch.no_grad():
        for p in g.parameters():
            p.add_(1.0)
    g(_onehot(2, 32), torch.randn(2, 4))  # updates batch-norm statistics
    before = [p.clone() for p in ema.parameters()]
    update_ema(ema, g, decay=0.75)
    for b, e, live in zip(before, ema.parameters(), g.parameters()):
        assert torch.allclose(e, 0.75 * b + 0.25 * live)
    for e, live in zip(ema.buffers(), g.buffers()):
        assert torch.equal(e, live)


def test_ema_decay_warms_up_with_the_step_count():
    from groundsynth.generate.ema import ema_decay_at

    assert ema_decay_at(0.999, 0) == pytest.approx(0.1)
    assert ema_decay_at(0.999, 8) == pytest.approx(0.5)
    assert ema_decay_at(0.999, 80) == pytest.approx(0.9)
    assert ema_decay_at(0.999, 10**6) == 0.999  # capped at the configured decay
    assert ema_decay_at(0.0, 5) == 0.0
    with pytest.raises(ValueError):
        ema_decay_at(0.9, -1)
    # after 200 steps the average holds little of the initial weights: the product of the
    # decays, i.e. the initial weights' share, is (1*2*...*200)/(10*11*...*209) ~ 1e-14
    share = np.prod([ema_decay_at(0.999, t) for t in range(200)])
    assert share < 1e-6
    # without warm-up (the old behaviour) it would be 0.999**200 = 0.82
    assert 0.999**200 > 0.8


def test_training_uses_the_warmed_up_decay(tiny_dataset, tmp_path):
    """After 2 steps with ema_decay 0.999, the EMA is near the live weights (warm-up), not
    near the initialisation (0.999**2 of it)."""
    from groundsynth.generate.checkpoint import load_checkpoint
    from groundsynth.generate.training import train_generator
    from tests.generate.tiny import tiny_conditional, train_config

    cfg = train_config(
        "conditional", tiny_dataset, tmp_path / "r", model=tiny_conditional(ema_decay=0.999)
    )
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        res = train_generator(cfg, progress=False)
    nets = load_checkpoint(res.last_checkpoint)["networks"]
    key = next(k for k, v in nets["generator"].items() if v.is_floating_point() and v.ndim > 1)
    live, ema = nets["generator"][key], nets["generator_ema"][key]
    torch.manual_seed(cfg.seed)  # the initial weights: the generator as built with the seed
    from groundsynth.generate.conditional.module import ConditionalGAN

    init = ConditionalGAN(cfg.resolved()).generator.state_dict()[key]
    # decays 0.1 then 2/11: ema = init*0.1*2/11 + ... -> within 2 % of init's share
    dist_live = (ema - live).norm() / (init - live).norm()
    assert dist_live < 0.2, float(dist_live)
