"""Resumable, checksum-verified HTTP downloads (standard library only).

A file is fetched into ``<dest>.part``; an interrupted or truncated transfer is resumed with an
HTTP ``Range`` request, the MD5 is computed while the bytes stream in, and the ``.part`` is
moved onto its final name (:func:`os.replace`, atomic) only once the checksum matches.
"""

from __future__ import annotations

import hashlib
import http.client
import logging
import os
import re
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from groundsynth.errors import FetchError, InputError
from groundsynth.runs import file_digest

__all__ = ["ProgressCallback", "Transfer", "download", "transfer"]

logger = logging.getLogger(__name__)

#: ``progress(bytes_done, bytes_total_or_None)``, called as the bytes of one file arrive.
ProgressCallback = Callable[[int, int | None], None]

_USER_AGENT = "groundsynth-fetch (+https://github.com/groundsynth/groundsynth)"
_RETRY_STATUS = frozenset({408, 425, 429, 500, 502, 503, 504})
_MAX_BACKOFF = 60.0
_HASH_BLOCK = 1 << 20
_MD5 = re.compile(r"^[0-9a-f]{32}$")
_CONTENT_RANGE = re.compile(r"^\s*bytes\s+(\d+)-(\d+)/(\d+|\*)\s*$", re.IGNORECASE)
_UNSATISFIED_RANGE = re.compile(r"^\s*bytes\s+\*/(\d+)\s*$", re.IGNORECASE)


class _Retryable(Exception):
    """An attempt failed in a way that a later attempt may not."""


