"""A fixed image descriptor that needs no weights, for feature fidelity without an encoder.

:func:`image_descriptor` maps ``(N, H, W, 3)`` uint8 images to ``(N, 23)`` float64 rows:

- **colour** (12): per RGB channel (0..1) the mean, the standard deviation and the 10th and
  90th percentiles;
- **land cover** (7): the share of each class in the pixel floor's reading of the image
  (:class:`~groundsynth.evaluate.pixel_floor.PixelFloor`; zeros when no floor is given);
- **texture** (4): on the grey level (mean of RGB, 0..1), the mean and standard deviation of
  the gradient magnitude (forward differences), the mean gradient magnitude at half resolution
  (2x2 means) and the mean absolute 4-neighbour Laplacian.

It is **coarse** on purpose: it sees colour distributions, class proportions and edge density,
not shapes, layouts or objects, so two sets can match on it and still look different. Use it
where no real-trained encoder is at hand (the real-trained segmenter's encoder is the domain
encoder of :mod:`groundsynth.evaluate.fidelity`); a Fréchet distance on it is comparable only
with another on it, never with Inception FID or an encoder's FD. Pure numpy, deterministic.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from groundsynth.classes import CLASS_NAMES, NUM_CLASSES
from groundsynth.errors import InputError

__all__ = ["DESCRIPTOR_FEATURES", "image_descriptor"]

#: Names of the descriptor's columns, in order.
DESCRIPTOR_FEATURES: tuple[str, ...] = (
    *(f"{stat}_{c}" for stat in ("mean", "std", "p10", "p90") for c in "rgb"),
    *(f"share_{name}" for name in CLASS_NAMES),
    "grad_mean",
    "grad_std",
    "grad_mean_half",
    "laplacian_mean",
)


def _gradient(grey: np.ndarray) -> np.ndarray:
    """(N, H-1, W-1) gradient magnitude of (N, H, W) grey images (forward differences)."""
    gx = np.diff(grey, axis=2)[:, :-1, :]
    gy = np.diff(grey, axis=1)[:, :, :-1]
    return np.sqrt(gx * gx + gy * gy)


def image_descriptor(images: np.ndarray, floor: Any = None) -> np.ndarray:
    """``(N, 23)`` float64 descriptors of ``(N, H, W, 3)`` uint8 images (see the module
    docstring); ``floor`` is a fitted pixel floor giving the class shares (else zeros)."""
    x = np.asarray(images)
    if x.ndim != 4 or x.shape[-1] != 3 or min(x.shape[1:3]) < 4:
        raise InputError(f"images must be (N, H, W, 3) with H, W >= 4, got shape {x.shape}")
    n, h, w = x.shape[:3]
    rgb = x.astype(np.float32) / 255.0
    flat = rgb.reshape(n, -1, 3)
    p10, p90 = np.percentile(flat, [10, 90], axis=1)
    colour = [flat.mean(axis=1), flat.std(axis=1), p10, p90]
    shares = np.zeros((n, NUM_CLASSES))
    if floor is not None:
        pred = floor.predict(x).reshape(n, -1).astype(np.int64)
        offsets = (np.arange(n) * NUM_CLASSES)[:, None]
        counts = np.bincount((pred + offsets).ravel(), minlength=n * NUM_CLASSES)
        shares = counts.reshape(n, NUM_CLASSES) / pred.shape[1]
    grey = rgb.mean(axis=-1)
    grad = _gradient(grey)
    half = grey[:, : h // 2 * 2, : w // 2 * 2].reshape(n, h // 2, 2, w // 2, 2).mean(axis=(2, 4))
    lap = (
        4 * grey[:, 1:-1, 1:-1]
        - grey[:, :-2, 1:-1]
        - grey[:, 2:, 1:-1]
        - grey[:, 1:-1, :-2]
        - grey[:, 1:-1, 2:]
    )
    texture = np.stack(
        [
            grad.mean(axis=(1, 2)),
            grad.std(axis=(1, 2)),
            _gradient(half).mean(axis=(1, 2)),
            np.abs(lap).mean(axis=(1, 2)),
        ],
        axis=1,
    )
    return np.concatenate([*colour, shares, texture], axis=1).astype(np.float64)
