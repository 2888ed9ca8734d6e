"""PatchGAN discriminator (pix2pix, Isola et al., 2017): real/fake logits per image patch.

The map (one-hot) is concatenated to the image, so the discriminator judges image-map pairs;
``n_layers`` strided convolutions give a grid of logits each seeing a patch of the input
(70x70 pixels for the pix2pix default of 3 layers). Trained with the hinge loss.
"""

from __future__ import annotations

import torch
from torch import nn

from groundsynth.errors import InputError

__all__ = ["PatchDiscriminator"]


def _sn(module: nn.Module) -> nn.Module:
    return nn.utils.parametrizations.spectral_norm(module)


class PatchDiscriminator(nn.Module):
    """(image, one-hot map) -> (B, 1, H', W') real/fake logits.

    Args:
        num_classes: number of map classes (one-hot channels concatenated to the image).
        width: channels of the first layer; doubled per layer up to ``max_channels``.
        depth: number of stride-2 layers (``n_layers`` of pix2pix).
        max_channels: cap on any layer's channels.
    """

    default_loss = "hinge"
    conditional_input = True

    def __init__(
        self, num_classes: int, width: int = 64, depth: int = 3, max_channels: int = 512
    ) -> None:
        super().__init__()
        if width < 1 or depth < 1:
            raise InputError(f"discriminator width and depth must be >= 1, got {width}, {depth}")
        self.num_classes = num_classes
        layers: list[nn.Module] = [
            _sn(nn.Conv2d(3 + num_classes, width, 4, stride=2, padding=1)),
            nn.LeakyReLU(0.2),
        ]
        ch = width
        for i in range(1, depth + 1):
            nxt = min(max_channels, width * 2**i)
            stride = 2 if i < depth else 1
            layers += [_sn(nn.Conv2d(ch, nxt, 4, stride=stride, padding=1)), nn.LeakyReLU(0.2)]
            ch = nxt
        layers.append(_sn(nn.Conv2d(ch, 1, 4, stride=1, padding=1)))
        self.net = nn.Sequential(*layers)

    def forward(self, image: torch.Tensor, onehot: torch.Tensor | None = None) -> torch.Tensor:
        if onehot is None:
            raise InputError("the PatchGAN discriminator needs the one-hot map with the image")
        return self.net(torch.cat([image, onehot.to(image.dtype)], dim=1))
