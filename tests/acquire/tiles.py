"""Synthetic WorldCover tiles with the real names, grid, size, CRS and bucket layout.

A tile is full size (36000 x 36000 for the map, 12000 x 12000 x 4 for the composite) but
sparse: only the internal 1024 x 1024 tiles over the areas a test uses are stored, so writing
one takes milliseconds and a few hundred KB. Pixel values are a known function of the global
grid position (:func:`expected`), so a test can check any window of any mosaic exactly.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import numpy as np
import rasterio
from rasterio.transform import from_origin
from rasterio.windows import Window

from groundsynth.acquire.area import BBox
from groundsynth.acquire.tiles import (
    MAP,
    PIXELS_PER_DEGREE,
    S2RGBNIR,
    GridWindow,
    Product,
    area_window,
    tile_windows,
)

BLOCK = 1024
#: Land codes only (no 0 = nodata, no 80 = water), so that every patch passes build's checks.
LAND = np.array([10, 20, 30, 40, 50, 60, 90], dtype=np.uint8)


def expected(product: Product, grid: GridWindow) -> np.ndarray:
    """The pixels of ``grid`` (bands, rows, cols) in every synthetic tile of ``product``."""
    rows = np.arange(grid.row, grid.row + grid.height, dtype=np.int64)[:, None]
    cols = np.arange(grid.col, grid.col + grid.width, dtype=np.int64)[None, :]
    if product is MAP:
        return LAND[((rows // 37) + (cols // 53)) % len(LAND)][None].astype(np.uint8)
    bands = [((rows * 3 + cols * 7 + 1000 * b) % 9000 + 100) for b in range(4)]
    return np.stack([np.broadcast_to(v, (grid.height, grid.width)) for v in bands]).astype(
        np.uint16
    )


def tile_path(root: Path, product: Product, year: int, tile: str) -> Path:
    """Where ``tile`` lives in a mirror rooted at ``root`` (the public layout)."""
    url = product.url("http://mirror", year, tile)
    return root / url.removeprefix("http://mirror/")


def write_tiles(
    root: Path,
    product: Product,
    year: int,
    areas: Iterable[BBox],
    *,
    skip: Iterable[str] = (),
) -> list[Path]:
    """Write the ``product`` tiles that ``areas`` touch (except ``skip``) under ``root``.

    Each tile stores the internal blocks over the areas (values from :func:`expected`);
    the rest of the tile is sparse (reads as 0, nodata).
    """
    needed: dict[str, tuple[GridWindow, list[GridWindow]]] = {}
    for bbox in areas:
        for tw in tile_windows(product, area_window(bbox)):
            needed.setdefault(tw.tile, (tw.tile_grid, []))[1].append(tw.grid)
    written = []
    for tile, (tile_grid, grids) in needed.items():
        if tile in set(skip):
            continue
        path = tile_path(root, product, year, tile)
        path.parent.mkdir(parents=True, exist_ok=True)
        west, north = tile_grid.bounds[0], tile_grid.bounds[3]
        profile = {
            "driver": "GTiff",
            "width": tile_grid.width,
            "height": tile_grid.height,
            "count": product.count,
            "dtype": product.dtype,
            "crs": "EPSG:4326",
            "transform": from_origin(west, north, 1 / PIXELS_PER_DEGREE, 1 / PIXELS_PER_DEGREE),
            "nodata": 0,
            "tiled": True,
            "blockxsize": BLOCK,
            "blockysize": BLOCK,
            "compress": "deflate",
            "sparse_ok": True,
            "interleave": "pixel" if product.count > 1 else "band",
        }
        with rasterio.open(path, "w", **profile) as dst:
            blocks = set()
            for g in grids:
                r0, c0 = g.row - tile_grid.row, g.col - tile_grid.col
                for br in range(r0 // BLOCK, (r0 + g.height - 1) // BLOCK + 1):
                    for bc in range(c0 // BLOCK, (c0 + g.width - 1) // BLOCK + 1):
                        blocks.add((br, bc))
            for br, bc in sorted(blocks):
                block = GridWindow(
                    tile_grid.col + bc * BLOCK, tile_grid.row + br * BLOCK, BLOCK, BLOCK
                )
                block = block.intersection(tile_grid)
                dst.write(
                    expected(product, block),
                    window=Window(bc * BLOCK, br * BLOCK, block.width, block.height),
                )
        written.append(path)
    return written


__all__ = ["LAND", "MAP", "S2RGBNIR", "expected", "tile_path", "write_tiles"]
