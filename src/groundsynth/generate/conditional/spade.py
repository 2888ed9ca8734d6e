"""SPADE generator: land-cover map (one-hot) + 3-D noise -> RGB image.

Spatially-adaptive normalisation (Park et al., 2019): every normalisation layer of the
generator is modulated by a scale and a shift predicted, per pixel, from the map. As in
OASIS (Schönfeld et al., 2021) the noise is *3-D*: a noise vector per image (or a noise map
per pixel) is broadcast over the image and concatenated to the one-hot map, so the
conditioning seen by every layer carries the noise, and one map yields varied images.

The network starts from the conditioning downsampled by ``2**depth`` and doubles the
resolution ``depth`` times, so the image size must be a multiple of ``2**depth``
(``depth=5``: any multiple of 32). Channel widths are ``min(max_channels, width * 2**(depth-i))``
at stage ``i``, so ``width``/``depth`` make the network as small as tests need.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from groundsynth.classes import NUM_CLASSES
from groundsynth.errors import InputError

__all__ = ["SPADE", "SPADEGenerator", "SPADEResBlock", "SpadeConfig", "stage_channels"]

NORMS = ("batch", "instance")


@dataclass(frozen=True)
class SpadeConfig:
    """Architecture of the SPADE generator.

    Attributes:
        width: channels of the last (full-resolution) stage; earlier stages double it.
        max_channels: cap on any stage's channels.
        depth: number of x2 upsampling stages (image size must be a multiple of 2**depth).
        z_dim: noise channels concatenated to the one-hot map (0: no noise, one image per map).
        spade_hidden: hidden channels of each SPADE modulation network.
        norm: parameter-free normalisation modulated by SPADE: ``batch`` (SPADE/OASIS) or
            ``instance``.
        spectral_norm: spectral normalisation on the generator's convolutions (SPADE/OASIS).
    """

    width: int = 64
    max_channels: int = 512
    depth: int = 5
    z_dim: int = 64
    spade_hidden: int = 128
    norm: Literal["batch", "instance"] = "batch"
    spectral_norm: bool = True

    def __post_init__(self) -> None:
        for name in ("width", "max_channels", "depth", "spade_hidden"):
            if getattr(self, name) < 1:
                raise InputError(f"generator {name} must be >= 1, got {getattr(self, name)}")
        if self.z_dim < 0:
            raise InputError(f"generator z_dim must be >= 0, got {self.z_dim}")
        if self.norm not in NORMS:
            raise InputError(f"generator norm must be one of {', '.join(NORMS)}, got {self.norm!r}")

    def check_size(self, image_size: int) -> None:
        """Raise :class:`InputError` unless ``image_size`` is a multiple of ``2**depth``."""
        step = 2**self.depth
        if image_size < step or image_size % step:
            raise InputError(
                f"image size {image_size} is not a multiple of {step} (2**depth, depth "
                f"{self.depth}); choose an image size such as {max(step, image_size // step * step)}"
            )


def stage_channels(cfg: SpadeConfig) -> list[int]:
    """Channels at each of the ``depth + 1`` resolutions, coarsest first."""
    return [min(cfg.max_channels, cfg.width * 2 ** (cfg.depth - i)) for i in range(cfg.depth + 1)]


def _sn(module: nn.Module, enabled: bool) -> nn.Module:
    return nn.utils.parametrizations.spectral_norm(module) if enabled else module


class SPADE(nn.Module):
    """``norm(x) * (1 + gamma(cond)) + beta(cond)`` with ``cond`` resized to ``x``."""

    def __init__(self, channels: int, cond_channels: int, hidden: int, norm: str) -> None:
        super().__init__()
        if norm == "batch":
            self.norm: nn.Module = nn.BatchNorm2d(channels, affine=False)
        else:
            self.norm = nn.InstanceNorm2d(channels, affine=False)
        self.shared = nn.Sequential(nn.Conv2d(cond_channels, hidden, 3, padding=1), nn.ReLU())
        self.gamma = nn.Conv2d(hidden, channels, 3, padding=1)
        self.beta = nn.Conv2d(hidden, channels, 3, padding=1)

    def forward(self, x: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        cond = F.interpolate(cond, size=x.shape[-2:], mode="nearest")
        h = self.shared(cond)
        return self.norm(x) * (1 + self.gamma(h)) + self.beta(h)


class SPADEResBlock(nn.Module):
    """Residual block with SPADE normalisation (a learned shortcut when channels change)."""

    def __init__(self, cin: int, cout: int, cond_channels: int, cfg: SpadeConfig) -> None:
        super().__init__()
        mid = min(cin, cout)
        self.norm1 = SPADE(cin, cond_channels, cfg.spade_hidden, cfg.norm)
        self.conv1 = _sn(nn.Conv2d(cin, mid, 3, padding=1), cfg.spectral_norm)
        self.norm2 = SPADE(mid, cond_channels, cfg.spade_hidden, cfg.norm)
        self.conv2 = _sn(nn.Conv2d(mid, cout, 3, padding=1), cfg.spectral_norm)
        self.learned_shortcut = cin != cout
        if self.learned_shortcut:
            self.norm_s = SPADE(cin, cond_channels, cfg.spade_hidden, cfg.norm)
            self.conv_s = _sn(nn.Conv2d(cin, cout, 1, bias=False), cfg.spectral_norm)

    def forward(self, x: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        shortcut = self.conv_s(self.norm_s(x, cond)) if self.learned_shortcut else x
        dx = self.conv1(F.leaky_relu(self.norm1(x, cond), 0.2))
        dx = self.conv2(F.leaky_relu(self.norm2(dx, cond), 0.2))
        return shortcut + dx


class SPADEGenerator(nn.Module):
    """Map + noise -> image in [-1, 1].

    ``forward(onehot, z)``: ``onehot`` is (B, num_classes, H, W) float; ``z`` is (B, z_dim)
    (one vector per image, broadcast over it) or (B, z_dim, H, W) (a noise map), or ``None``
    when ``z_dim`` is 0. Returns (B, 3, H, W).
    """

    def __init__(self, cfg: SpadeConfig, num_classes: int = NUM_CLASSES) -> None:
        super().__init__()
        self.cfg = cfg
        self.num_classes = num_classes
        cond = num_classes + cfg.z_dim
        ch = stage_channels(cfg)
        self.head = nn.Conv2d(cond, ch[0], 3, padding=1)
        self.blocks = nn.ModuleList(
            SPADEResBlock(ch[i], ch[i + 1], cond, cfg) for i in range(cfg.depth)
        )
        self.out = nn.Conv2d(ch[-1], 3, 3, padding=1)

    def conditioning(self, onehot: torch.Tensor, z: torch.Tensor | None) -> torch.Tensor:
        """The one-hot map with the noise broadcast and concatenated (OASIS 3-D noise)."""
        if self.cfg.z_dim == 0:
            return onehot
        if z is None:
            raise InputError(f"the generator takes noise of {self.cfg.z_dim} channels; got None")
        if z.dim() == 2:
            z = z[:, :, None, None].expand(-1, -1, *onehot.shape[-2:])
        return torch.cat([onehot, z.to(onehot.dtype)], dim=1)

    def forward(self, onehot: torch.Tensor, z: torch.Tensor | None = None) -> torch.Tensor:
        h, w = onehot.shape[-2:]
        step = 2**self.cfg.depth
        if h % step or w % step:
            raise InputError(
                f"map of {h}x{w} pixels: height and width must be multiples of {step} "
                f"(2**depth); crop or pad the map"
            )
        cond = self.conditioning(onehot, z)
        x = self.head(F.interpolate(cond, size=(h // step, w // step), mode="nearest"))
        for block in self.blocks:
            x = F.interpolate(block(x, cond), scale_factor=2, mode="nearest")
        return torch.tanh(self.out(F.leaky_relu(x, 0.2)))
