"""The journal of an acquisition: what was read from which version of which remote file.

Lives in ``<out>/.acquire/``. Each remote file has a record (``files/<name>.json``: URL, size,
ETag, dates, as a ``HEAD`` saw them when its windows were read); each window read from it has
a GeoTIFF (``windows/<name>/<window>.tif``, absent when the window holds only nodata) and a
record (``windows/<name>/<window>.json``) written atomically *after* the GeoTIFF, so a record
means the window is complete. A rerun reuses a window whose record names the same version
of the file, and compares each file's current ``HEAD`` with its record first, so a file that
changed on the server between runs is noticed instead of being mixed with the old windows.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from pathlib import Path
from typing import Any

from groundsynth.acquire.cog import RemoteFile, version_changes
from groundsynth.io import write_json

__all__ = ["Journal"]

log = logging.getLogger(__name__)


def _load(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, ValueError):
        log.warning("%s: unreadable journal record; the window will be read again", path)
        return None
    return data if isinstance(data, dict) else None


class Journal:
    """Window and file records under ``root`` (``<out>/.acquire``)."""

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root)

    # ------------------------------------------------------------------ files
    def _file_path(self, name: str) -> Path:
        return self.root / "files" / f"{name}.json"

    def file(self, name: str) -> dict[str, Any] | None:
        """The record of remote file ``name`` (``{"remote": ..., "missing": bool}``), if any."""
        return _load(self._file_path(name))

    def set_file(
        self, name: str, remote: RemoteFile | None, *, url: str, cog: dict | None = None
    ) -> None:
        """Record the version of remote file ``name`` (and what its header said, ``cog``)."""
        old = self.file(name) or {}
        record = {
            "url": url,
            "missing": remote is None,
            "remote": remote.record() if remote else None,
        }
        same = old.get("remote") == record["remote"]
        record["cog"] = cog if cog is not None else (old.get("cog") if same else None)
        if old != record:
            write_json(self._file_path(name), record)

    def changes(self, name: str, remote: RemoteFile | None) -> list[str]:
        """How remote file ``name`` differs from its record (empty: unchanged or never seen)."""
        old = self.file(name)
        if old is None or (old.get("missing") and not self.window_records(name)):
            return []  # never read, or known missing with nothing kept from it
        if remote is None:
            return [] if old.get("missing") else ["removed from the server (404)"]
        if old.get("missing") or old.get("remote") is None:
            return ["appeared on the server since the last run"]
        return version_changes(RemoteFile.from_record(old["remote"]), remote)

    # ------------------------------------------------------------------ windows
    def window_dir(self, name: str) -> Path:
        return self.root / "windows" / name

    def window_tif(self, name: str, key: str) -> Path:
        return self.window_dir(name) / f"{key}.tif"

    def _window_record_path(self, name: str, key: str) -> Path:
        return self.window_dir(name) / f"{key}.json"

    def window(self, name: str, key: str, remote: RemoteFile) -> dict[str, Any] | None:
        """The record of a complete window read from this version of the file, else None."""
        record = _load(self._window_record_path(name, key))
        if record is None:
            return None
        old = RemoteFile.from_record(record.get("remote") or {"url": remote.url})
        if version_changes(old, remote):
            return None
        if not record.get("empty") and not self.window_tif(name, key).is_file():
            log.warning("%s: window %s lost its GeoTIFF; reading it again", name, key)
            return None
        return record

    def commit_window(self, name: str, key: str, record: dict[str, Any]) -> None:
        """Record a window as complete (call after its GeoTIFF is in place)."""
        write_json(self._window_record_path(name, key), record)

    def window_records(self, name: str) -> list[dict[str, Any]]:
        folder = self.window_dir(name)
        if not folder.is_dir():
            return []
        records = (_load(p) for p in sorted(folder.glob("*.json")))
        return [r for r in records if r is not None]

    def forget(self, name: str) -> int:
        """Delete every window of remote file ``name``; return how many records went."""
        n = len(self.window_records(name))
        shutil.rmtree(self.window_dir(name), ignore_errors=True)
        self._file_path(name).unlink(missing_ok=True)
        return n

    def remove_temporaries(self) -> int:
        """Delete hidden temporary files an interrupted run left (see :mod:`groundsynth.io`)."""
        n = 0
        if not self.root.is_dir():
            return 0
        for dirpath, _, filenames in os.walk(self.root):
            for f in filenames:
                if f.startswith("."):
                    os.unlink(os.path.join(dirpath, f))
                    n += 1
        return n
