"""Radiometric scaling of reflectance patches to 8-bit RGB: a named, recorded choice.

- ``reflectance`` (default): a fixed reflectance range, the same for every patch and scene,
  ``[0, reflectance_max]`` -> ``[0, 255]``; brightness stays comparable across the dataset.
- ``percentile``: per source tile, each band's ``lo``-``hi`` percentiles (2-98 % by default)
  -> ``[0, 255]``; statistics come from a decimated read of the whole source.
- ``patch-max``: each patch divided by its own maximum over the RGB bands, times 255, then
  truncated, as the ARAS400k reference scripts do; brightness is not comparable across patches.
"""

from __future__ import annotations

import json
from typing import Literal

import numpy as np
import rasterio
from rasterio.enums import Resampling

from groundsynth.data.rasters import BandRef, ImagerySource

__all__ = [
    "SCALING_METHODS",
    "Scaler",
    "ScalingMethod",
    "describe_scaling",
    "source_percentiles",
    "to_uint8",
]

ScalingMethod = Literal["reflectance", "percentile", "patch-max"]
SCALING_METHODS: tuple[str, ...] = ("reflectance", "percentile", "patch-max")


def source_percentiles(
    source: ImagerySource, lo: float = 2.0, hi: float = 98.0, max_side: int = 1024
) -> tuple[list[float], list[float]]:
    """Per-band (R, G, B) reflectance percentiles of a source from a decimated read.

    The read is at most ``max_side`` pixels on its longer side (GDAL uses overviews when the
    file has them), so memory does not grow with the raster. Nodata pixels are excluded.
    """
    f = min(1.0, max_side / max(source.width, source.height))
    shape = (max(1, round(source.height * f)), max(1, round(source.width * f)))
    los, his = [], []
    for ref in source.bands[:3]:
        with rasterio.open(ref.path) as ds:
            dn = ds.read(ref.index, out_shape=shape, resampling=Resampling.nearest).astype(
                np.float64
            )
        valid = dn != (ref.nodata if ref.nodata is not None else 0)
        vals = dn[valid] * ref.scale + ref.offset
        if vals.size == 0:
            los.append(0.0)
            his.append(1.0)
            continue
        a, b = np.percentile(vals, [lo, hi])
        los.append(float(a))
        his.append(float(max(b, a + 1e-6)))
    return los, his


def to_uint8(
    rgb: np.ndarray,
    method: ScalingMethod,
    *,
    reflectance_max: float = 0.3,
    lo: list[float] | None = None,
    hi: list[float] | None = None,
) -> tuple[np.ndarray, float | None]:
    """Scale a (3, H, W) float reflectance patch to an (H, W, 3) uint8 image.

    Returns the image and, for ``patch-max``, the maximum used (else None).
    """
    if method == "reflectance":
        scaled = rgb * (255.0 / reflectance_max)
        used = None
    elif method == "percentile":
        if lo is None or hi is None:
            raise ValueError("percentile scaling needs the source's lo/hi percentiles")
        a = np.asarray(lo, dtype=np.float32)[:, None, None]
        b = np.asarray(hi, dtype=np.float32)[:, None, None]
        scaled = (rgb - a) * (255.0 / (b - a))
        used = None
    elif method == "patch-max":
        used = float(rgb.max())
        if used <= 0:
            return np.zeros((*rgb.shape[1:], 3), dtype=np.uint8), used
        out = np.clip(rgb / used * 255.0, 0, 255).astype(np.uint8)  # truncation, as the reference
        return np.ascontiguousarray(out.transpose(1, 2, 0)), used
    else:
        raise ValueError(f"unknown scaling {method!r}; choose one of {', '.join(SCALING_METHODS)}")
    out = np.clip(scaled, 0, 255)
    np.rint(out, out=out)
    return np.ascontiguousarray(out.astype(np.uint8).transpose(1, 2, 0)), used


class Scaler:
    """Raw DNs of one source -> reflectance or 8-bit RGB, as configured.

    For 8/16-bit integer imagery with ``reflectance`` or ``percentile`` scaling the DN -> 8-bit
    map is a 65536-entry lookup table per band (one gather per pixel instead of five float
    operations); other cases compute in float32. Both give identical results.
    """

    def __init__(
        self,
        bands: tuple[BandRef, ...],
        method: ScalingMethod,
        *,
        reflectance_max: float = 0.3,
        lo: list[float] | None = None,
        hi: list[float] | None = None,
    ) -> None:
        self.bands = bands
        self.method = method
        self.reflectance_max = reflectance_max
        self.lo, self.hi = lo, hi
        self._luts: np.ndarray | None = None
        if method in ("reflectance", "percentile"):
            dn = np.arange(65536, dtype=np.uint16)
            refl = np.stack([self._refl_of(dn, ref)[None, :] for ref in bands[:3]])  # (3, 1, 65536)
            self._luts = np.ascontiguousarray(self._float_to_uint8(refl)[0].T)  # (3, 65536)

    @staticmethod
    def _refl_of(dn: np.ndarray, ref: BandRef) -> np.ndarray:
        refl = dn.astype(np.float32) * np.float32(ref.scale) + np.float32(ref.offset)
        refl = np.maximum(refl, 0.0)
        if ref.nodata is not None:
            refl[dn == ref.nodata] = 0.0
        return refl

    def reflectance(self, dn: np.ndarray) -> np.ndarray:
        """(B, H, W) raw DNs -> float32 reflectance (nodata -> 0, negatives clipped)."""
        return np.stack([self._refl_of(dn[k], ref) for k, ref in enumerate(self.bands[: len(dn)])])

    def _float_to_uint8(self, refl: np.ndarray) -> np.ndarray:
        img, _ = to_uint8(
            refl, self.method, reflectance_max=self.reflectance_max, lo=self.lo, hi=self.hi
        )
        return img

    def to_uint8(self, dn: np.ndarray) -> tuple[np.ndarray, float | None]:
        """(3, H, W) raw RGB DNs -> ((H, W, 3) uint8 image, patch max for ``patch-max``)."""
        if self._luts is not None and dn.dtype in (np.uint8, np.uint16):
            out = np.empty((*dn.shape[1:], 3), dtype=np.uint8)
            for k in range(3):
                np.take(self._luts[k], dn[k], out=out[..., k])
            return out, None
        return to_uint8(
            self.reflectance(dn), self.method, reflectance_max=self.reflectance_max,
            lo=self.lo, hi=self.hi,
        )  # fmt: skip


def describe_scaling(
    method: str,
    *,
    reflectance_max: float | None = None,
    lo: list[float] | None = None,
    hi: list[float] | None = None,
    patch_max: float | None = None,
) -> str:
    """The compact JSON recorded per patch in ``metadata.parquet``'s ``scaling`` column."""
    d: dict[str, object] = {"method": method}
    if method == "reflectance":
        d["range"] = [0.0, reflectance_max]
    elif method == "percentile":
        d["lo"] = [round(v, 6) for v in lo or []]
        d["hi"] = [round(v, 6) for v in hi or []]
    elif method == "patch-max":
        d["max"] = round(patch_max, 6) if patch_max is not None else None
    return json.dumps(d, separators=(",", ":"))
