"""Download and unpack the public ARAS400k dataset (Zenodo record 18890661).

Downloads use only the standard library. A file is fetched into ``<dest>.part``; an
interrupted or truncated transfer is resumed with an HTTP ``Range`` request, the MD5 is
computed while the bytes stream in, and the ``.part`` is moved onto its final name
(:func:`os.replace`, atomic) only once the checksum matches. Archives are unpacked by
:func:`safe_extract`, which checks every member before writing anything, refuses members
that would land outside the target directory and symbolic links, and writes each file
atomically so that an interrupted extraction leaves no half-written file and can be resumed.

Example::

    from groundsynth.data.fetch import fetch_aras400k

    results = fetch_aras400k("data/aras400k", splits=("test", "val"))
    # data/aras400k/test/images/*.png, data/aras400k/test/masks/*.png, ...
"""

from __future__ import annotations

import hashlib
import http.client
import json
import logging
import os
import re
import shutil
import stat
import time
import urllib.error
import urllib.parse
import urllib.request
import zipfile
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from groundsynth.errors import FetchError, InputError
from groundsynth.io import atomic_path, write_json
from groundsynth.runs import file_digest

__all__ = [
    "ARAS400K_BASE_URL",
    "ARAS400K_FILES",
    "ARAS400K_RECORD",
    "FetchResult",
    "ProgressCallback",
    "download",
    "fetch_aras400k",
    "safe_extract",
]

logger = logging.getLogger(__name__)

#: Zenodo record of the ARAS400k release.
ARAS400K_RECORD = "18890661"
#: Where the record's files are served; a file's URL is ``f"{base}/{split}.zip"``.
ARAS400K_BASE_URL = f"https://zenodo.org/records/{ARAS400K_RECORD}/files"
#: Published MD5 of each split's archive (``<split>.zip``).
ARAS400K_FILES: dict[str, str] = {
    "train": "95cd5caea68c813fd86888f9cd95b627",
    "val": "76e61fd7557d65ba0596e44c0f92b43f",
    "test": "01679231ee8e38701f5d3ab7de0b5719",
    "synth": "0dc95bfdda44a816ade0d7ea747e4f9c",
}

#: ``progress(bytes_done, bytes_total_or_None)``, called as the bytes of one file arrive.
ProgressCallback = Callable[[int, int | None], None]

_USER_AGENT = "groundsynth-fetch (+https://github.com/groundsynth/groundsynth)"
_RETRY_STATUS = frozenset({408, 425, 429, 500, 502, 503, 504})
_MAX_BACKOFF = 60.0
_HASH_BLOCK = 1 << 20
_DRIVE = re.compile(r"^[A-Za-z]:")
_MD5 = re.compile(r"^[0-9a-f]{32}$")
_CONTENT_RANGE = re.compile(r"^\s*bytes\s+(\d+)-(\d+)/(\d+|\*)\s*$", re.IGNORECASE)
_UNSATISFIED_RANGE = re.compile(r"^\s*bytes\s+\*/(\d+)\s*$", re.IGNORECASE)
_STATE_DIR = ".fetch"


@dataclass(frozen=True)
class FetchResult:
    """What :func:`fetch_aras400k` did for one split."""

    split: str
    #: The split's directory, ``<out_dir>/<split>``.
    path: Path
    url: str
    #: The downloaded archive; ``None`` once it was removed after extraction.
    zip_path: Path | None
    #: Bytes received over the network by this call (0 when nothing had to be fetched).
    bytes_downloaded: int
    #: Bytes from an earlier, interrupted attempt or run were kept and completed.
    resumed: bool
    #: The split was already complete (extraction marker present, or archive verified).
    skipped: bool
    #: Files written by this call's extraction.
    files_extracted: int
    #: File members in the archive (already present ones included); 0 when not extracted.
    files_total: int


# --------------------------------------------------------------------------- download


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
class _Transfer:
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
    return _download(
        url,
        Path(dest),
        md5=md5,
        progress=progress,
        retries=retries,
        timeout=timeout,
        chunk_size=chunk_size,
        backoff=backoff,
    ).path


