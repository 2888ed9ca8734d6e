"""Discriminators of the conditional generator, one file each, in an explicit registry.

========== ===================================================== =================
name       what it predicts                                      default loss
========== ===================================================== =================
unet       per pixel: one of the classes or "fake" (OASIS)       ``oasis``
patchgan   per patch: real or fake, image + map input (pix2pix)  ``hinge``
========== ===================================================== =================
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from groundsynth.errors import InputError
from groundsynth.generate.conditional.discriminators.patchgan import PatchDiscriminator
from groundsynth.generate.conditional.discriminators.unet import UNetDiscriminator

__all__ = [
    "DISCRIMINATORS",
    "PatchDiscriminator",
    "UNetDiscriminator",
    "get_discriminator",
    "list_discriminators",
]

#: name -> class taking ``(num_classes, width=, depth=, max_channels=)``
DISCRIMINATORS: dict[str, Callable[..., Any]] = {
    "unet": UNetDiscriminator,
    "patchgan": PatchDiscriminator,
}


def get_discriminator(name: str) -> Callable[..., Any]:
    """The discriminator class registered as ``name``."""
    try:
        return DISCRIMINATORS[name]
    except KeyError:
        raise InputError(
            f"unknown discriminator {name!r}; valid: {', '.join(DISCRIMINATORS)}"
        ) from None


def list_discriminators() -> list[str]:
    """Names of the registered discriminators."""
    return list(DISCRIMINATORS)
