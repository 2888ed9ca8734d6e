"""Configuration of the conditional (map -> image) generator: networks, losses, optimisers."""

from __future__ import annotations

import math
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any, Literal

from groundsynth.errors import InputError
from groundsynth.generate.conditional.spade import SpadeConfig

__all__ = ["ConditionalConfig"]

DISCRIMINATOR_NAMES = ("unet", "patchgan")
LOSS_NAMES = ("auto", "oasis", "hinge")
_DEFAULT_LOSS = {"unet": "oasis", "patchgan": "hinge"}


@dataclass(frozen=True)
class ConditionalConfig:
    """The conditional generator's model and training options.

    Attributes:
        generator: SPADE generator architecture.
        discriminator: ``unet`` (OASIS: per-pixel classes + fake; default) or ``patchgan``.
        d_width, d_depth, d_max_channels: discriminator size; ``d_depth`` ``None`` resolves to
            ``min(6, log2(image_size) - 2)`` for ``unet`` and 3 for ``patchgan``.
        loss: adversarial loss; ``auto`` is the discriminator's (``oasis`` for ``unet``,
            ``hinge`` for ``patchgan``). ``oasis`` needs the ``unet`` discriminator.
        adversarial_weight: weight of the generator's adversarial loss.
        vgg_weights: local VGG19 state-dict file enabling the perceptual loss (never downloaded).
        vgg_weight: weight of the perceptual loss (when ``vgg_weights`` is given).
        fm_segmenter: a real-trained segmenter checkpoint (``segmenter.pt``) enabling the
            feature-matching loss: L1 between its encoder's features of the generated and the
            real image (see :class:`~.losses.SegmenterFeatureLoss`). Needed to train and to
            resume, never to sample (it is not saved in checkpoints).
        fm_weight: weight of the feature-matching loss (when ``fm_segmenter`` is given).
        fm_segmenter_sha256: the SHA-256 of ``fm_segmenter``, recorded by :meth:`resolved`;
            a run refuses to resume on a changed file.
        l1_weight: weight of an L1 loss to the real image (0: off; for checks, not diversity).
        lr_g, lr_d, beta1, beta2: Adam settings (OASIS: 1e-4, 4e-4, 0, 0.999).
        ema_decay: decay of the generator weights' moving average used for sampling.
    """

    generator: SpadeConfig = field(default_factory=SpadeConfig)
    discriminator: Literal["unet", "patchgan"] = "unet"
    d_width: int = 64
    d_depth: int | None = None
    d_max_channels: int = 512
    loss: Literal["auto", "oasis", "hinge"] = "auto"
    adversarial_weight: float = 1.0
    vgg_weights: str | None = None
    vgg_weight: float = 10.0
    fm_segmenter: str | None = None
    fm_weight: float = 10.0
    fm_segmenter_sha256: str | None = None
    l1_weight: float = 0.0
    lr_g: float = 1e-4
    lr_d: float = 4e-4
    beta1: float = 0.0
    beta2: float = 0.999
    ema_decay: float = 0.999

    def __post_init__(self) -> None:
        if isinstance(self.generator, dict):
            object.__setattr__(self, "generator", SpadeConfig(**self.generator))
        if self.discriminator not in DISCRIMINATOR_NAMES:
            raise InputError(
                f"unknown discriminator {self.discriminator!r}; valid: "
                f"{', '.join(DISCRIMINATOR_NAMES)}"
            )
        if self.loss not in LOSS_NAMES:
            raise InputError(f"unknown loss {self.loss!r}; valid: {', '.join(LOSS_NAMES)}")
        if self.loss == "oasis" and self.discriminator != "unet":
            raise InputError(
                "the oasis loss needs the unet discriminator (it segments every pixel); "
                "use --discriminator unet or the hinge loss"
            )
        if self.d_width < 1 or (self.d_depth is not None and self.d_depth < 1):
            raise InputError("discriminator width and depth must be >= 1")
        for name in ("adversarial_weight", "vgg_weight", "fm_weight", "l1_weight"):
            if getattr(self, name) < 0:
                raise InputError(f"{name} must be >= 0, got {getattr(self, name)}")
        if self.fm_segmenter_sha256 is not None and self.fm_segmenter is None:
            raise InputError("fm_segmenter_sha256 is given without fm_segmenter")
        if not (self.lr_g > 0 and self.lr_d > 0):
            raise InputError(f"learning rates must be > 0, got {self.lr_g}, {self.lr_d}")
        if not 0 <= self.ema_decay < 1:
            raise InputError(f"ema_decay must be in [0, 1), got {self.ema_decay}")

    @property
    def adversarial_loss(self) -> str:
        """The adversarial loss actually used (``auto`` resolved)."""
        return _DEFAULT_LOSS[self.discriminator] if self.loss == "auto" else self.loss

    def resolved(self, image_size: int) -> ConditionalConfig:
        """Defaults that depend on the image size filled in; checks the size fits; the
        feature-matching segmenter's absolute path and SHA-256 recorded."""
        self.generator.check_size(image_size)
        depth = self.d_depth
        if depth is None:
            depth = (
                min(6, max(1, int(math.log2(image_size)) - 2))
                if self.discriminator == "unet"
                else 3
            )
        if self.discriminator == "unet" and image_size % 2**depth:
            raise InputError(
                f"image size {image_size} is not a multiple of {2**depth} (2**d_depth for the "
                "U-Net discriminator); lower d_depth"
            )
        fm_path, fm_digest = self._resolved_fm_segmenter()
        return replace(
            self,
            d_depth=depth,
            loss=self.adversarial_loss,  # type: ignore[arg-type]
            fm_segmenter=fm_path,
            fm_segmenter_sha256=fm_digest,
        )

    def _resolved_fm_segmenter(self) -> tuple[str | None, str | None]:
        """``(absolute path, sha256)`` of the feature-matching segmenter (``None``: none)."""
        if self.fm_segmenter is None:
            return None, None
        from groundsynth.runs import file_digest

        path = Path(self.fm_segmenter).expanduser().resolve()
        if not path.is_file():
            raise InputError(
                f"--fm-segmenter {path}: file not found (give a real-trained segmenter.pt, "
                "e.g. from `groundsynth benchmark segmentation`)"
            )
        digest = file_digest(path)
        if self.fm_segmenter_sha256 is not None and digest != self.fm_segmenter_sha256:
            raise InputError(
                f"--fm-segmenter {path}: its content changed since the run recorded it "
                f"(sha256 {self.fm_segmenter_sha256[:12]}..., now {digest[:12]}...); restore "
                "the file or train in a new --out"
            )
        return str(path), digest

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ConditionalConfig:
        """Rebuild from the plain dict saved in config.yaml / checkpoints."""
        known = {f.name for f in fields(cls)}
        unknown = set(data).difference(known)
        if unknown:
            raise InputError(f"unknown conditional-generator option(s): {sorted(unknown)}")
        return cls(**data)