def _download(
    url: str,
    dest: Path,
    *,
    md5: str | None,
    progress: ProgressCallback | None,
    retries: int,
    timeout: float,
    chunk_size: int,
    backoff: float,
) -> _Transfer:
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
            return _Transfer(dest, 0, False, True)
        actual = file_digest(dest, "md5")
        if actual == md5:
            logger.info("%s exists with the expected MD5; not downloading again", dest)
            return _Transfer(dest, 0, False, True)
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
    return _Transfer(dest, part.received, resumed, False)


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


def safe_extract(zip_path: str | os.PathLike[str], target_dir: str | os.PathLike[str]) -> int:
    """Extract ``zip_path`` under ``target_dir`` safely; return the number of file members.

    Every member is checked before anything is written: a name that is absolute, carries a
    drive letter or resolves outside ``target_dir`` (``../x``, or through an existing
    symbolic link), a symbolic-link member and an encrypted member each raise
    :class:`~groundsynth.errors.FetchError`. Each file is written to a temporary name and
    renamed, so an interrupted extraction leaves no partial file; a file already present
    with the member's size is kept (this is how an interrupted extraction resumes).
    """
    return _extract(Path(zip_path), Path(target_dir))[1]


def _extract(zip_path: Path, target_dir: Path) -> tuple[int, int]:
    target_dir.mkdir(parents=True, exist_ok=True)
    root = target_dir.resolve()
    try:
        with zipfile.ZipFile(zip_path) as archive:
            plan = _plan(archive, root, zip_path)
            needed = sum(info.file_size for info, _, keep in plan if not keep)
            free = shutil.disk_usage(root).free
            if needed > free:
                raise FetchError(
                    f"extracting {zip_path} needs {needed / 1e9:.2f} GB but only "
                    f"{free / 1e9:.2f} GB are free under {root}"
                )
            written = total = 0
            for info, dest, keep in plan:
                if info.is_dir():
                    dest.mkdir(parents=True, exist_ok=True)
                    continue
                total += 1
                if keep:
                    continue
                dest.parent.mkdir(parents=True, exist_ok=True)
                with atomic_path(dest) as tmp, archive.open(info) as src, open(tmp, "wb") as out:
                    shutil.copyfileobj(src, out, _HASH_BLOCK)
                written += 1
    except (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError) as err:
        raise FetchError(
            f"{zip_path} is not a usable zip archive ({err}); delete it and fetch again"
        ) from err
    logger.info(
        "extracted %s into %s: %d file(s) written, %d already present",
        zip_path,
        root,
        written,
        total - written,
    )
    return written, total


def _plan(
    archive: zipfile.ZipFile, root: Path, zip_path: Path
) -> list[tuple[zipfile.ZipInfo, Path, bool]]:
    """Check every member; return (member, destination, already present) for each."""
    problems: list[str] = []
    plan: list[tuple[zipfile.ZipInfo, Path, bool]] = []
    safe_parents: dict[Path, bool] = {}
    for info in archive.infolist():
        name = info.filename
        parts = name.replace("\\", "/").split("/")
        kept = [p for p in parts if p not in ("", ".")]
        if name.startswith(("/", "\\")) or _DRIVE.match(name):
            problems.append(f"{name!r} (absolute path)")
            continue
        if ".." in parts or not kept:
            problems.append(f"{name!r} (escapes the target directory)")
            continue
        if stat.S_ISLNK(info.external_attr >> 16):
            problems.append(f"{name!r} (symbolic link)")
            continue
        if info.flag_bits & 0x1:
            problems.append(f"{name!r} (encrypted)")
            continue
        dest = root.joinpath(*kept)
        parent = dest.parent
        if parent not in safe_parents:
            safe_parents[parent] = parent.resolve().is_relative_to(root)
        if not safe_parents[parent]:
            problems.append(f"{name!r} (resolves outside the target through a link)")
            continue
        plan.append((info, dest, not info.is_dir() and _present(dest, info.file_size)))
    if problems:
        shown = ", ".join(problems[:5]) + (f" and {len(problems) - 5} more" if problems[5:] else "")
        raise FetchError(
            f"refusing to extract {zip_path}: unsafe member(s) {shown}; nothing was extracted"
        )
    return plan


def _present(dest: Path, size: int) -> bool:
    try:
        st = os.lstat(dest)
    except FileNotFoundError:
        return False
    return stat.S_ISREG(st.st_mode) and st.st_size == size


# --------------------------------------------------------------------------- ARAS400k


