"""Cloud-masked per-pixel median of Sentinel-2 scenes on one grid, streamed in row blocks.

An observation (one scene at one pixel) is *clear* when its scene classification (SCL) is not
one of :data:`SCL_MASKED` and none of its bands is nodata (0). Each band of the composite is
the median of the clear observations (the mean of the middle two for an even count, rounded to
the nearest integer, ties to even); a pixel without any clear observation is nodata (0) in every
band and counted. Snow and ice (SCL 11) are kept: masking them would empty snowy areas.

Memory is bounded: rows are processed in blocks whose height is chosen so that one block of
every scene fits in ``memory`` bytes.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import rasterio
from rasterio.windows import Window

from groundsynth.acquire.s2_grid import Grid, output_profile, tag_output
from groundsynth.io import atomic_path

__all__ = ["SCL_MASKED", "CompositeStats", "median_composite"]

#: SCL classes masked: 0 no data, 1 saturated/defective, 3 cloud shadow, 8 cloud medium
#: probability, 9 cloud high probability, 10 thin cirrus.
SCL_MASKED: tuple[int, ...] = (0, 1, 3, 8, 9, 10)


@dataclass
class CompositeStats:
    pixels: int = 0
    #: pixels where no scene had a clear observation (written as nodata 0)
    pixels_without_clear: int = 0
    #: per scene: clear observations it contributed
    clear_per_scene: dict[str, int] = field(default_factory=dict)
    #: per scene: observations masked by SCL (where its bands had data)
    masked_per_scene: dict[str, int] = field(default_factory=dict)


def _block_rows(grid: Grid, scenes: int, bands: int, memory: int) -> int:
    per_row = grid.width * scenes * (2 * bands + 1 + 4 + 1)  # uint16 bands, SCL, float32, mask
    return max(1, min(grid.height, memory // max(1, per_row)))


def median_composite(
    scenes: Sequence[tuple[str, Path, Path]],
    out: Path,
    grid: Grid,
    bands: Sequence[str],
    *,
    masked: Sequence[int] = SCL_MASKED,
    memory: int = 256 << 20,
    tags: dict[str, str] | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> CompositeStats:
    """Write the median of ``scenes`` ((id, bands GeoTIFF, SCL GeoTIFF), all on ``grid``)
    to ``out`` atomically; return what was masked and what stayed empty."""
    stats = CompositeStats(pixels=grid.width * grid.height)
    stats.clear_per_scene = {sid: 0 for sid, _, _ in scenes}
    stats.masked_per_scene = {sid: 0 for sid, _, _ in scenes}
    masked_lut = np.zeros(256, dtype=bool)
    masked_lut[list(masked)] = True
    rows = _block_rows(grid, len(scenes), len(bands), memory)
    srcs = [(sid, rasterio.open(p), rasterio.open(q)) for sid, p, q in scenes]
    try:
        with (
            atomic_path(out, suffix=".tif") as tmp,
            rasterio.open(tmp, "w", **output_profile(grid, len(bands))) as dst,
        ):
            tag_output(dst, bands, **(tags or {}))
            blocks = list(grid.blocks(rows))
            for k, (r0, n, _) in enumerate(blocks):
                win = Window(0, r0, grid.width, n)
                data = np.stack([ds.read(window=win) for _, ds, _ in srcs])  # (S, B, n, W)
                scl = np.stack([q.read(1, window=win) for _, _, q in srcs])  # (S, n, W)
                has_data = (data != 0).all(axis=1)
                clear = has_data & ~masked_lut[scl]
                for s, (sid, _, _) in enumerate(srcs):
                    stats.clear_per_scene[sid] += int(clear[s].sum())
                    stats.masked_per_scene[sid] += int((has_data[s] & ~clear[s]).sum())
                none_clear = ~clear.any(axis=0)
                stats.pixels_without_clear += int(none_clear.sum())
                out_block = np.zeros((len(bands), n, grid.width), dtype=np.uint16)
                for b in range(len(bands)):
                    vals = np.where(clear, data[:, b].astype(np.float32), np.float32(np.nan))
                    with warnings.catch_warnings():
                        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN pixels
                        med = np.nanmedian(vals, axis=0)
                    med = np.rint(np.nan_to_num(med, nan=0.0))
                    out_block[b] = np.clip(med, 0, 65535).astype(np.uint16)
                dst.write(out_block, window=win)
                if progress is not None:
                    progress(k + 1, len(blocks))
    finally:
        for _, p, q in srcs:
            p.close()
            q.close()
    return stats
