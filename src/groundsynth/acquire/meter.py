"""What GDAL fetched over HTTP, read from its debug log: bytes per URL and transfer problems.

GDAL logs each HTTP range it downloads (``VSICURL: Downloading a-b (url)``) when its debug
messages are on (``CPL_DEBUG``), and warns when a transfer fails (``IO error during
reading``, ``transfer closed``...) even where it then carries on with what it has. rasterio
forwards both to Python logging. While a :class:`ByteMeter` is active, one shared filter on
those loggers hands each record to every active meter: a meter adds up the ranges of its
URL (capped at the file size when known) and counts transfer problems, so that the caller can
retry what GDAL may have read incompletely. GDAL's debug records, its notices of its own
retries and the transfer problems are kept out of the logs (the caller logs what it does
about them); other warnings pass. Meters may be active in several threads at once.
"""

from __future__ import annotations

import logging
import re
import threading

__all__ = ["ByteMeter"]

_DOWNLOADING = re.compile(r"Downloading (\d+)-(\d+) \((.+?)\)")
_GDAL_RETRYING = re.compile(r"Retrying again in", re.IGNORECASE)
_IO_PROBLEM = re.compile(
    r"IO error|I/O error|read error|transfer closed|connection|curl|timed? ?out|"
    r"HTTP error code|download",
    re.IGNORECASE,
)
#: Loggers through which rasterio forwards GDAL's messages.
_GDAL_LOGGERS = ("rasterio._env", "rasterio._err", "rasterio._base", "rasterio._io")


class ByteMeter:
    """Counts the bytes GDAL requests for ``url`` while active (``with ByteMeter(url):``)."""

    def __init__(self, url: str, size: int | None = None) -> None:
        self.url = url
        self.size = size
        #: Bytes in the ranges GDAL requested, and how many requests.
        self.bytes = 0
        self.requests = 0
        #: GDAL warnings of failed transfers (dropped connections, short reads), and the last.
        self.problems = 0
        self.last_problem = ""

    def observe(self, level: int, message: str) -> None:
        if level >= logging.WARNING:
            if _IO_PROBLEM.search(message) and not _GDAL_RETRYING.search(message):
                self.problems += 1
                self.last_problem = message
            return
        m = _DOWNLOADING.search(message)
        if m is not None and m.group(3) == self.url:
            start, end = int(m.group(1)), int(m.group(2))
            if self.size is not None:
                end = min(end, self.size - 1)
            self.bytes += max(end - start + 1, 0)
            self.requests += 1

    def __enter__(self) -> ByteMeter:
        _DISPATCH.add(self)
        return self

    def __exit__(self, *exc: object) -> None:
        _DISPATCH.remove(self)


class _Dispatch(logging.Filter):
    """The one filter on rasterio's GDAL loggers while any meter is active."""

    def __init__(self) -> None:
        super().__init__()
        self.lock = threading.Lock()
        self.meters: list[ByteMeter] = []
        self.saved: list[tuple[logging.Logger, int, bool]] = []

    def add(self, meter: ByteMeter) -> None:
        with self.lock:
            if not self.meters:
                for name in _GDAL_LOGGERS:
                    logger = logging.getLogger(name)
                    self.saved.append((logger, logger.level, logger.isEnabledFor(logging.DEBUG)))
                    logger.setLevel(logging.DEBUG)
                    logger.addFilter(self)
            self.meters.append(meter)

    def remove(self, meter: ByteMeter) -> None:
        with self.lock:
            if meter in self.meters:
                self.meters.remove(meter)
            if not self.meters:
                for logger, level, _ in self.saved:
                    logger.removeFilter(self)
                    logger.setLevel(level)
                self.saved.clear()

    def filter(self, record: logging.LogRecord) -> bool:
        if logging.INFO <= record.levelno < logging.WARNING:
            return True
        try:
            message = record.getMessage()
        except (TypeError, ValueError):  # pragma: no cover - a malformed foreign record
            return False
        for meter in list(self.meters):
            meter.observe(record.levelno, message)
        if record.levelno >= logging.WARNING:
            return not (_GDAL_RETRYING.search(message) or _IO_PROBLEM.search(message))
        # debug records: shown only where the logger showed debug messages before
        return any(shown for lg, _, shown in self.saved if lg.name == record.name)


_DISPATCH = _Dispatch()
