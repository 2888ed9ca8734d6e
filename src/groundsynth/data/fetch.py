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

import json
import logging
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from groundsynth.data.archive import extract as extract_archive
from groundsynth.data.archive import safe_extract
from groundsynth.data.download import ProgressCallback, download, transfer
from groundsynth.errors import InputError
from groundsynth.io import write_json

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
    moved = transfer(
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
        written, total = extract_archive(zip_path, out)
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
        bytes_downloaded=moved.bytes_received,
        resumed=moved.resumed,
        skipped=moved.skipped and written == 0,
        files_extracted=written,
        files_total=total,
    )


def _marker_matches(marker: Path, md5: str | None) -> bool:
    try:
        done = json.loads(marker.read_text(encoding="utf-8"))
    except (FileNotFoundError, json.JSONDecodeError):
        return False
    return isinstance(done, dict) and done.get("md5") == md5
