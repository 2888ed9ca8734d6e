"""Sentinel-2 band COGs read by window and reprojected onto an output grid.

Only the COG tiles that cover the requested area are fetched: GDAL's ``/vsicurl/`` issues HTTP
range requests for the header and for those tiles, never the whole file. The shared pieces
come from :mod:`groundsynth.acquire.cog`: the caller's GDAL environment
(:func:`~groundsynth.acquire.cog.gdal_options`), the ``HEAD`` request that records each file's
size and ETag (:func:`~groundsynth.acquire.cog.head`), the refusal of anything that is not a
tiled GeoTIFF (:func:`~groundsynth.acquire.cog.check_cog`) and the back-off. Here: dropped
connections and other read errors are retried by reopening the file, and each read is
reprojected onto the output grid.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable
from typing import Any, TypeVar

import numpy as np
import rasterio
from affine import Affine
from rasterio.enums import Resampling
from rasterio.errors import RasterioError
from rasterio.transform import array_bounds
from rasterio.warp import reproject, transform_bounds
from rasterio.windows import Window, from_bounds

from groundsynth.acquire.cog import (
    RETRY_STATUS,
    check_cog,
    check_scheme,
    checked,
    http_status,
    retry_delay,
)
from groundsynth.errors import FetchError

__all__ = ["RemoteCog"]

log = logging.getLogger(__name__)
T = TypeVar("T")
#: rasterio's reproject silences a warning with warnings.catch_warnings(), which is not
#: thread-safe (concurrent calls leak the warning and can garble the filters); threads overlap
#: their network reads, and take turns to reproject the (small) windows.
_REPROJECT_LOCK = threading.Lock()


class RemoteCog:
    """One remote COG band, opened under the caller's GDAL environment, read by window."""

    def __init__(
        self, url: str, *, what: str, retries: int, backoff: float, nodata: float | None = None
    ) -> None:
        check_scheme(url, what)
        self.url = url
        self.what = what
        self.retries = retries
        self.backoff = backoff
        self._nodata = nodata
        self.ds: Any = None
        self.info: dict[str, Any] = {}
        self._with_retries(self._open, "open")

    # ----------------------------------------------------------------- open / retry
    def _open(self) -> None:
        self.close()
        self.ds = checked(rasterio.open(f"/vsicurl/{self.url}"), self._check)

    def _check(self, ds: Any) -> None:
        if ds.crs is None:
            raise FetchError(f"{self.what}: {self.url}: has no CRS")
        self.info = check_cog(ds, what=self.what, url=self.url)

    def _with_retries(self, fn: Callable[[], T], action: str) -> T:
        last: Exception | None = None
        for attempt in range(self.retries + 1):
            try:
                return fn()
            except FetchError:
                raise
            except RasterioError as exc:
                status = http_status(exc)
                if status is not None and status not in RETRY_STATUS:
                    raise FetchError(
                        f"{self.what}: {self.url}: HTTP {status} while trying to {action} it"
                    ) from None
                if action == "open" and "not recognized as" in str(exc):
                    raise FetchError(
                        f"{self.what}: {self.url}: not a GeoTIFF/COG (GDAL: {exc})"
                    ) from None
                last = exc
            if attempt < self.retries:
                log.info("%s: %s: %s failed (%s); retrying", self.what, self.url, action, last)
                time.sleep(retry_delay(self.backoff, attempt + 1))
                if action != "open":
                    self._with_retries(self._open, "open")
        raise FetchError(
            f"{self.what}: {self.url}: could not {action} it after {self.retries + 1} "
            f"attempts ({last})"
        )

    def close(self) -> None:
        if self.ds is not None:
            self.ds.close()
            self.ds = None

    # ----------------------------------------------------------------- reading
    def read(
        self,
        dst_transform: Affine,
        dst_shape: tuple[int, int],
        dst_crs: str,
        *,
        resampling: Resampling,
        dtype: str = "float64",
    ) -> np.ndarray:
        """The band reprojected onto ``dst_shape`` pixels at ``dst_transform`` in ``dst_crs``;
        pixels outside the file or at its nodata are 0. Reads only the covering window."""
        return self._with_retries(
            lambda: self._read(dst_transform, dst_shape, dst_crs, resampling, dtype), "read"
        )

    def _source_window(
        self, dst_transform: Affine, dst_shape: tuple[int, int], dst_crs: str, pad: int
    ) -> Window | None:
        ds = self.ds
        bounds = array_bounds(dst_shape[0], dst_shape[1], dst_transform)
        west, south, east, north = bounds[0], bounds[1], bounds[2], bounds[3]
        if rasterio.crs.CRS.from_user_input(dst_crs) != ds.crs:
            west, south, east, north = transform_bounds(
                dst_crs, ds.crs, west, south, east, north, densify_pts=21
            )
        win = from_bounds(west, south, east, north, transform=ds.transform)
        c0 = max(0, math.floor(win.col_off) - pad)
        r0 = max(0, math.floor(win.row_off) - pad)
        c1 = min(ds.width, math.ceil(win.col_off + win.width) + pad)
        r1 = min(ds.height, math.ceil(win.row_off + win.height) + pad)
        if c1 <= c0 or r1 <= r0:
            return None
        return Window(c0, r0, c1 - c0, r1 - r0)

    def _read(
        self,
        dst_transform: Affine,
        dst_shape: tuple[int, int],
        dst_crs: str,
        resampling: Resampling,
        dtype: str,
    ) -> np.ndarray:
        out = np.zeros(dst_shape, dtype=dtype)
        # one source pixel of margin (two for kernels wider than nearest): enough, and a wider
        # margin could touch, and fetch, a neighbouring COG tile for nothing
        pad = 1 if resampling == Resampling.nearest else 2
        win = self._source_window(dst_transform, dst_shape, dst_crs, pad)
        if win is None:
            return out
        ds = self.ds
        src = ds.read(1, window=win)
        nodata = ds.nodata if ds.nodata is not None else self._nodata
        with _REPROJECT_LOCK:
            reproject(
                source=src,
                destination=out,
                src_transform=ds.window_transform(win),
                src_crs=ds.crs,
                src_nodata=0 if nodata is None else nodata,
                dst_transform=dst_transform,
                dst_crs=dst_crs,
                dst_nodata=0,
                resampling=resampling,
                init_dest_nodata=True,
            )
        return out
