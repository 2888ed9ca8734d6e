"""Losses of the conditional generator.

* ``hinge`` (SPADE, pix2pixHD-style with hinge): ``D: relu(1 - D(real)) + relu(1 + D(fake))``,
  ``G: -D(fake)``, on real/fake logits of any shape (a PatchGAN's patch grid).
* ``oasis`` (Schönfeld et al., 2021): the discriminator segments the image into
  ``num_classes + 1`` classes (index ``num_classes`` = fake). Real pixels are trained towards
  their map class with class-balanced weights (rare classes weigh more: each present class
  contributes equally), fake pixels towards "fake"; the generator is trained to have its pixels
  classified as their map class, with the same weights.
* VGG19 perceptual loss (pix2pixHD / SPADE): L1 between VGG19 features of the generated and
  the real image, weights 1/32 .. 1 from relu1_1 to relu5_1. Only built from a *local* weights
  file (:func:`load_vgg19_features`); never downloaded.
* Segmenter feature matching: L1 between the multi-scale encoder features of the generated
  and the real image, read by a frozen *real-trained* segmenter (a ``segmenter.pt`` of
  ``groundsynth benchmark segmentation``), averaged over the encoder's stages. The features
  exist offline (the segmenter was trained on the same real data) and know what the classes
  look like at this resolution, which VGG's ImageNet features need not.
* L1 reconstruction (pix2pix): mean absolute difference to the real image. Off by default:
  it pulls every sample towards the one real image and kills diversity; useful for checks.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from groundsynth.errors import InputError

__all__ = [
    "ADVERSARIAL_LOSSES",
    "SegmenterFeatureLoss",
    "VGGPerceptualLoss",
    "class_balance_weights",
    "get_adversarial_loss",
    "hinge_d_loss",
    "hinge_g_loss",
    "load_vgg19_features",
    "oasis_d_loss",
    "oasis_g_loss",
]


# ----------------------------------------------------------------------------- hinge
def hinge_d_loss(real: torch.Tensor, fake: torch.Tensor, onehot: torch.Tensor) -> torch.Tensor:
    """Discriminator hinge loss on real/fake logits (``onehot`` unused)."""
    return F.relu(1.0 - real).mean() + F.relu(1.0 + fake).mean()


def hinge_g_loss(fake: torch.Tensor, onehot: torch.Tensor) -> torch.Tensor:
    """Generator hinge loss: raise the discriminator's logits on generated images."""
    return -fake.mean()


# ----------------------------------------------------------------------------- OASIS
def class_balance_weights(onehot: torch.Tensor) -> torch.Tensor:
    """Per-pixel weights (B, H, W): the inverse frequency of the pixel's class in the batch,
    scaled so that the mean weight over the batch's pixels is 1 (OASIS).

    Each class present in the batch then contributes the same total weight, whatever its
    area, so rare classes (shrub, barren, built-up) are not drowned out.
    """
    counts = onehot.sum(dim=(0, 2, 3)).float()
    present = (counts > 0).sum().clamp(min=1)
    pixels = onehot.shape[0] * onehot.shape[2] * onehot.shape[3]
    coeff = torch.where(counts > 0, pixels / (counts.clamp(min=1) * present), counts)
    return coeff[onehot.argmax(dim=1)]


def oasis_d_loss(real: torch.Tensor, fake: torch.Tensor, onehot: torch.Tensor) -> torch.Tensor:
    """Discriminator (N+1)-class loss: real pixels -> their class (balanced), fake -> fake."""
    labels = onehot.argmax(dim=1)
    weights = class_balance_weights(onehot)
    real_loss = (F.cross_entropy(real.float(), labels, reduction="none") * weights).mean()
    fake_target = torch.full_like(labels, real.shape[1] - 1)
    fake_loss = F.cross_entropy(fake.float(), fake_target)
    return real_loss + fake_loss


def oasis_g_loss(fake: torch.Tensor, onehot: torch.Tensor) -> torch.Tensor:
    """Generator loss: generated pixels should be classified as their map class (balanced)."""
    labels = onehot.argmax(dim=1)
    weights = class_balance_weights(onehot)
    return (F.cross_entropy(fake.float(), labels, reduction="none") * weights).mean()


DLoss = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]
GLoss = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]

#: name -> (discriminator loss(real, fake, onehot), generator loss(fake, onehot))
ADVERSARIAL_LOSSES: dict[str, tuple[DLoss, GLoss]] = {
    "hinge": (hinge_d_loss, hinge_g_loss),
    "oasis": (oasis_d_loss, oasis_g_loss),
}


def get_adversarial_loss(name: str) -> tuple[DLoss, GLoss]:
    """The (discriminator, generator) loss pair registered as ``name``."""
    try:
        return ADVERSARIAL_LOSSES[name]
    except KeyError:
        raise InputError(
            f"unknown adversarial loss {name!r}; valid: {', '.join(ADVERSARIAL_LOSSES)}"
        ) from None


# ----------------------------------------------------------------------------- VGG19
#: indices of relu1_1, relu2_1, relu3_1, relu4_1, relu5_1 in torchvision's vgg19().features
_VGG_LAYERS = (1, 6, 11, 20, 29)
_VGG_WEIGHTS = (1 / 32, 1 / 16, 1 / 8, 1 / 4, 1.0)


