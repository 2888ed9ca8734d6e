"""Small real-format rasters for builder tests: a WorldCover-like tile in EPSG:4326 and
Sentinel-2-like imagery on a UTM grid or on the tile's own grid."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import rasterio
from rasterio.transform import from_origin
from rasterio.warp import transform_bounds

WC_RES = 1 / 12000  # WorldCover pixel size, degrees
CODES = np.array([10, 20, 30, 40, 50, 60, 80, 90, 95, 100, 70], dtype=np.uint8)


def blocky_codes(n: int, block: int = 100, seed: int = 0) -> np.ndarray:
    """An n x n map of WorldCover codes in square blocks (deterministic)."""
    rng = np.random.default_rng(seed)
    nb = -(-n // block)
    grid = rng.choice(CODES[CODES != 80], size=(nb, nb))
    grid[rng.random((nb, nb)) < 0.1] = 80
    return np.kron(grid, np.ones((block, block), dtype=np.uint8))[:n, :n]


def write_landcover(
    path: Path, codes: np.ndarray, lon: float = 33.0, lat: float = 40.0, **kw
) -> Path:
    profile = dict(
        driver="GTiff",
        width=codes.shape[1],
        height=codes.shape[0],
        count=1,
        dtype=codes.dtype,
        crs="EPSG:4326",
        transform=from_origin(lon, lat, WC_RES, WC_RES),
        nodata=0,
        tiled=True,
        blockxsize=256,
        blockysize=256,
        compress="deflate",
    )
    profile.update(kw)
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(codes, 1)
    return path


def utm_grid_over(lc_path: Path, res: float = 10.0, crs: str = "EPSG:32636"):
    """(transform, width, height) of a UTM grid inside the land-cover footprint."""
    with rasterio.open(lc_path) as ds:
        b = transform_bounds(ds.crs, crs, *ds.bounds)
    width = int((b[2] - b[0]) // res)
    height = int((b[3] - b[1]) // res)
    return from_origin(b[0], b[3], res, res), width, height


def write_imagery(
    path: Path, data: np.ndarray, transform, crs: str = "EPSG:32636", nodata: float | None = 0, **kw
) -> Path:
    count, height, width = data.shape
    profile = dict(
        driver="GTiff",
        width=width,
        height=height,
        count=count,
        dtype=data.dtype,
        crs=crs,
        transform=transform,
        nodata=nodata,
        tiled=True,
        blockxsize=128,
        blockysize=128,
    )
    profile.update(kw)
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(data)
    return path


def random_imagery(count: int, height: int, width: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.integers(1, 4000, size=(count, height, width), dtype=np.uint16)


def make_pair(tmp: Path, n: int = 600, seed: int = 0) -> tuple[Path, Path]:
    """A land-cover tile (n x n) and 4-band UTM imagery inside it."""
    lc = write_landcover(tmp / "lc.tif", blocky_codes(n, seed=seed))
    transform, w, h = utm_grid_over(lc)
    img = write_imagery(tmp / "s2.tif", random_imagery(4, h, w, seed), transform)
    return lc, img
