"""Windowed reads of remote Cloud-Optimized GeoTIFFs over HTTP range requests, with provenance.

The pieces every acquisition needs, whatever the product:

- :func:`head` asks a file's size (``Content-Length``), ``ETag``, ``Last-Modified`` and
  ``Content-Type`` with one ``HEAD`` request, retrying 408/429/5xx answers and dropped
  connections with exponential back-off (:func:`retry_delay`); a 404/410 means "no such file"
  (``None``, or an error with ``missing_ok=False``), anything else that does not succeed is a
  :class:`~groundsynth.errors.FetchError` naming the URL.
- :func:`version_changes` compares two answers: a file whose size or ETag (or, without an
  ETag, date) differs is another version of the file.
- :class:`CogReader` opens a file through GDAL's ``/vsicurl/`` inside a :class:`rasterio.Env`
  with :func:`gdal_options` (no directory listing or side-car probing, GDAL's own retries of
  429/5xx, time-outs, no cross-open caching of this URL), refuses anything that is not a
  tiled GeoTIFF (:func:`check_cog`) before reading a pixel, reads windows (GDAL fetches the header and only the
  internal tiles the window touches), retries failed reads by reopening with back-off, and
  counts the bytes GDAL asked for (:class:`ByteMeter`).

Example::

    remote = head(url, retries=5, backoff=1.0, timeout=30.0)
    with CogReader(remote, what="N00E006 map", retries=5, backoff=1.0, timeout=30.0) as cog:
        pixels = cog.read(Window(6240, 31800, 1200, 1200))
        cog.bytes_fetched  # header + the tiles under the window
"""

from __future__ import annotations

import logging
import math
import re
import time
import urllib.error
import urllib.request
import warnings
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import rasterio
from rasterio.errors import NotGeoreferencedWarning, RasterioError
from rasterio.windows import Window

from groundsynth import __version__
from groundsynth.acquire.meter import ByteMeter
from groundsynth.errors import FetchError

__all__ = [
    "ByteMeter",
    "CogReader",
    "RemoteFile",
    "check_cog",
    "check_scheme",
    "checked",
    "gdal_options",
    "head",
    "http_status",
    "is_tiled",
    "retry_delay",
    "version_changes",
]

log = logging.getLogger(__name__)

