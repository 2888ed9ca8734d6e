"""Safe zip extraction: every member checked before anything is written.

Members that are absolute, carry a drive letter, resolve outside the target (``../x`` or
through an existing symbolic link), symbolic links and encrypted members are refused; each
file is written atomically, so an interrupted extraction leaves no half file and resumes.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import stat
import zipfile
from pathlib import Path

from groundsynth.errors import FetchError
from groundsynth.io import atomic_path

__all__ = ["safe_extract"]

logger = logging.getLogger(__name__)

_HASH_BLOCK = 1 << 20
_DRIVE = re.compile(r"^[A-Za-z]:")


def safe_extract(zip_path: str | os.PathLike[str], target_dir: str | os.PathLike[str]) -> int:
    """Extract ``zip_path`` under ``target_dir`` safely; return the number of file members.

    Every member is checked before anything is written: a name that is absolute, carries a
    drive letter or resolves outside ``target_dir`` (``../x``, or through an existing
    symbolic link), a symbolic-link member and an encrypted member each raise
    :class:`~groundsynth.errors.FetchError`. Each file is written to a temporary name and
    renamed, so an interrupted extraction leaves no partial file; a file already present
    with the member's size is kept (this is how an interrupted extraction resumes).
    """
    return extract(Path(zip_path), Path(target_dir))[1]


def extract(zip_path: Path, target_dir: Path) -> tuple[int, int]:
    """Extract safely; return (files written, file members)."""
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