def fetch_aras400k(
    out_dir: str | os.PathLike[str],
    splits: Iterable[str] | str = ("test",),
    *,
    base_url: str = ARAS400K_BASE_URL,
    md5s: Mapping[str, str | None] | None = None,
    extract: bool = True,
    keep_zip: bool = False,
    progress: ProgressCallback | None = None,
    retries: int = 5,
    timeout: float = 60.0,
) -> list[FetchResult]:
    """Download ARAS400k splits into the dataset root ``out_dir`` and unpack them.

    Each split's archive ``<base_url>/<split>.zip`` is downloaded to
    ``<out_dir>/.fetch/<split>.zip`` (resumable, MD5-verified, see :func:`download`) and
    extracted into ``out_dir``, giving ``<out_dir>/<split>/images/*.png`` and
    ``<out_dir>/<split>/masks/*.png``. A finished split leaves
    ``<out_dir>/.fetch/<split>.done``; a rerun then skips it at once. The archive is
    deleted after extraction unless ``keep_zip``; with ``extract=False`` it is only
    downloaded. ``md5s`` overrides published checksums per split (for mirrors and tests;
    ``None`` for a split skips verification). The whole set is large (train and synth
    are tens of GB): fetch only the splits you need.
    """
    if isinstance(splits, str):
        splits = (splits,)
    splits = tuple(dict.fromkeys(splits))
    checksums: dict[str, str | None] = {
        split: md5.lower() if md5 else None
        for split, md5 in {**ARAS400K_FILES, **(md5s or {})}.items()
    }
    unknown = [s for s in splits if s not in checksums]
    if unknown or not splits:
        raise InputError(
            f"unknown ARAS400k split(s) {unknown}; choose from {sorted(checksums)}"
            if unknown
            else f"no split to fetch; choose from {sorted(checksums)}"
        )
    out = Path(out_dir)
    (out / _STATE_DIR).mkdir(parents=True, exist_ok=True)
    results = []
    for split in splits:
        url = f"{base_url.rstrip('/')}/{split}.zip"
        fetched = _fetch_split(
            split,
            url,
            checksums[split],
            out,
            extract=extract,
            keep_zip=keep_zip,
            progress=progress,
            retries=retries,
            timeout=timeout,
        )
        results.append(fetched)
    return results


def _fetch_split(
    split: str,
    url: str,
    md5: str | None,
    out: Path,
    *,
    extract: bool,
    keep_zip: bool,
    progress: ProgressCallback | None,
    retries: int,
    timeout: float,
) -> FetchResult:
    state = out / _STATE_DIR
    marker = state / f"{split}.done"
    zip_path = state / f"{split}.zip"
    if extract and _marker_matches(marker, md5) and (out / split).is_dir():
        logger.info("ARAS400k %s is already in %s (%s); skipping", split, out / split, marker)
        files = json.loads(marker.read_text(encoding="utf-8")).get("files", 0)
        return FetchResult(
            split=split,
            path=out / split,
            url=url,
            zip_path=zip_path if zip_path.is_file() else None,
            bytes_downloaded=0,
            resumed=False,
            skipped=True,
            files_extracted=0,
            files_total=files,
        )
    logger.info("fetching ARAS400k %s from %s", split, url)
    transfer = _download(
        url,
        zip_path,
        md5=md5,
        progress=progress,
        retries=retries,
        timeout=timeout,
        chunk_size=1 << 20,
        backoff=1.0,
    )
    written = total = 0
    if extract:
        written, total = _extract(zip_path, out)
        if not (out / split / "images").is_dir():
            logger.warning("%s did not contain %s/images/ as expected", zip_path, split)
        write_json(
            marker,
            {
                "split": split,
                "url": url,
                "md5": md5,
                "files": total,
                "finished": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            },
        )
        if not keep_zip:
            zip_path.unlink()
    return FetchResult(
        split=split,
        path=out / split,
        url=url,
        zip_path=zip_path if zip_path.is_file() else None,
        bytes_downloaded=transfer.bytes_received,
        resumed=transfer.resumed,
        skipped=transfer.skipped and written == 0,
        files_extracted=written,
        files_total=total,
    )


def _marker_matches(marker: Path, md5: str | None) -> bool:
    try:
        done = json.loads(marker.read_text(encoding="utf-8"))
    except (FileNotFoundError, json.JSONDecodeError):
        return False
    return isinstance(done, dict) and done.get("md5") == md5
