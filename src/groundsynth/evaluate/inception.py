"""Inception-v3 pool features for the optional Inception FID, from local weights only.

torchvision's ``inception_v3`` is built without weights (nothing is downloaded) and loaded
from a local state-dict file with ``torch.load(weights_only=True)``. The file decides the
details: ``AuxLogits.*`` keys switch the auxiliary head on, the ``fc`` shape sets the class
count (1000 for torchvision's ImageNet weights, 1008 for the TF-FID port). Features are the
2048-d average-pooled activations (``fc`` replaced by the identity), images resized to
299 x 299 (bilinear) and ImageNet-normalised.

This is torchvision's Inception graph: with the TF-FID port's weights its numbers are close to,
but not identical with, those of pytorch-fid / clean-fid, whose graph differs in a few pooling
layers. Compare FIDs computed the same way only.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

from groundsynth._optional import lazy_import
from groundsynth.errors import InputError

__all__ = ["INCEPTION_SIZE", "InceptionFeatures"]

logger = logging.getLogger(__name__)

#: Input size of Inception-v3.
INCEPTION_SIZE = 299
_MEAN = (0.485, 0.456, 0.406)
_STD = (0.229, 0.224, 0.225)


class InceptionFeatures:
    """Callable: ``(N, 3, H, W)`` images in 0..1 -> ``(N, 2048)`` Inception pool features.

    Args:
        weights: local state-dict file of torchvision's ``inception_v3``.
        device: torch device to run on.

    Raises:
        InputError: the file is missing, unreadable, or not Inception-v3 weights.
    """

    def __init__(self, weights: str | os.PathLike[str], device: Any = "cpu") -> None:
        torch = lazy_import("torch")
        models = lazy_import("torchvision.models")
        path = Path(weights)
        if not path.is_file():
            raise InputError(f"{path}: Inception weights file not found")
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:  # noqa: BLE001 - torch raises many types on bad files
            raise InputError(
                f"{path}: cannot read Inception weights ({type(exc).__name__}: {exc})"
            ) from exc
        if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
            state = state["state_dict"]
        if not isinstance(state, dict) or "fc.weight" not in state:
            raise InputError(
                f"{path}: not an inception_v3 state dict (no 'fc.weight'); save one with "
                "torch.save(torchvision.models.inception_v3(...).state_dict(), PATH)"
            )
        aux = any(str(k).startswith("AuxLogits.") for k in state)
        net = models.inception_v3(
            weights=None,
            aux_logits=aux,
            init_weights=False,
            transform_input=False,
            num_classes=int(state["fc.weight"].shape[0]),
        )
        try:
            net.load_state_dict(state)
        except RuntimeError as exc:
            raise InputError(
                f"{path}: weights do not fit torchvision's inception_v3: {exc}"
            ) from exc
        net.fc = torch.nn.Identity()
        self.device = torch.device(device)
        self.net = net.eval().to(self.device)
        self.mean = torch.tensor(_MEAN, device=self.device).view(1, 3, 1, 1)
        self.std = torch.tensor(_STD, device=self.device).view(1, 3, 1, 1)
        self.path = path
        logger.info("loaded Inception-v3 weights from %s (aux_logits=%s)", path, aux)

    def __call__(self, images: Any) -> Any:
        torch = lazy_import("torch")
        x = images.to(self.device, dtype=torch.float32)
        if x.ndim != 4 or x.shape[1] != 3:
            raise InputError(f"expected (N, 3, H, W) RGB images, got {tuple(x.shape)}")
        with torch.no_grad():
            x = torch.nn.functional.interpolate(
                x, size=(INCEPTION_SIZE, INCEPTION_SIZE), mode="bilinear", align_corners=False
            )
            return self.net((x - self.mean) / self.std)
