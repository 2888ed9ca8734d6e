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

from groundsynth.data.rasters import ImagerySource

__all__ = ["SCALING_METHODS", "ScalingMethod", "describe_scaling", "source_percentiles", "to_uint8"]

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
