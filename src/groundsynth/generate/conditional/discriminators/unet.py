"""U-Net discriminator that segments: every pixel is one of the classes or "fake" (OASIS).

Schönfeld et al. (2021), "You Only Need Adversarial Supervision for Semantic Image
Synthesis": the discriminator sees only the image and predicts, per pixel, ``num_classes + 1``
logits (the classes, then "fake"). Trained with class-balanced cross-entropy against the map
for real images and against "fake" for generated ones, it gives the generator a per-pixel
signal about whether each region looks like its class -- no pretrained network needed.

Encoder: ``depth`` residual blocks halving the resolution; decoder: ``depth`` residual blocks
doubling it, each fed the matching encoder features (skip connections).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from groundsynth.errors import InputError

__all__ = ["UNetDiscriminator"]


def _sn(module: nn.Module) -> nn.Module:
    return nn.utils.parametrizations.spectral_norm(module)


class _ResDown(nn.Module):
    """Residual block, then optional x2 downsampling (average pooling)."""

    def __init__(self, cin: int, cout: int, down: bool) -> None:
        super().__init__()
        self.conv1 = _sn(nn.Conv2d(cin, cout, 3, padding=1))
        self.conv2 = _sn(nn.Conv2d(cout, cout, 3, padding=1))
        self.skip = _sn(nn.Conv2d(cin, cout, 1)) if cin != cout else nn.Identity()
        self.down = down

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv2(F.leaky_relu(self.conv1(F.leaky_relu(x, 0.2)), 0.2))
        out = h + self.skip(x)
        return F.avg_pool2d(out, 2) if self.down else out


class _ResUp(nn.Module):
    """x2 upsampling (nearest), then a residual block."""

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.conv1 = _sn(nn.Conv2d(cin, cout, 3, padding=1))
        self.conv2 = _sn(nn.Conv2d(cout, cout, 3, padding=1))
        self.skip = _sn(nn.Conv2d(cin, cout, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.interpolate(x, scale_factor=2, mode="nearest")
        h = self.conv2(F.leaky_relu(self.conv1(F.leaky_relu(x, 0.2)), 0.2))
        return h + self.skip(x)


class UNetDiscriminator(nn.Module):
    """Per-pixel ``num_classes + 1`` logits (index ``num_classes`` is "fake").

    Args:
        num_classes: number of map classes.
        width: channels of the first encoder stage; each stage doubles it up to ``max_channels``.
        depth: number of downsampling stages (image size must be a multiple of ``2**depth``).
        max_channels: cap on any stage's channels.
    """

    #: adversarial loss this discriminator is trained with by default
    default_loss = "oasis"
    conditional_input = False

    def __init__(
        self, num_classes: int, width: int = 64, depth: int = 6, max_channels: int = 512
    ) -> None:
        super().__init__()
        if width < 1 or depth < 1:
            raise InputError(f"discriminator width and depth must be >= 1, got {width}, {depth}")
        self.num_classes = num_classes
        self.depth = depth
        ch = [min(max_channels, width * 2**i) for i in range(depth + 1)]
        self.stem = nn.Conv2d(3, ch[0], 3, padding=1)
        self.down = nn.ModuleList(_ResDown(ch[i], ch[i + 1], down=True) for i in range(depth))
        # decoder: from ch[depth] back to ch[0], concatenating the encoder output of each level
        self.up = nn.ModuleList(
            _ResUp(ch[i + 1] * (1 if i == depth - 1 else 2), ch[i]) for i in reversed(range(depth))
        )
        self.head = nn.Conv2d(ch[0] * 2, num_classes + 1, 1)

    def forward(self, image: torch.Tensor, onehot: torch.Tensor | None = None) -> torch.Tensor:
        """``image`` (B, 3, H, W) in [-1, 1] -> logits (B, num_classes + 1, H, W).

        ``onehot`` is accepted for interface compatibility and ignored: this discriminator
        must find the classes itself.
        """
        step = 2**self.depth
        if image.shape[-1] % step or image.shape[-2] % step:
            raise InputError(
                f"image of {image.shape[-2]}x{image.shape[-1]}: the U-Net discriminator of depth "
                f"{self.depth} needs multiples of {step}"
            )
        x = self.stem(image)
        feats = [x]
        for block in self.down:
            x = block(x)
            feats.append(x)
        # feats: [level0 (H), level1 (H/2), ..., level depth]
        h = feats[-1]
        for n, block in enumerate(self.up):
            level = self.depth - 1 - n
            h = block(h)
            h = torch.cat([h, feats[level]], dim=1)
        return self.head(F.leaky_relu(h, 0.2))
