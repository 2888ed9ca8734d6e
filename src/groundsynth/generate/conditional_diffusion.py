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
"""

from __future__ import annotations

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
    sample_images,
)
from groundsynth.generate.seeds import derive_seed

__all__ = [
    "ConditionalDiffusionConfig",
    "ConditionalDiffusionModule",
    "guided_denoiser",
    "sample_from_maps",
]


@dataclass(frozen=True)
class ConditionalDiffusionConfig(DiffusionConfig):
    """:class:`~groundsynth.generate.diffusion.DiffusionConfig` plus the map's options.

    Attributes:
        map_dropout: chance per training sample that its map is dropped (zeroed), which
            teaches the unconditional model classifier-free guidance needs; in [0, 1).
        guidance: guidance scale ``g`` used by ``generate`` unless it is given one (>= 0;
            1: the conditional model alone, 0: the unconditional one).
    """

    map_dropout: float = 0.1
    guidance: float = 1.0

    def __post_init__(self) -> None:
        super().__post_init__()
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
    return sample_images(
        unet,
        cfg,
        seeds,
        int(masks.shape[-1]),
        sampler=sampler,
        steps=steps,
        autocast=autocast,
        denoise=guided_denoiser(unet, onehot, g),
    )


class ConditionalDiffusionModule(DiffusionModule):
    """DDPM training of the map-conditioned U-Net, with map dropout."""

    kind = "conditional-diffusion"
    cond_channels = NUM_CLASSES

    def __init__(self, config: TrainConfig) -> None:
        super().__init__(config)
        self.model_cfg: ConditionalDiffusionConfig = config.model

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
