"""The output grid of a Sentinel-2 acquisition and the GeoTIFFs written on it.

The grid is the UTM zone of the area's centre (EPSG:326xx north, 327xx south) at
``resolution`` metres, its edges snapped outward to multiples of the resolution (so 10 m grids
coincide with Sentinel-2's own 10 m pixel edges and scenes need no resampling inside their own
zone). Every raster written on it is a tiled, deflate-compressed GeoTIFF, uint16 reflectance ×
10000 with nodata 0; each band carries its GDAL scale (1e-4) and offset (0), a description
(``red``, ``green``, ``blue``, ``nir`` or the product band name) and tags saying that no
BOA offset remains to apply, so ``groundsynth build`` and GDAL-aware readers read reflectance.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from affine import Affine
from rasterio.warp import transform_bounds

from groundsynth.acquire.s2_assets import COMMON_NAMES, QUANTIFICATION
from groundsynth.errors import InputError

__all__ = ["MAX_SIDE", "Grid", "output_grid", "output_profile", "tag_output", "utm_epsg"]

#: Largest grid side in pixels (a bigger area must be split into several runs).
MAX_SIDE = 40000
_DESCRIPTIONS = {b: COMMON_NAMES[b] for b in ("B02", "B03", "B04", "B08")}


def utm_epsg(lon: float, lat: float) -> int:
    """EPSG code of the WGS 84 UTM zone holding ``lon``, ``lat`` (no Norway/Svalbard cases)."""
    zone = min(60, max(1, int(math.floor((lon + 180.0) / 6.0)) + 1))
    return (32600 if lat >= 0 else 32700) + zone


@dataclass(frozen=True)
class Grid:
    """North-up pixels: ``width`` × ``height`` at ``transform`` in ``crs``."""

    crs: str
    transform: tuple[float, float, float, float, float, float]
    width: int
    height: int

    @property
    def affine(self) -> Affine:
        return Affine(*self.transform)

    def blocks(self, rows: int) -> Iterator[tuple[int, int, Affine]]:
        """(first row, row count, transform) of consecutive row blocks of at most ``rows``."""
        a = self.affine
        for r0 in range(0, self.height, rows):
            n = min(rows, self.height - r0)
            yield r0, n, a * Affine.translation(0, r0)

    def as_dict(self) -> dict[str, Any]:
        return {
            "crs": self.crs,
            "transform": list(self.transform),
            "width": self.width,
            "height": self.height,
        }


def output_grid(bbox: Sequence[float], resolution: float) -> Grid:
    """The grid covering ``bbox`` (W, S, E, N degrees) in its centre's UTM zone."""
    w, s, e, n = bbox
    crs = f"EPSG:{utm_epsg((w + e) / 2, (s + n) / 2)}"
    x0, y0, x1, y1 = transform_bounds("EPSG:4326", crs, w, s, e, n, densify_pts=21)
    r = float(resolution)
    left, right = math.floor(x0 / r) * r, math.ceil(x1 / r) * r
    bottom, top = math.floor(y0 / r) * r, math.ceil(y1 / r) * r
    width, height = round((right - left) / r), round((top - bottom) / r)
    if max(width, height) > MAX_SIDE:
        raise InputError(
            f"bbox {list(bbox)} at {r:g} m is {width} x {height} pixels, more than {MAX_SIDE} "
            "on a side; use a coarser --resolution or split the area"
        )
    return Grid(crs=crs, transform=(r, 0.0, left, 0.0, -r, top), width=width, height=height)


def output_profile(grid: Grid, count: int, dtype: str = "uint16") -> dict[str, Any]:
    """rasterio profile of a tiled, deflate GeoTIFF on ``grid`` with nodata 0."""
    block = 256 if min(grid.width, grid.height) >= 256 else 16 * max(1, min(grid.width, 256) // 16)
    tiled = min(grid.width, grid.height) >= 16
    profile: dict[str, Any] = {
        "driver": "GTiff",
        "width": grid.width,
        "height": grid.height,
        "count": count,
        "dtype": dtype,
        "crs": grid.crs,
        "transform": grid.affine,
        "nodata": 0,
        "compress": "deflate",
        "predictor": 2,
        "tiled": tiled,
        "BIGTIFF": "IF_SAFER",
    }
    if tiled:
        profile.update(blockxsize=block, blockysize=block)
    return profile


def tag_output(dst: Any, bands: Sequence[str], **tags: Any) -> None:
    """Describe the bands of an open output raster (see the module docstring)."""
    for i, band in enumerate(bands, start=1):
        dst.set_band_description(i, _DESCRIPTIONS.get(band, band))
        dst.update_tags(i, BAND_ID=band)
    dst.scales = [1.0 / QUANTIFICATION] * len(bands)
    dst.offsets = [0.0] * len(bands)
    dst.update_tags(
        BOA_QUANTIFICATION_VALUE=f"{QUANTIFICATION:g}",
        BOA_ADD_OFFSET="0",
        REFLECTANCE_CONVENTION="uint16 reflectance x 10000, nodata 0, BOA offset already applied",
        **{k.upper(): str(v) for k, v in tags.items()},
    )
