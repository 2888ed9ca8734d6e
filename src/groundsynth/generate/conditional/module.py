"""Lightning module of the conditional GAN: SPADE generator vs. U-Net or PatchGAN discriminator.

One step (manual optimisation): the discriminator learns on a real and a generated batch,
then the generator learns against it (adversarial loss, plus the VGG perceptual, segmenter
feature-matching and L1 losses when enabled), then the generator's EMA is updated. Noise comes
from the step's seeded generator (see :class:`~groundsynth.generate.module.GeneratorModule`).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from groundsynth.classes import NUM_CLASSES
from groundsynth.data.masks import colourise
from groundsynth.generate.conditional.config import ConditionalConfig
from groundsynth.generate.conditional.discriminators import get_discriminator
from groundsynth.generate.conditional.losses import (
    SegmenterFeatureLoss,
    VGGPerceptualLoss,
    get_adversarial_loss,
)
from groundsynth.generate.conditional.spade import SPADEGenerator
from groundsynth.generate.config import TrainConfig
from groundsynth.generate.data import one_hot, to_model_range, to_uint8
from groundsynth.generate.ema import ema_decay_at, make_ema, update_ema
from groundsynth.generate.module import GeneratorModule
from groundsynth.generate.seeds import derive_seed

__all__ = ["ConditionalGAN", "build_generator", "sample_noise"]

#: generated images per training sample in a sample grid
GRID_SAMPLES = 3


def build_generator(model: ConditionalConfig) -> SPADEGenerator:
    """The SPADE generator of a (resolved) conditional config."""
    return SPADEGenerator(model.generator, NUM_CLASSES)


def sample_noise(z_dim: int, seeds: list[int], device: Any) -> torch.Tensor | None:
    """(B, z_dim) noise, one vector per seed, drawn on the CPU so that a sample's noise does
    not depend on the device or on the batch it is in. ``None`` when ``z_dim`` is 0."""
    if z_dim == 0:
        return None
    rows = [torch.randn(z_dim, generator=torch.Generator().manual_seed(int(s))) for s in seeds]
    return torch.stack(rows).to(device)


class ConditionalGAN(GeneratorModule):
    """The grounded generator's training module."""

    kind = "conditional"
    loss_names = ("g_loss", "d_loss", "g_adv", "g_vgg", "g_l1", "d_real", "d_fake")

    def __init__(self, config: TrainConfig) -> None:
        super().__init__(config)
        model: ConditionalConfig = config.model
        self.model_cfg = model
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(config.seed)
            self.generator = build_generator(model)
            d_cls = get_discriminator(model.discriminator)
            self.discriminator = d_cls(
                NUM_CLASSES,
                width=model.d_width,
                depth=model.d_depth,
                max_channels=model.d_max_channels,
            )
        self.generator_ema = make_ema(self.generator)
        self.d_loss_fn, self.g_loss_fn = get_adversarial_loss(model.adversarial_loss)
        self.vgg: nn.Module | None = None
        if model.vgg_weights and model.vgg_weight > 0:
            self.vgg = VGGPerceptualLoss.from_file(model.vgg_weights)
        self.fm: nn.Module | None = None
        if model.fm_segmenter and model.fm_weight > 0:
            self.fm = SegmenterFeatureLoss.from_file(model.fm_segmenter, model.fm_segmenter_sha256)
            # its column only when on: losses.csv of runs without it keeps its columns
            self.loss_names = (*self.loss_names, "g_fm")

    def networks(self) -> dict[str, nn.Module]:
        return {
            "generator": self.generator,
            "generator_ema": self.generator_ema,
            "discriminator": self.discriminator,
        }

    def optimizer_names(self) -> tuple[str, ...]:
        return ("generator", "discriminator")

    def configure_optimizers(self) -> list[torch.optim.Optimizer]:
        m = self.model_cfg
        betas = (m.beta1, m.beta2)
        return [
            torch.optim.Adam(self.generator.parameters(), lr=m.lr_g, betas=betas),
            torch.optim.Adam(self.discriminator.parameters(), lr=m.lr_d, betas=betas),
        ]

    def _noise(self, batch: int, gen: torch.Generator) -> torch.Tensor | None:
        z_dim = self.model_cfg.generator.z_dim
        return self.noise_like((batch, z_dim), gen) if z_dim else None

    def _discriminate(self, image: torch.Tensor, onehot: torch.Tensor) -> torch.Tensor:
        return self.discriminator(image, onehot)

    def train_step(self, batch: dict[str, torch.Tensor], gen: torch.Generator) -> dict[str, Any]:
        m = self.model_cfg
        real = batch["image"]
        onehot = one_hot(batch["mask"], NUM_CLASSES, real.dtype)
        if self.use_channels_last:
            onehot = onehot.contiguous(memory_format=torch.channels_last)
        opt_g, opt_d = self.optimizers()
        b = real.shape[0]

        # --- discriminator
        self.toggle_optimizer(opt_d)
        with torch.no_grad():
            fake = self.generator(onehot, self._noise(b, gen))
        d_real_out = self._discriminate(real, onehot)
        d_fake_out = self._discriminate(fake.detach(), onehot)
        d_loss = self.d_loss_fn(d_real_out, d_fake_out, onehot)
        opt_d.zero_grad(set_to_none=True)
        self.manual_backward(d_loss)
        opt_d.step()
        self.untoggle_optimizer(opt_d)

        # --- generator
        self.toggle_optimizer(opt_g)
        fake = self.generator(onehot, self._noise(b, gen))
        g_adv = self.g_loss_fn(self._discriminate(fake, onehot), onehot)
        g_loss = m.adversarial_weight * g_adv
        zero = g_adv.detach() * 0
        g_vgg = zero
        if self.vgg is not None:
            g_vgg = self.vgg(fake.float(), real.float())
            g_loss = g_loss + m.vgg_weight * g_vgg
        g_fm = zero
        if self.fm is not None:
            g_fm = self.fm(fake.float(), real.float())
            g_loss = g_loss + m.fm_weight * g_fm
        g_l1 = zero
        if m.l1_weight > 0:
            g_l1 = F.l1_loss(fake.float(), real.float())
            g_loss = g_loss + m.l1_weight * g_l1
        opt_g.zero_grad(set_to_none=True)
        self.manual_backward(g_loss)
        opt_g.step()
        self.untoggle_optimizer(opt_g)
        update_ema(self.generator_ema, self.generator, ema_decay_at(m.ema_decay, self.steps_done))

        with torch.no_grad():
            d_real = d_real_out.float().mean()
            d_fake = d_fake_out.float().mean()
        losses = {
            "g_loss": g_loss.detach(),
            "d_loss": d_loss.detach(),
            "g_adv": g_adv.detach(),
            "g_vgg": g_vgg.detach(),
            "g_l1": g_l1.detach(),
            "d_real": d_real,
            "d_fake": d_fake,
        }
        if self.fm is not None:
            losses["g_fm"] = g_fm.detach()
        return losses

    @torch.no_grad()
    def grid_rows(self, rows: list[tuple[np.ndarray, np.ndarray | None]]) -> list[np.ndarray]:
        """Per training sample: map | real | ``GRID_SAMPLES`` generated images (EMA weights)."""
        out = []
        for r, (image, mask) in enumerate(rows):
            if mask is None:
                continue
            masks = torch.from_numpy(np.repeat(mask[None], GRID_SAMPLES, 0)).to(self.device)
            onehot = one_hot(masks, NUM_CLASSES)
            seeds = [derive_seed(self.config.seed, "grid", r, j) for j in range(GRID_SAMPLES)]
            z = sample_noise(self.model_cfg.generator.z_dim, seeds, self.device)
            fakes = to_uint8(self.generator_ema(onehot, z))
            real = to_uint8(to_model_range(image)[None])[0]
            out.append(np.concatenate([colourise(mask), real, *fakes], axis=1))
        return out
