"""Grounded diffusion generator: the ``diffusion`` kind's U-Net, conditioned on the map.

The land-cover map enters as ``NUM_CLASSES`` one-hot channels concatenated to the noisy image
(the U-Net of :func:`~groundsynth.generate.diffusion.build_unet` with ``cond_channels``); the
noise process, samplers, EMA and seeded noise are those of :mod:`.diffusion`, so this kind and
the unconditional one differ by the map alone (the grounded/ungrounded comparison of one
family).

Classifier-free guidance (Ho & Salimans, 2022): in training, each sample's map channels are
zeroed with probability ``map_dropout`` (all-zero channels are the "no map" input, never a
one-hot map); in sampling the model output is ``uncond + g * (cond - uncond)``. ``g`` 1 is the
conditional model alone (one forward pass), ``g`` 0 the unconditional one (one pass), ``g`` > 1
follows the map more closely at some cost in diversity.

Class-mean prior (``mean_prior``): the model diffuses the *residual* ``x0 - mu(map)``, where
``mu(map)`` paints each pixel with its class's mean colour over the training images (measured
once before training, kept with the weights as the U-Net's ``class_colours`` buffer), and
sampling adds ``mu(map)`` back. The map's colours are then right from the first step and the
network's budget goes to texture and boundaries; without it a small model first learns layout
and takes far longer to learn colour (on the demo's region A after 300 steps: shrub painted
dark green, barren grey-green). Map dropout is unchanged: the unconditional branch models the
residual without seeing the map, so ``g`` 0 still paints the class colours.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from groundsynth.classes import NUM_CLASSES
from groundsynth.data.masks import colourise
from groundsynth.errors import InputError
from groundsynth.generate.config import TrainConfig
from groundsynth.generate.data import one_hot, to_model_range, to_uint8
from groundsynth.generate.diffusion import (
    GRID_SAMPLES,
    Denoiser,
    DiffusionConfig,
    DiffusionModule,
    build_unet,
    sample_images,
)
from groundsynth.generate.seeds import derive_seed

__all__ = [
    "ConditionalDiffusionConfig",
    "ConditionalDiffusionModule",
    "build_conditional_unet",
    "class_mean_image",
    "guided_denoiser",
    "mean_colours",
    "sample_from_maps",
]

#: name of the U-Net buffer holding the (classes, 3) mean colours of ``mean_prior``
COLOURS = "class_colours"


def build_conditional_unet(cfg: ConditionalDiffusionConfig, image_size: int) -> nn.Module:
    """The map-conditioned U-Net of ``cfg``, with its (zeroed) ``class_colours`` buffer when
    ``cfg.mean_prior``."""
    unet = build_unet(cfg, image_size, NUM_CLASSES)
    if getattr(cfg, "mean_prior", False):
        unet.register_buffer(COLOURS, torch.zeros(NUM_CLASSES, 3))
    return unet


def class_mean_image(colours: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
    """(B, 3, H, W) image painting each pixel of the (B, H, W) ``masks`` with its class's
    colour (a row of ``colours``)."""
    return colours.to(masks.device)[masks.long()].permute(0, 3, 1, 2).contiguous()


def mean_colours(pairs: Iterable[tuple[np.ndarray, np.ndarray]]) -> torch.Tensor:
    """(classes, 3) mean colour in the model range [-1, 1] of each class's pixels over the
    (H, W, 3) uint8 image, (H, W) mask ``pairs`` (streamed); a class with no pixel gets the
    mean colour of all pixels."""
    sums = np.zeros((NUM_CLASSES, 3), np.float64)
    counts = np.zeros(NUM_CLASSES, np.int64)
    for image, mask in pairs:
        m = np.asarray(mask, np.int64).ravel()
        px = np.asarray(image, np.float64).reshape(-1, 3)
        ok = (m >= 0) & (m < NUM_CLASSES)
        counts += np.bincount(m[ok], minlength=NUM_CLASSES)
        for c in range(3):
            sums[:, c] += np.bincount(m[ok], weights=px[ok, c], minlength=NUM_CLASSES)
    if not counts.sum():
        raise InputError("no labelled pixel to measure class colours on")
    overall = sums.sum(0) / counts.sum()
    seen = counts > 0
    means = np.where(seen[:, None], sums / np.maximum(counts, 1)[:, None], overall)
    return torch.from_numpy(means / 127.5 - 1.0).float()


@dataclass(frozen=True)
class ConditionalDiffusionConfig(DiffusionConfig):
    """:class:`~groundsynth.generate.diffusion.DiffusionConfig` plus the map's options.

    Attributes:
        map_dropout: chance per training sample that its map is dropped (zeroed), which
            teaches the unconditional model classifier-free guidance needs; in [0, 1).
        guidance: guidance scale ``g`` used by ``generate`` unless it is given one (>= 0;
            1: the conditional model alone, 0: the unconditional one).
        mean_prior: diffuse the residual from the map's class-mean colours (see the module
            docstring).
    """

    map_dropout: float = 0.1
    guidance: float = 1.0
    mean_prior: bool = False

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.cascade_size is not None:
            raise InputError("cascade_size is for the unconditional diffusion kind only")
        if not 0 <= self.map_dropout < 1:
            raise InputError(f"map_dropout must be in [0, 1), got {self.map_dropout}")
        check_guidance(self.guidance)


def check_guidance(guidance: float) -> float:
    """``guidance`` if it is a valid scale (finite, >= 0), else :class:`InputError`."""
    if not np.isfinite(guidance) or guidance < 0:
        raise InputError(f"guidance must be >= 0, got {guidance}")
    return float(guidance)


def guided_denoiser(unet: nn.Module, onehot: torch.Tensor, guidance: float) -> Denoiser:
    """``denoise(x, t)`` of ``unet`` guided by the (B, C, H, W) one-hot maps at scale
    ``guidance``: ``uncond + g * (cond - uncond)``, one forward pass when ``g`` is 0 or 1."""
    g = check_guidance(guidance)
    none = torch.zeros_like(onehot)
    if g in (0.0, 1.0):
        maps = onehot if g == 1.0 else none
        return lambda x, t: unet(torch.cat([x, maps.to(x.dtype)], dim=1), t).sample
    both = torch.cat([onehot, none])

    def denoise(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        out = unet(torch.cat([torch.cat([x, x]), both.to(x.dtype)], dim=1), t).sample
        cond, uncond = out.chunk(2)
        return uncond + g * (cond - uncond)

    return denoise


@torch.no_grad()
def sample_from_maps(
    unet: nn.Module,
    cfg: ConditionalDiffusionConfig,
    seeds: list[int],
    masks: torch.Tensor,
    *,
    guidance: float | None = None,
    sampler: str | None = None,
    steps: int | None = None,
    autocast: torch.dtype | None = None,
) -> torch.Tensor:
    """One image per seed and (B, S, S) class-index map: (B, 3, S, S) in [-1, 1]. A sample's
    noise depends on its seed only (see :func:`~groundsynth.generate.diffusion.initial_noise`)."""
    if masks.dim() != 3 or len(masks) != len(seeds):
        raise InputError(f"need one (S, S) map per seed, got {tuple(masks.shape)} for {len(seeds)}")
    device = next(unet.parameters()).device
    onehot = one_hot(masks.to(device), NUM_CLASSES)
    g = cfg.guidance if guidance is None else guidance
    colours = getattr(unet, COLOURS, None)
    offset = None if colours is None else class_mean_image(colours, masks.to(device))
    return sample_images(
        unet,
        cfg,
        seeds,
        int(masks.shape[-1]),
        sampler=sampler,
        steps=steps,
        autocast=autocast,
        denoise=guided_denoiser(unet, onehot, g),
        offset=offset,
    )


class ConditionalDiffusionModule(DiffusionModule):
    """DDPM training of the map-conditioned U-Net, with map dropout."""

    kind = "conditional-diffusion"
    cond_channels = NUM_CLASSES

    def __init__(self, config: TrainConfig) -> None:
        super().__init__(config)
        self.model_cfg: ConditionalDiffusionConfig = config.model
        if self.model_cfg.mean_prior:
            for net in (self.unet, self.unet_ema):
                if net is not None:
                    net.register_buffer(COLOURS, torch.zeros(NUM_CLASSES, 3))

    def prepare(self, items: Any) -> None:
        """With ``mean_prior``: measure the class colours on the training items (centred,
        not augmented) into the U-Net's buffer (and its EMA's); then the standardisation of
        what is diffused (see :meth:`DiffusionModule.prepare`)."""
        if self.model_cfg.mean_prior:
            colours = mean_colours(items.arrays(i, None) for i in range(len(items)))
            for net in (self.unet, self.unet_ema):
                if net is not None:
                    getattr(net, COLOURS).copy_(colours)
        super().prepare(items)  # standardisation, of the residual when there is a prior

    def target_image(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """The image the model diffuses: the residual from the map's class colours with
        ``mean_prior``, else the image."""
        image = batch["image"]
        if not self.model_cfg.mean_prior:
            return image
        colours = getattr(self.unet, COLOURS)
        return image - class_mean_image(colours, batch["mask"]).to(image.dtype)

    def condition(self, batch: dict[str, torch.Tensor], gen: torch.Generator) -> torch.Tensor:
        """The batch's one-hot maps, each zeroed with probability ``map_dropout``."""
        image = batch["image"]
        onehot = one_hot(batch["mask"], NUM_CLASSES, image.dtype)
        keep = torch.rand(len(image), generator=gen, device=self.device)
        keep = (keep >= self.model_cfg.map_dropout).to(image.dtype)
        return onehot * keep[:, None, None, None]

    @torch.no_grad()
    def grid_rows(self, rows: list[tuple[np.ndarray, np.ndarray | None]]) -> list[np.ndarray]:
        """Per training sample: map | real | ``GRID_SAMPLES`` generated images (EMA weights,
        the config's guidance)."""
        net: Any = self.unet_ema if self.unet_ema is not None else self.unet
        out = []
        for r, (image, mask) in enumerate(rows):
            if mask is None:
                continue
            masks = torch.from_numpy(np.repeat(mask[None], GRID_SAMPLES, 0))
            seeds = [derive_seed(self.config.seed, "grid", r, j) for j in range(GRID_SAMPLES)]
            fakes = to_uint8(sample_from_maps(net, self.model_cfg, seeds, masks))
            real = to_uint8(to_model_range(image)[None])[0]
            out.append(np.concatenate([colourise(mask), real, *fakes], axis=1))
        return out
