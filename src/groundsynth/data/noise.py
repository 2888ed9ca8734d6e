"""Smooth random fields and small raster helpers used to synthesise the sample world."""

from __future__ import annotations

import numpy as np
from scipy import fft

__all__ = ["lowres", "noise", "quantiles", "upsample", "window"]


def noise(rng: np.random.Generator, shape: tuple[int, int], beta: float, factor: int = 4):
    """Smooth isotropic noise (power spectrum ~ k**-beta), zero mean, unit variance.

    Synthesised by FFT at 1/``factor`` resolution and upsampled bilinearly, so it is smooth
    below ``factor`` pixels; float32, ``shape``.
    """
    return upsample(lowres(rng, shape, beta, factor), factor, shape)


def lowres(rng: np.random.Generator, shape: tuple[int, int], beta: float, factor: int = 4):
    """The low-resolution grid of :func:`noise` (with one cell of margin on each side).

    Fields combined at this resolution cost one :func:`upsample` instead of several.
    """
    lh, lw = -(-shape[0] // factor) + 2, -(-shape[1] // factor) + 2
    ph, pw = lh + lh // 3 + 4, lw + lw // 3 + 4
    spec = fft.rfft2(rng.standard_normal((ph, pw)))
    k = np.hypot(fft.fftfreq(ph)[:, None], fft.rfftfreq(pw)[None, :])
    k[0, 0] = np.inf
    low = fft.irfft2(spec * k ** (-beta / 2), s=(ph, pw))[:lh, :lw]
    return ((low - low.mean()) / low.std()).astype(np.float32)


def upsample(low: np.ndarray, factor: int, shape: tuple[int, int]) -> np.ndarray:
    """Bilinear upsampling of ``low`` by ``factor`` (pixel centres aligned), cropped to shape.

    ``low`` has one cell of margin on each side (see :func:`lowres`). Output pixel
    ``factor * i + j`` interpolates between the same two cells for every ``i``, so each
    phase ``j`` is one strided array operation (5x faster than gathering rows).
    """
    h, w = (-(-n // factor) for n in shape)  # low-resolution cells covered
    phases = [((j + 0.5) / factor + 0.5) for j in range(factor)]
    cols = np.empty((low.shape[0], w, factor), dtype=np.float32)
    step = low[:, 1:] - low[:, :-1]
    for j, pos in enumerate(phases):
        o, t = int(pos), pos - int(pos)
        np.multiply(step[:, o : o + w], t, out=cols[:, :, j])
        cols[:, :, j] += low[:, o : o + w]
    cols = cols.reshape(low.shape[0], w * factor)
    out = np.empty((h, factor, w * factor), dtype=np.float32)
    step = cols[1:] - cols[:-1]
    for j, pos in enumerate(phases):
        o, t = int(pos), pos - int(pos)
        np.multiply(step[o : o + h], t, out=out[:, j])
        out[:, j] += cols[o : o + h]
    return out.reshape(h * factor, w * factor)[: shape[0], : shape[1]]


def quantiles(values: np.ndarray, valid: np.ndarray, qs) -> np.ndarray:
    """Quantiles of ``values`` over ``valid`` pixels, from a strided subsample (fast)."""
    step = max(1, values.shape[0] // 512)
    return np.quantile(values[::step, ::step][valid[::step, ::step]], qs).astype(np.float32)


def window(center: tuple[float, float], radius: float, shape: tuple[int, int]):
    """Slices and pixel-centre coordinate grids of a square window, clipped to the map."""
    cy, cx = center
    y0, y1 = max(0, int(cy - radius)), min(shape[0], int(cy + radius) + 2)
    x0, x1 = max(0, int(cx - radius)), min(shape[1], int(cx + radius) + 2)
    yy, xx = np.mgrid[y0:y1, x0:x1].astype(np.float32)
    return (slice(y0, y1), slice(x0, x1)), yy - cy, xx - cx