def load_vgg19_features(path: str | os.PathLike[str]) -> nn.Module:
    """torchvision's VGG19 ``features`` with weights from a local file (never downloaded).

    ``path`` holds a state dict saved with ``torch.save``: either the whole ``vgg19()``
    (keys ``features.N.weight``, e.g. torchvision's ``vgg19-dcbb9e9d.pth``) or only its
    ``features`` (keys ``N.weight``). Loaded with ``torch.load(weights_only=True)``.
    """
    from groundsynth._optional import lazy_import

    models = lazy_import("torchvision.models")
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: VGG19 weights file not found (give a local .pth state dict)")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises several types for bad files
        raise InputError(f"{path}: cannot load VGG19 weights ({exc})") from exc
    if not isinstance(state, dict):
        raise InputError(f"{path}: expected a state dict, got {type(state).__name__}")
    if any(k.startswith("features.") for k in state):
        state = {k[len("features.") :]: v for k, v in state.items() if k.startswith("features.")}
    # the layers of ``vgg19(weights=None).features``, without building the 120M-parameter head
    features = models.vgg.make_layers(models.vgg.cfgs["E"], batch_norm=False)
    try:
        features.load_state_dict(state)
    except RuntimeError as exc:
        raise InputError(f"{path}: not VGG19 weights ({exc})") from exc
    return features


class VGGPerceptualLoss(nn.Module):
    """Weighted L1 between VGG19 features (relu1_1 .. relu5_1) of two images in [-1, 1]."""

    def __init__(self, features: nn.Module) -> None:
        super().__init__()
        self.features = features[: _VGG_LAYERS[-1] + 1].eval()
        self.features.requires_grad_(False)
        self.register_buffer("mean", torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1))

    @classmethod
    def from_file(cls, path: str | os.PathLike[str]) -> VGGPerceptualLoss:
        return cls(load_vgg19_features(path))

    def train(self, mode: bool = True) -> VGGPerceptualLoss:
        super().train(mode)
        self.features.eval()  # always frozen
        return self

    def forward(self, fake: torch.Tensor, real: torch.Tensor) -> torch.Tensor:
        x = ((fake + 1) / 2 - self.mean) / self.std
        y = ((real + 1) / 2 - self.mean) / self.std
        loss = x.new_zeros(())
        k = 0
        for i, layer in enumerate(self.features):
            x = layer(x)
            with torch.no_grad():
                y = layer(y)
            if i in _VGG_LAYERS:
                loss = loss + _VGG_WEIGHTS[k] * F.l1_loss(x, y.detach())
                k += 1
        return loss


# ----------------------------------------------------------------------------- segmenter
class SegmenterFeatureLoss(nn.Module):
    """Mean over a frozen segmenter's encoder stages of the L1 between the features of two
    images in [-1, 1].

    Images are brought to 0..1 and through the segmenter's own input normalisation and
    padding; the encoder's stage 0 (smp returns the input itself there) and empty stages
    (some transformers' placeholder) are left out, so the loss reads features, not pixels.
    Gradients reach the first image only; the segmenter stays frozen and in eval mode (its
    batch-norm statistics never change). It is not part of the generator's checkpoints.
    """

    def __init__(self, segmenter: nn.Module) -> None:
        super().__init__()
        self.segmenter = segmenter.eval()
        self.segmenter.requires_grad_(False)

    @classmethod
    def from_file(
        cls, path: str | os.PathLike[str], sha256: str | None = None
    ) -> SegmenterFeatureLoss:
        """Load a real-trained RGB segmenter checkpoint (``weights_only``); with ``sha256``,
        refuse a file whose content changed since it was recorded."""
        from groundsynth.benchmark.model import load_segmenter
        from groundsynth.runs import file_digest

        path = Path(path)
        if not path.is_file():
            raise InputError(
                f"{path}: feature-matching segmenter not found (give a real-trained "
                "segmenter.pt, e.g. from `groundsynth benchmark segmentation`)"
            )
        if sha256 is not None and file_digest(path) != sha256:
            raise InputError(
                f"{path}: the feature-matching segmenter changed since the run recorded it "
                f"(sha256 {sha256[:12]}...); restore it or train in a new --out"
            )
        segmenter, _ = load_segmenter(path)
        if segmenter.spec.in_channels != 3:
            raise InputError(
                f"{path}: takes {segmenter.spec.in_channels} bands; feature matching needs an "
                "RGB segmenter"
            )
        return cls(segmenter)

    def train(self, mode: bool = True) -> SegmenterFeatureLoss:
        super().train(mode)
        self.segmenter.eval()  # always frozen
        return self

    def stages(self, images: torch.Tensor) -> list[torch.Tensor]:
        """The encoder's feature maps (stage 1 on) of ``images`` in [-1, 1]."""
        # the segmenter's own normalisation and padding (what its forward applies)
        x, _, _ = self.segmenter._prepare((images + 1) / 2)
        return [f for f in self.segmenter.net.encoder(x)[1:] if f.numel()]

    def forward(self, fake: torch.Tensor, real: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            targets = self.stages(real)
        feats = self.stages(fake)
        terms = [F.l1_loss(f, t) for f, t in zip(feats, targets, strict=True)]
        return torch.stack(terms).mean()
