"""Mosaics of window GeoTIFFs that share one pixel grid, written strip by strip.

The pieces (windows read from remote tiles) lie on the same grid as the output, so a mosaic
is a paste, never a resampling: each output strip is filled with nodata, the pieces that
cross it are copied in, and the strip is written. Memory stays at one strip whatever the
area. The output is written to a hidden temporary file and moved into place when complete.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import numpy as np
import rasterio
from rasterio.windows import Window

from groundsynth.acquire.tiles import GridWindow
from groundsynth.io import atomic_path

__all__ = ["BLOCK", "geotiff_profile", "write_mosaic"]

#: Internal tile size of the GeoTIFFs written here.
BLOCK = 512
_STRIP_ROWS = 2 * BLOCK


def geotiff_profile(
    window: GridWindow, *, count: int, dtype: str, nodata: float = 0
) -> dict[str, object]:
    """Profile of a tiled, deflate-compressed EPSG:4326 GeoTIFF covering ``window``."""
    return {
        "driver": "GTiff",
        "width": window.width,
        "height": window.height,
        "count": count,
        "dtype": dtype,
        "crs": "EPSG:4326",
        "transform": window.transform,
        "nodata": nodata,
        "tiled": True,
        "blockxsize": BLOCK,
        "blockysize": BLOCK,
        "compress": "deflate",
        "predictor": 2,
        "interleave": "pixel" if count > 1 else "band",
        "BIGTIFF": "IF_SAFER",
    }


def write_mosaic(
    dest: str | os.PathLike[str],
    area: GridWindow,
    pieces: Sequence[tuple[GridWindow, Path]],
    *,
    count: int,
    dtype: str,
    nodata: float = 0,
    band_names: Sequence[str] = (),
    tags: Mapping[str, str] | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> Path:
    """Write the pieces (grid window, GeoTIFF) into one GeoTIFF covering ``area``.

    Pixels no piece covers are ``nodata``. Bands are described by ``band_names`` (what
    ``groundsynth build`` reads to find red, green, blue and NIR). ``progress(done, total)``
    is called after each strip.
    """
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    profile = geotiff_profile(area, count=count, dtype=dtype, nodata=nodata)
    strips = range(0, area.height, _STRIP_ROWS)
    with atomic_path(dest, suffix=".tif") as tmp, rasterio.open(tmp, "w", **profile) as out:
        for i, name in enumerate(band_names, start=1):
            out.set_band_description(i, name)
        if tags:
            out.update_tags(**tags)
        for done, r0 in enumerate(strips, start=1):
            rows = min(_STRIP_ROWS, area.height - r0)
            strip = GridWindow(area.col, area.row + r0, area.width, rows)
            data = np.full((count, rows, area.width), nodata, dtype=dtype)
            for grid, path in pieces:
                part = grid.intersection(strip)
                if part is None:
                    continue
                with rasterio.open(path) as src:
                    block = src.read(
                        window=Window(
                            part.col - grid.col, part.row - grid.row, part.width, part.height
                        )
                    )
                r, c = part.row - strip.row, part.col - strip.col
                data[:, r : r + part.height, c : c + part.width] = block
            out.write(data, window=Window(0, r0, area.width, rows))
            if progress is not None:
                progress(done, len(strips))
    return dest
