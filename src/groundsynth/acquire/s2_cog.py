"""Windowed reads of remote Cloud-Optimized GeoTIFFs onto an output grid.

Only the COG tiles that cover the requested area are fetched: GDAL's ``/vsicurl/`` issues HTTP
range requests for the header and for those tiles, never the whole file. The GDAL options
(:func:`gdal_options`) stop GDAL listing the remote "directory" and probing side-car files,
and make it retry 429/5xx answers with a delay. Dropped connections and other read errors are
retried here, with exponential back-off, by reopening the file. Each file is first asked for
its size and ETag with a ``HEAD`` request (recorded as provenance); a dead URL fails there with
the URL and the HTTP status in the message.

A remote GeoTIFF that is not tiled (stored in strips) is refused: a window of it would cost
whole rows of the image, so it is not a COG in the sense that matters here.
"""

from __future__ import annotations

import logging
import math
import re
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import numpy as np
import rasterio
from affine import Affine
from rasterio.enums import Resampling
from rasterio.errors import RasterioError
from rasterio.transform import array_bounds
from rasterio.warp import reproject, transform_bounds
from rasterio.windows import Window, from_bounds

from groundsynth import __version__
from groundsynth.errors import FetchError

__all__ = ["RemoteCog", "RemoteFile", "gdal_options", "head"]

log = logging.getLogger(__name__)
T = TypeVar("T")
_USER_AGENT = f"groundsynth/{__version__}"
_RETRY_STATUS = {408, 425, 429, 500, 502, 503, 504}
#: A strip-organised GeoTIFF wider than this is not read by window (see the module docstring).
_MAX_STRIP_WIDTH = 512
#: rasterio's reproject silences a warning with warnings.catch_warnings(), which is not
#: thread-safe (concurrent calls leak the warning and can garble the filters); threads overlap
#: their network reads, and take turns to reproject the (small) windows.
_REPROJECT_LOCK = threading.Lock()


def gdal_options(*, retries: int, backoff: float, timeout: float) -> dict[str, str]:
    """GDAL configuration for range reads of public COGs over HTTP(S)."""
    return {
        "GDAL_DISABLE_READDIR_ON_OPEN": "EMPTY_DIR",
        "CPL_VSIL_CURL_ALLOWED_EXTENSIONS": ".tif,.tiff,.TIF,.TIFF",
        "GDAL_HTTP_MAX_RETRY": str(retries),
        "GDAL_HTTP_RETRY_DELAY": f"{backoff:g}",
        "GDAL_HTTP_TIMEOUT": str(max(1, math.ceil(timeout))),
        "GDAL_HTTP_CONNECTTIMEOUT": str(max(1, math.ceil(min(timeout, 30.0)))),
        "GDAL_HTTP_MERGE_CONSECUTIVE_RANGES": "YES",
        "GDAL_HTTP_USERAGENT": _USER_AGENT,
    }


@dataclass(frozen=True)
class RemoteFile:
    """What a ``HEAD`` request said about a remote file."""

    url: str
    bytes: int | None
    etag: str | None
    last_modified: str | None


def _backoff_sleep(backoff: float, attempt: int) -> None:
    time.sleep(backoff * (2**attempt))


def _check_scheme(url: str, what: str) -> None:
    if not url.lower().startswith(("http://", "https://")):
        raise FetchError(f"{what}: {url}: only http(s) URLs can be read by range requests")


def head(url: str, *, what: str, retries: int, backoff: float, timeout: float) -> RemoteFile:
    """Size, ETag and date of ``url``; 429/5xx and dropped connections are retried."""
    _check_scheme(url, what)
    last = ""
    for attempt in range(retries + 1):
        req = urllib.request.Request(url, method="HEAD", headers={"User-Agent": _USER_AGENT})
        try:
            with urllib.request.urlopen(req, timeout=timeout) as resp:
                size = resp.headers.get("Content-Length")
                return RemoteFile(
                    url=url,
                    bytes=int(size) if size and size.isdigit() else None,
                    etag=resp.headers.get("ETag"),
                    last_modified=resp.headers.get("Last-Modified"),
                )
        except urllib.error.HTTPError as exc:
            if exc.code in (405, 501):  # no HEAD here: GDAL's range GETs will tell
                return RemoteFile(url=url, bytes=None, etag=None, last_modified=None)
            if exc.code not in _RETRY_STATUS:
                raise FetchError(f"{what}: {url}: HTTP {exc.code} {exc.reason}") from None
            last = f"HTTP {exc.code} {exc.reason}"
        except (urllib.error.URLError, OSError) as exc:
            last = str(getattr(exc, "reason", exc))
        if attempt < retries:
            log.info("%s: %s (%s); retry %d of %d", what, url, last, attempt + 1, retries)
            _backoff_sleep(backoff, attempt)
    raise FetchError(f"{what}: {url}: unreachable after {retries + 1} attempts ({last})")


def _http_status(exc: Exception) -> int | None:
    m = re.search(r"HTTP (?:response code|error code)\D{0,3}(\d{3})", str(exc))
    return int(m.group(1)) if m else None


class RemoteCog:
    """One remote COG band, opened under the caller's GDAL environment, read by window."""

    def __init__(
        self, url: str, *, what: str, retries: int, backoff: float, nodata: float | None = None
    ) -> None:
        _check_scheme(url, what)
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
        ds = rasterio.open(f"/vsicurl/{self.url}")
        try:
            self._check(ds)
        except BaseException:
            ds.close()
            raise
        self.ds = ds

    def _check(self, ds: Any) -> None:
        if ds.driver != "GTiff":
            raise FetchError(f"{self.what}: {self.url}: is a {ds.driver} file, not a GeoTIFF/COG")
        if ds.crs is None:
            raise FetchError(f"{self.what}: {self.url}: has no CRS")
        bh, bw = ds.block_shapes[0]
        tiled = bw < ds.width or ds.width <= _MAX_STRIP_WIDTH
        if not tiled:
            raise FetchError(
                f"{self.what}: {self.url}: is not a cloud-optimized GeoTIFF (stored in strips "
                f"of {bw}x{bh} pixels, not tiles), so reading a window would download whole "
                "image rows; convert it with gdal_translate -of COG or pick another asset"
            )
        self.info = {
            "driver": ds.driver,
            "layout": ds.tags(ns="IMAGE_STRUCTURE").get("LAYOUT", "GeoTIFF"),
            "block": [bh, bw],
            "overviews": len(ds.overviews(1)),
            "shape": [ds.height, ds.width],
            "crs": ds.crs.to_string(),
            "transform": list(ds.transform)[:6],
            "dtype": ds.dtypes[0],
        }

    def _with_retries(self, fn: Callable[[], T], action: str) -> T:
        last: Exception | None = None
        for attempt in range(self.retries + 1):
            try:
                return fn()
            except FetchError:
                raise
            except RasterioError as exc:
                status = _http_status(exc)
                if status is not None and status not in _RETRY_STATUS:
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
                _backoff_sleep(self.backoff, attempt)
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
