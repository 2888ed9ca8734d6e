"""Cascaded unconditional diffusion: a base U-Net at a low resolution, a second U-Net at the
patch size for the detail (Ho et al., 2021, "Cascaded diffusion models for high fidelity
image generation"). ``DiffusionConfig.cascade_size`` turns it on for the ``diffusion`` kind.

Why: at small budgets one U-Net at the patch size learns the colours of a region long before
its layout. On the demo's region A (64 px patches, one CPU thread), scored by the demo's FD
check (segmenter features; one real-halves split: 0.61), one 64 px U-Net of 150 steps
sampled at 4.93 (104 s), uniform green-tan texture; a cascade of a 16 px base (1050 steps)
and the same 64 px U-Net trained every 7th step at 3.28 (181 s), with dark-green and tan
patches (``benchmarks/ungrounded_cascade.py``). The base learns the layout at a size where
a step costs little; the detail U-Net has only the residual to learn.
It plays for the ungrounded model the part the map's class-mean colours (``mean_prior``)
play for the grounded one: the detail U-Net has the grounded U-Net's widths and schedule
(the demo gives the cascade 4 GroupNorm groups, the grounded U-Net 16), its condition
channels the upsampled base image instead of the one-hot map.

Training, every step: the batch is area-downsampled by ``factor`` (patch size over
``cascade_size``) and the base U-Net takes a DDPM step on it; on every ``cascade_every``-th
step the detail U-Net also takes one, on the residual ``x - up(down(x))`` conditioned on
``up(down(x))`` plus Gaussian noise of ``cascade_noise`` (conditioning augmentation: when
sampling it sees the base's samples, not real downsampled images). With ``standardise`` each
U-Net standardises what it diffuses with its own buffers (the base: the small images; the
detail: the residual). One AdamW holds both, the base at ``cascade_lr``; each U-Net's EMA
copy follows its own updates.

Sampling: the base samples ``cascade_size`` px images from the seeds' noise (clipped to
[-1, 1]), bilinearly upsampled; the detail U-Net samples the residual from noise seeded by
``derive_seed(seed, "detail")``, conditioned on the upsampled image, and adds it.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from groundsynth.errors import InputError
from groundsynth.generate.diffusion import (
    DiffusionConfig,
    build_unet,
    sample_images,
    set_standardisation,
)
from groundsynth.generate.ema import ema_decay_at, update_ema
from groundsynth.generate.seeds import derive_seed

__all__ = ["LOSS_NAMES", "CascadeUNet", "cascade_losses", "downsample", "sample_cascade"]

#: losses a cascade records per step (``detail_loss`` is NaN on steps that train the base only)
LOSS_NAMES = ("loss", "detail_loss")


class CascadeUNet(nn.Module):
    """The two U-Nets of a cascade: ``base`` at ``cascade_size`` px, ``detail`` at the patch
    size with the upsampled base image as 3 condition channels."""

    def __init__(self, cfg: DiffusionConfig, image_size: int) -> None:
        super().__init__()
        if cfg.cascade_size is None:
            raise InputError("a cascade needs cascade_size")
        cfg.resolved(image_size)
        self.factor = image_size // cfg.cascade_size
        self.base = build_unet(cfg, cfg.cascade_size)
        self.detail = build_unet(cfg, image_size, cond_channels=3)


def downsample(x: torch.Tensor, factor: int) -> torch.Tensor:
    """``x`` averaged over ``factor`` x ``factor`` blocks (area downsampling)."""
    return F.avg_pool2d(x, factor)


def upsample(x: torch.Tensor, factor: int) -> torch.Tensor:
    """``x`` bilinearly upsampled by ``factor``."""
    return F.interpolate(x, scale_factor=factor, mode="bilinear", align_corners=False)


def blurred(x: torch.Tensor, factor: int) -> torch.Tensor:
    """What the detail U-Net is conditioned on: ``x`` downsampled, then upsampled back."""
    return upsample(downsample(x, factor), factor)


def cascade_losses(
    module: Any, batch: dict[str, torch.Tensor], gen: torch.Generator
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """The step's loss to minimise and the losses to record, for a
    :class:`~groundsynth.generate.diffusion.DiffusionModule` holding a :class:`CascadeUNet`."""
    cfg: DiffusionConfig = module.model_cfg
    net: CascadeUNet = module.unet
    x = batch["image"]
    low = downsample(x, net.factor)
    base = module.diffusion_loss(net.base, low, gen)
    if not trains_detail(module):
        return base, {"loss": base, "detail_loss": torch.full_like(base, float("nan"))}
    cond = upsample(low, net.factor)

    def condition() -> torch.Tensor:
        return cond + cfg.cascade_noise * module.noise_like(tuple(cond.shape), gen).to(cond.dtype)

    detail = module.diffusion_loss(net.detail, x - cond, gen, condition)
    return base + detail, {"loss": base, "detail_loss": detail}


def trains_detail(module: Any) -> bool:
    """Whether the module's current step trains the detail U-Net (every ``cascade_every``-th,
    from the first)."""
    return module.steps_done % module.model_cfg.cascade_every == 0


def update_cascade_ema(module: Any) -> None:
    """Move each U-Net's EMA copy after its own updates: the base's after every step, the
    detail's after the steps that trained it, each with the decay warm-up of its own update
    count (:func:`~groundsynth.generate.ema.ema_decay_at`)."""
    decay = module.model_cfg.ema_decay
    ema, live = module.unet_ema, module.unet
    update_ema(ema.base, live.base, ema_decay_at(decay, module.steps_done))
    if trains_detail(module):
        updates = module.steps_done // module.model_cfg.cascade_every
        update_ema(ema.detail, live.detail, ema_decay_at(decay, updates))


def prepare_cascade(module: Any, items: Any) -> None:
    """Measure the standardisation of both U-Nets (and their EMA copies) on the training
    items: the small images for the base, the residual for the detail."""
    factor = module.unet.factor
    (small, residual) = module.measure(
        items,
        [
            lambda b: downsample(b["image"], factor),
            lambda b: b["image"] - blurred(b["image"], factor),
        ],
    )
    for net in module.networks().values():
        set_standardisation(net.base, *small)
        set_standardisation(net.detail, *residual)


@torch.no_grad()
def sample_cascade(
    unet: CascadeUNet,
    cfg: DiffusionConfig,
    seeds: list[int],
    image_size: int,
    *,
    sampler: str | None = None,
    steps: int | None = None,
    autocast: torch.dtype | None = None,
) -> torch.Tensor:
    """One (B, 3, S, S) image in [-1, 1] per seed: the base's sample, upsampled, plus the
    detail U-Net's residual."""
    if image_size % unet.factor:
        raise InputError(
            f"image size {image_size} is not a multiple of the cascade's factor {unet.factor}"
        )
    opts: dict[str, Any] = {"sampler": sampler, "steps": steps, "autocast": autocast}
    small = sample_images(unet.base, cfg, seeds, image_size // unet.factor, **opts)
    cond = upsample(small, unet.factor)

    def denoise(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return unet.detail(torch.cat([x, cond.to(x.dtype)], dim=1), t).sample

    detail_seeds = [derive_seed(int(s), "detail") for s in seeds]
    return sample_images(
        unet.detail, cfg, detail_seeds, image_size, denoise=denoise, offset=cond, **opts
    )