class _PartFile:
    """The ``.part`` file of a download, with the running MD5 of what it holds."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.size = 0
        self.received = 0
        self.hasher = hashlib.md5(usedforsecurity=False)
        self.sync()

    def sync(self) -> None:
        """Re-hash the file from disk unless the running hash already covers it."""
        try:
            on_disk = self.path.stat().st_size
        except FileNotFoundError:
            on_disk = 0
        if on_disk == self.size:
            return
        self.hasher = hashlib.md5(usedforsecurity=False)
        self.size = 0
        with open(self.path, "rb") as fh:
            while block := fh.read(_HASH_BLOCK):
                self.hasher.update(block)
                self.size += len(block)

    def reset(self) -> None:
        """Throw away what the part holds (the server will send the file from byte 0)."""
        self.path.unlink(missing_ok=True)
        self.hasher = hashlib.md5(usedforsecurity=False)
        self.size = 0


@dataclass(frozen=True)
class Transfer:
    path: Path
    bytes_received: int
    resumed: bool
    skipped: bool


def download(
    url: str,
    dest: str | os.PathLike[str],
    *,
    md5: str | None,
    progress: ProgressCallback | None = None,
    retries: int = 5,
    timeout: float = 60.0,
    chunk_size: int = 1 << 20,
    backoff: float = 1.0,
) -> Path:
    """Download ``url`` to ``dest`` (resumable, verified, atomic) and return ``dest``.

    Bytes go to ``<dest>.part``. A ``.part`` left by an earlier run is continued with a
    ``Range`` request; a server that ignores the range (answers 200) is read from byte 0.
    A response shorter than its ``Content-Length``/``Content-Range`` promised, a reset
    connection, a time-out or an HTTP 408/429/5xx is retried after ``backoff * 2**k``
    seconds, resuming from the bytes that arrived. ``retries`` bounds the attempts in a
    row that bring no new byte; an attempt that makes progress resets the count.

    When ``md5`` is given the file is moved onto ``dest`` only if its MD5 matches;
    otherwise the ``.part`` is deleted and :class:`~groundsynth.errors.FetchError` names
    the file and both checksums. An existing ``dest`` whose MD5 matches (or any existing
    ``dest`` when ``md5`` is ``None``) is kept and nothing is downloaded.
    """
    return transfer(
        url,
        Path(dest),
        md5=md5,
        progress=progress,
        retries=retries,
        timeout=timeout,
        chunk_size=chunk_size,
        backoff=backoff,
    ).path


def transfer(
    url: str,
    dest: Path,
    *,
    md5: str | None,
    progress: ProgressCallback | None,
    retries: int,
    timeout: float,
    chunk_size: int,
    backoff: float,
) -> Transfer:
    """Like :func:`download`, returning what happened (bytes received, resumed, skipped)."""
    if retries < 0 or chunk_size <= 0 or timeout <= 0:
        raise InputError(
            f"download needs retries >= 0, chunk_size > 0 and timeout > 0; "
            f"got retries={retries}, chunk_size={chunk_size}, timeout={timeout}"
        )
    scheme = urllib.parse.urlsplit(url).scheme.lower()
    if scheme not in ("http", "https", "file"):
        raise InputError(f"cannot download {url!r}: the URL must start with http(s):// or file://")
    md5 = md5.lower() if md5 else None
    if md5 is not None and not _MD5.match(md5):
        raise InputError(f"{md5!r} is not an MD5 checksum (32 hexadecimal digits)")
    if dest.is_file():
        if md5 is None:
            logger.info("%s exists (no checksum to verify); not downloading again", dest)
            return Transfer(dest, 0, False, True)
        actual = file_digest(dest, "md5")
        if actual == md5:
            logger.info("%s exists with the expected MD5; not downloading again", dest)
            return Transfer(dest, 0, False, True)
        logger.warning("%s exists but its MD5 is %s, not %s; downloading again", dest, actual, md5)

    dest.parent.mkdir(parents=True, exist_ok=True)
    part = _PartFile(dest.with_name(dest.name + ".part"))
    stale = part.size > 0
    if stale:
        logger.info("resuming %s from byte %d", url, part.size)
    resumed = _fill(url, part, retries, timeout, chunk_size, backoff, progress)
    actual = part.hasher.hexdigest()
    if md5 is not None and actual != md5 and stale:
        # The bytes left by an earlier run may belong to another version of the file.
        logger.warning("MD5 mismatch after resuming %s; downloading it again from byte 0", url)
        part.reset()
        resumed = _fill(url, part, retries, timeout, chunk_size, backoff, progress)
        actual = part.hasher.hexdigest()
    if md5 is not None and actual != md5:
        part.reset()
        raise FetchError(
            f"{dest.name}: MD5 mismatch (expected {md5}, got {actual}) for {url}; "
            "the download was deleted. Run again to retry, or check the URL and checksum"
        )
    if not part.path.exists():  # an empty body never created the file
        part.path.touch()
    os.replace(part.path, dest)
    logger.info("downloaded %s to %s (%d bytes, MD5 %s)", url, dest, part.size, actual)
    return Transfer(dest, part.received, resumed, False)


def _fill(
    url: str,
    part: _PartFile,
    retries: int,
    timeout: float,
    chunk_size: int,
    backoff: float,
    progress: ProgressCallback | None,
) -> bool:
    """Request until ``part`` holds the whole file; return whether a range was resumed."""
    failures = 0
    while True:
        received_before = part.received
        try:
            return _attempt(url, part, timeout, chunk_size, progress)
        except (_Retryable, urllib.error.URLError, OSError, http.client.HTTPException) as err:
            reason = _describe(err)
            failures = 0 if part.received > received_before else failures + 1
            if failures > retries:
                raise FetchError(
                    f"could not download {url}: {reason} ({failures} attempt(s) in a row "
                    f"without progress). {part.size} bytes are kept in {part.path}; "
                    "run again to resume"
                ) from err
            delay = min(backoff * 2 ** max(failures - 1, 0), _MAX_BACKOFF)
            logger.warning(
                "download of %s interrupted at byte %d (%s); retrying in %.1f s",
                url,
                part.size,
                reason,
                delay,
            )
            time.sleep(delay)
        part.sync()


def _attempt(
    url: str,
    part: _PartFile,
    timeout: float,
    chunk_size: int,
    progress: ProgressCallback | None,
) -> bool:
    """One request: append what the server sends to ``part``; return whether it resumed."""
    offset = part.size
    headers = {"User-Agent": _USER_AGENT, "Accept-Encoding": "identity"}
    if offset:
        headers["Range"] = f"bytes={offset}-"
    request = urllib.request.Request(url, headers=headers)
    try:
        response = urllib.request.urlopen(request, timeout=timeout)
    except urllib.error.HTTPError as err:
        with err:
            complete = _handle_http_error(url, err, part)
        if progress is not None:
            progress(part.size, part.size)
        return complete

    with response:
        status = response.status or 200  # file:// URLs have no status
        if status == 206 and offset:
            start, end, total = _parse_content_range(response.headers.get("Content-Range"))
            if start != offset:
                part.reset()
                raise _Retryable(f"server resumed at byte {start} instead of {offset}")
            expected = end + 1
        else:
            if offset:
                logger.info("server ignored the Range request for %s; restarting from 0", url)
                part.reset()
            length = response.headers.get("Content-Length")
            expected = total = int(length) if length and length.strip().isdigit() else None
        _stream(response, part, total, chunk_size, progress)
    if expected is not None and part.size < expected:
        raise _Retryable(f"connection closed after byte {part.size} of {expected}")
    return bool(offset) and status == 206


def _stream(
    response: http.client.HTTPResponse,
    part: _PartFile,
    total: int | None,
    chunk_size: int,
    progress: ProgressCallback | None,
) -> None:
    if progress is not None:
        progress(part.size, total)
    with open(part.path, "ab") as fh:
        while chunk := response.read(chunk_size):
            fh.write(chunk)
            part.hasher.update(chunk)
            part.size += len(chunk)
            part.received += len(chunk)
            if progress is not None:
                progress(part.size, total)


def _handle_http_error(url: str, err: urllib.error.HTTPError, part: _PartFile) -> bool:
    if err.code == 416 and part.size:
        match = _UNSATISFIED_RANGE.match(err.headers.get("Content-Range") or "")
        total = int(match.group(1)) if match else None
        if total is None or total == part.size:
            logger.info("%s is already complete in %s", url, part.path)
            return True
        logger.warning(
            "%s holds %d bytes but %s has %d; restarting from 0", part.path, part.size, url, total
        )
        part.reset()
        raise _Retryable("partial file larger than the remote file")
    message = f"HTTP {err.code} {err.reason} for {url}"
    if err.code in _RETRY_STATUS:
        raise _Retryable(message)
    if err.code == 404:
        message += " (not found: check the base URL, record and file name)"
    raise FetchError(message)


def _parse_content_range(value: str | None) -> tuple[int, int, int | None]:
    match = _CONTENT_RANGE.match(value or "")
    if match is None:
        raise _Retryable(f"206 response with an unusable Content-Range {value!r}")
    total = None if match.group(3) == "*" else int(match.group(3))
    return int(match.group(1)), int(match.group(2)), total


def _describe(err: BaseException) -> str:
    if isinstance(err, urllib.error.URLError) and not isinstance(err, urllib.error.HTTPError):
        return f"network error: {err.reason}"
    return str(err) or type(err).__name__


# --------------------------------------------------------------------------- extraction