_USER_AGENT = f"groundsynth/{__version__} (+https://github.com/groundsynth/groundsynth)"
#: HTTP answers worth another try: time-outs, rate limits, server errors.
RETRY_STATUS = frozenset({408, 425, 429, 500, 502, 503, 504})
_MISSING_STATUS = frozenset({404, 410})
_MAX_BACKOFF = 60.0
_HTTP_CODE = re.compile(r"HTTP (?:response code|error code)\D{0,3}(\d{3})", re.IGNORECASE)
_TIFF_MAGIC = (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+")


def gdal_options(*, retries: int, backoff: float, timeout: float) -> dict[str, Any]:
    """GDAL configuration for range reads of public COGs over HTTP(S).

    ``GDAL_DISABLE_READDIR_ON_OPEN=EMPTY_DIR`` and ``CPL_VSIL_CURL_ALLOWED_EXTENSIONS`` stop
    GDAL listing the remote "folder" and probing side-car files (``.aux.xml``, ``.ovr``...)
    that do not exist; ``GDAL_HTTP_MAX_RETRY``/``GDAL_HTTP_RETRY_DELAY`` make GDAL retry
    429/5xx answers itself (the delay doubles at each try); consecutive ranges are merged into
    one request. ``CPL_VSIL_CURL_NON_CACHED`` drops what GDAL kept of a remote file when it is
    closed, so a file read again after it changed on the server is not served from memory.
    """
    return {
        "GDAL_DISABLE_READDIR_ON_OPEN": "EMPTY_DIR",
        "CPL_VSIL_CURL_ALLOWED_EXTENSIONS": ".tif,.tiff,.TIF,.TIFF",
        "GDAL_HTTP_MAX_RETRY": str(retries),
        "GDAL_HTTP_RETRY_DELAY": f"{max(backoff, 0.001):g}",
        "GDAL_HTTP_TIMEOUT": str(max(1, math.ceil(timeout))),
        "GDAL_HTTP_CONNECTTIMEOUT": str(max(1, math.ceil(min(timeout, 30.0)))),
        "GDAL_HTTP_MERGE_CONSECUTIVE_RANGES": "YES",
        "GDAL_HTTP_USERAGENT": _USER_AGENT,
        "CPL_VSIL_CURL_NON_CACHED": "/vsicurl/",
    }


# ----------------------------------------------------------------------------- HEAD
@dataclass(frozen=True)
class RemoteFile:
    """What a ``HEAD`` request said about a remote file."""

    url: str
    size: int | None
    etag: str | None
    last_modified: str | None
    content_type: str | None = None

    def record(self) -> dict[str, Any]:
        """A JSON-ready record (provenance, journals)."""
        return asdict(self)

    @classmethod
    def from_record(cls, record: dict[str, Any]) -> RemoteFile:
        return cls(
            url=record["url"],
            size=record.get("size"),
            etag=record.get("etag"),
            last_modified=record.get("last_modified"),
            content_type=record.get("content_type"),
        )


def version_changes(old: RemoteFile, new: RemoteFile) -> list[str]:
    """How ``new`` differs from ``old`` as a version of a file (empty: the same version).

    Size and ETag are compared when both answers have them; ``Last-Modified`` only when
    neither has an ETag (a mirror may re-date identical files).
    """
    out = []
    if old.size is not None and new.size is not None and old.size != new.size:
        out.append(f"size {old.size} -> {new.size} bytes")
    if old.etag and new.etag and old.etag != new.etag:
        out.append(f"ETag {old.etag} -> {new.etag}")
    if (
        not (old.etag or new.etag)
        and old.last_modified
        and new.last_modified
        and old.last_modified != new.last_modified
    ):
        out.append(f"Last-Modified {old.last_modified} -> {new.last_modified}")
    return out


def retry_delay(backoff: float, failures: int) -> float:
    """Seconds to wait after ``failures`` failed tries: ``backoff``, doubling, at most 60."""
    return min(backoff * 2 ** max(failures - 1, 0), _MAX_BACKOFF)


def check_scheme(url: str, what: str) -> None:
    """Refuse (:class:`FetchError`) a URL that range requests cannot read."""
    if not url.lower().startswith(("http://", "https://")):
        raise FetchError(f"{what}: {url}: only http(s) URLs can be read by range requests")


def head(
    url: str,
    *,
    what: str = "remote file",
    retries: int = 5,
    backoff: float = 1.0,
    timeout: float = 30.0,
    missing_ok: bool = True,
    head_optional: bool = False,
) -> RemoteFile | None:
    """Ask ``url`` for its size, ETag, date and type; ``None`` when it does not exist (404/410).

    With ``missing_ok=False`` a 404/410 is a :class:`FetchError` like any other HTTP error.
    With ``head_optional=True`` a server that does not answer ``HEAD`` (405/501) gives a
    :class:`RemoteFile` with nothing known but its URL (GDAL's range reads will tell).
    408/429/5xx answers, time-outs and dropped or refused connections are retried after
    ``backoff * 2**k`` seconds, ``retries`` times; then :class:`FetchError` names the URL and
    the last problem. Other HTTP errors (403, 401, ...) fail at once.
    """
    check_scheme(url, what)
    last = ""
    for attempt in range(retries + 1):
        request = urllib.request.Request(
            url, method="HEAD", headers={"User-Agent": _USER_AGENT, "Accept-Encoding": "identity"}
        )
        try:
            with urllib.request.urlopen(request, timeout=timeout) as response:
                length = (response.headers.get("Content-Length") or "").strip()
                return RemoteFile(
                    url=url,
                    size=int(length) if length.isdigit() else None,
                    etag=response.headers.get("ETag"),
                    last_modified=response.headers.get("Last-Modified"),
                    content_type=response.headers.get("Content-Type"),
                )
        except urllib.error.HTTPError as exc:
            exc.close()
            if missing_ok and exc.code in _MISSING_STATUS:
                return None
            if head_optional and exc.code in (405, 501):
                return RemoteFile(url=url, size=None, etag=None, last_modified=None)
            if exc.code not in RETRY_STATUS:
                hint = (
                    " (S3 answers 403 for a missing file in a bucket that cannot be listed; "
                    "check the base URL)"
                    if exc.code == 403
                    else ""
                )
                raise FetchError(f"{what}: {url}: HTTP {exc.code} {exc.reason}{hint}") from None
            last = f"HTTP {exc.code} {exc.reason}"
        except urllib.error.URLError as exc:
            last = f"network error: {exc.reason}"
        except OSError as exc:  # time-outs, resets after the connection was made
            last = f"network error: {exc}"
        if attempt < retries:
            delay = retry_delay(backoff, attempt + 1)
            log.info(
                "%s: HEAD %s failed (%s); retry %d of %d in %.1f s",
                what,
                url,
                last,
                attempt + 1,
                retries,
                delay,
            )
            time.sleep(delay)
    raise FetchError(
        f"{what}: {url}: unreachable after {retries + 1} attempt(s) ({last}); "
        "check the URL (--base-url) and the network, then run again"
    )


# ----------------------------------------------------------------------------- reader
class _Transient(Exception):
    """A failure that another attempt may not meet (a dropped connection, a 5xx)."""


def _first_bytes(url: str, timeout: float) -> tuple[bytes, str | None]:
    """The first 16 bytes of ``url`` and its Content-Type (why GDAL did not recognise it)."""
    request = urllib.request.Request(
        url,
        headers={"User-Agent": _USER_AGENT, "Range": "bytes=0-15", "Accept-Encoding": "identity"},
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.read(16), response.headers.get("Content-Type")
    except urllib.error.HTTPError as exc:
        exc.close()
        if exc.code in RETRY_STATUS:
            raise _Transient(f"HTTP {exc.code} {exc.reason}") from None
        return b"", f"HTTP {exc.code} {exc.reason}"
    except (urllib.error.URLError, OSError) as exc:
        raise _Transient(f"network error: {getattr(exc, 'reason', exc)}") from None


def http_status(exc: BaseException) -> int | None:
    """The HTTP status in a GDAL error message, if it names one."""
    m = _HTTP_CODE.search(str(exc))
    return int(m.group(1)) if m else None


def is_tiled(ds: rasterio.io.DatasetReader) -> bool:
    """Whether a GeoTIFF is organised in tiles (TIFF tiles are square multiples of 16 here)."""
    bh, bw = ds.block_shapes[0]
    return (bw < ds.width and bh > 1) or (bw == bh and bw % 16 == 0)


def check_cog(ds: rasterio.io.DatasetReader, *, what: str, url: str) -> dict[str, Any]:
    """Refuse (:class:`FetchError`) a file that is not a tiled GeoTIFF; else its layout record.

    A GeoTIFF stored in strips is refused: a window of it would cost whole rows of the image.
    """
    if ds.driver != "GTiff":
        raise FetchError(f"{what}: {url}: is a {ds.driver} file, not a GeoTIFF/COG")
    bh, bw = ds.block_shapes[0]
    if not is_tiled(ds):
        raise FetchError(
            f"{what}: {url}: is not a cloud-optimized GeoTIFF: stored in strips of "
            f"{bw}x{bh} pixels, not tiles, so a window would cost whole rows of the image; "
            "refusing to read it (convert it with gdal_translate -of COG, or check the URL)"
        )
    return {
        "driver": ds.driver,
        "layout": ds.tags(ns="IMAGE_STRUCTURE").get("LAYOUT", "GeoTIFF"),
        "compress": (ds.compression.value if ds.compression else None),
        "block": [bh, bw],
        "overviews": len(ds.overviews(1)),
        "shape": [ds.height, ds.width],
        "count": ds.count,
        "dtype": ds.dtypes[0],
        "crs": ds.crs.to_string() if ds.crs else None,
        "transform": list(ds.transform)[:6],
        "nodata": ds.nodata,
    }


def checked(
    ds: rasterio.io.DatasetReader, check: Callable[[rasterio.io.DatasetReader], Any]
) -> rasterio.io.DatasetReader:
    """``ds`` once ``check(ds)`` has passed; closed if it raises."""
    try:
        check(ds)
    except BaseException:
        ds.close()
        raise
    return ds


class CogReader:
    """One remote COG, opened by :func:`rasterio.open` on ``/vsicurl/URL``, read by window.

    Use as a context manager: it enters a :class:`rasterio.Env` with :func:`gdal_options`
    (plus ``CPL_DEBUG`` for the byte count; their ``CPL_VSIL_CURL_NON_CACHED`` makes a reopen
    read the server again, not GDAL's cache), opens and checks the file (``check`` may add
    product checks; it raises :class:`FetchError`), and closes everything on exit. Opening
    and each :meth:`read` are retried ``retries`` times with back-off, reopening the file;
    then :class:`FetchError` names the URL, the window and the last error.
    """

    def __init__(
        self,
        remote: RemoteFile,
        *,
        what: str,
        retries: int = 5,
        backoff: float = 1.0,
        timeout: float = 30.0,
        check: Callable[[rasterio.io.DatasetReader], None] | None = None,
    ) -> None:
        check_scheme(remote.url, what)
        self.remote = remote
        self.url = remote.url
        self.what = what
        self.retries = retries
        self.backoff = backoff
        self.timeout = timeout
        self._check_extra = check
        self.ds: rasterio.io.DatasetReader | None = None
        self.info: dict[str, Any] = {}
        self.meter = ByteMeter(remote.url, remote.size)
        self._env: rasterio.Env | None = None

    @property
    def path(self) -> str:
        return f"/vsicurl/{self.url}"

    @property
    def bytes_fetched(self) -> int:
        """Bytes GDAL requested for this file so far (header and tiles)."""
        return self.meter.bytes

    def __enter__(self) -> CogReader:
        options = gdal_options(retries=self.retries, backoff=self.backoff, timeout=self.timeout)
        self._env = rasterio.Env(CPL_DEBUG=True, **options)
        self._env.__enter__()
        self.meter.__enter__()
        try:
            self._retrying(self._open, "opening")
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self._close()
        self.meter.__exit__()
        if self._env is not None:
            self._env.__exit__(None, None, None)
            self._env = None

    def _close(self) -> None:
        if self.ds is not None:
            self.ds.close()
            self.ds = None

    def _open(self) -> None:
        self._close()
        problems = self.meter.problems
        try:
            with warnings.catch_warnings():  # a damaged header read is retried below
                warnings.simplefilter("ignore", NotGeoreferencedWarning)
                ds = rasterio.open(self.path)
        except RasterioError as exc:
            if "not recognized as" in str(exc) or "not a TIFF" in str(exc):
                self._not_a_tiff(exc)
            raise
        if self.meter.problems > problems:  # GDAL opened it from a damaged header read
            ds.close()
            raise _Transient(self.meter.last_problem)
        self.ds = checked(ds, self._check)

    def _not_a_tiff(self, exc: BaseException) -> None:
        """GDAL did not recognise the file: a transfer problem (retried) or not a TIFF."""
        head_bytes, kind = _first_bytes(self.url, self.timeout)
        if head_bytes[:4] in _TIFF_MAGIC:
            raise _Transient(f"the header could not be read ({exc})")
        raise FetchError(
            f"{self.what}: {self.url}: not a GeoTIFF (the server sent "
            f"{kind or self.remote.content_type or 'an unknown type'} starting with "
            f"{head_bytes!r}); check the URL (--base-url)"
        )

    def _check(self, ds: rasterio.io.DatasetReader) -> None:
        self.info = check_cog(ds, what=self.what, url=self.url)
        if self._check_extra is not None:
            self._check_extra(ds)

    def _retrying(self, fn: Callable[[], Any], action: str) -> Any:
        last: BaseException | None = None
        for attempt in range(self.retries + 1):
            try:
                if action != "opening" and self.ds is None:
                    self._open()
                return fn()
            except FetchError:
                raise
            except _Transient as exc:
                last = exc
            except RasterioError as exc:
                status = http_status(exc)
                if status in _MISSING_STATUS:
                    raise FetchError(
                        f"{self.what}: {self.url}: HTTP {status} during {action} "
                        "(the file disappeared from the server?)"
                    ) from None
                if status is not None and status not in RETRY_STATUS:
                    raise FetchError(
                        f"{self.what}: {self.url}: HTTP {status} during {action}"
                    ) from None
                last = exc
            self._close()
            if attempt < self.retries:
                delay = retry_delay(self.backoff, attempt + 1)
                log.warning(
                    "%s: %s: %s failed (%s); retry %d of %d in %.1f s",
                    self.what,
                    self.url,
                    action,
                    last,
                    attempt + 1,
                    self.retries,
                    delay,
                )
                time.sleep(delay)
        raise FetchError(
            f"{self.what}: {self.url}: {action} failed {self.retries + 1} time(s) ({last}); "
            "run again to resume"
        )

    def read(self, window: Window, indexes: int | Sequence[int] | None = None) -> np.ndarray:
        """Pixels of ``window`` (all bands unless ``indexes``), retried on read errors."""

        def _read() -> np.ndarray:
            if self.ds is None:  # pragma: no cover - _retrying reopens first
                raise FetchError(f"{self.what}: {self.url}: not open")
            problems = self.meter.problems
            data = self.ds.read(indexes, window=window)
            if self.meter.problems > problems:  # GDAL carried on after a failed transfer
                raise _Transient(self.meter.last_problem)
            return data

        box = f"{window.width}x{window.height} at col {window.col_off}, row {window.row_off}"
        return self._retrying(_read, f"reading the window {box}")
