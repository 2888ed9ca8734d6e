"""The caption journal: append-only, crash-safe record of every caption a run produced.

Layout (under ``DATASET/captions/.journal/``)::

    lock                           held (flock) by the run writing here
    columns.json                   column -> the settings that made it (conflict check)
    <split>/chunks.json            chunk boundaries: the first id of every chunk
    <split>/<column>/<chunk>.jsonl one JSON object per line, appended

A split's sorted ids are cut into chunks of ``chunk_size`` images when the split is first
journalled; the boundaries (first id of each chunk) are kept, so an id's chunk is found by
bisection and stays the same when the dataset later grows. Working and rebuilding the
table chunk by chunk keeps memory bounded by one chunk, whatever the dataset size.

A line is ``{"id", "status": "ok", "captions": [...], "pct": [7 ints], "t"}`` or
``{"id", "status": "failed", "error": "...", "pct", "t"}``. Lines are appended with one
``write`` per batch followed by ``fsync``; after a crash at any moment a file ends either on
a whole line or on a torn one, which readers ignore and the next append cuts off first.
Reading keeps, per id, its first ``ok`` record (later ones cannot occur unless two runs
raced, which the lock prevents) or else its last failure.
"""

from __future__ import annotations

import bisect
import contextlib
import json
import logging
import os
import time
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

from groundsynth.errors import OutputConflictError
from groundsynth.io import write_json

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows: no advisory locks
    fcntl = None  # type: ignore[assignment]

__all__ = ["CaptionJournal", "Chunking"]

logger = logging.getLogger(__name__)


class Chunking:
    """Chunk boundaries of one split: ``chunk_of(id)`` by bisection over the first ids."""

    def __init__(self, boundaries: Sequence[str], chunk_size: int) -> None:
        self.boundaries = list(boundaries)
        self.chunk_size = chunk_size

    def chunk_of(self, sample_id: str) -> int:
        return max(0, bisect.bisect_right(self.boundaries, sample_id) - 1)

    def groups(self, ids: Iterable[str]) -> Iterator[tuple[int, list[str]]]:
        """(chunk, ids) runs of consecutive ``ids`` (sorted ids give one run per chunk)."""
        current, run = -1, []
        for sid in ids:
            k = self.chunk_of(sid)
            if k != current and run:
                yield current, run
                run = []
            current = k
            run.append(sid)
        if run:
            yield current, run


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class CaptionJournal:
    """The journal of one dataset's captions folder (see the module docstring)."""

    def __init__(self, folder: str | os.PathLike[str]) -> None:
        self.folder = Path(folder)
        self._checked: set[Path] = set()

    # -- locking ---------------------------------------------------------------------------
    @contextlib.contextmanager
    def lock(self) -> Iterator[None]:
        """Hold the journal for this process; another live run holding it is an error."""
        self.folder.mkdir(parents=True, exist_ok=True)
        if fcntl is None:  # pragma: no cover
            logger.warning("no file locks on this platform: do not run two caption runs at once")
            yield
            return
        fd = os.open(self.folder / "lock", os.O_RDWR | os.O_CREAT, 0o644)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise OutputConflictError(
                    f"{self.folder.parent}: another caption run is writing here; wait for it "
                    "to finish (or stop it) and rerun"
                ) from None
            yield
        finally:
            os.close(fd)  # releases the lock; the OS does the same when a process dies

    # -- columns ---------------------------------------------------------------------------
    def columns(self) -> dict[str, dict[str, Any]]:
        """Column name -> the settings that made it (empty for a new journal)."""
        path = self.folder / "columns.json"
        if not path.is_file():
            return {}
        return json.loads(path.read_text(encoding="utf-8"))

    def register(self, column: str, identity: dict[str, Any]) -> None:
        """Record ``column``'s settings, or check them against those already recorded."""
        known = self.columns()
        old = known.get(column)
        if old is not None and old != identity and not self._has_records(column):
            old = None  # its records were deleted: the column starts afresh
        if old is not None and old != identity:
            diff = {k: (old.get(k), identity.get(k)) for k in {*old, *identity}}
            diff = {k: v for k, v in diff.items() if v[0] != v[1]}
            raise OutputConflictError(
                f"caption column {column!r} in {self.folder.parent} was made with other "
                f"settings ({', '.join(f'{k}: {a!r} -> {b!r}' for k, (a, b) in sorted(diff.items()))}); "
                f"name the new stream differently (STREAM=BACKEND:MODEL@NAME) or delete "
                f"{self.folder / '*' / column} to redo it"
            )
        if old is None:
            known[column] = identity
            write_json(self.folder / "columns.json", known)

    def _has_records(self, column: str) -> bool:
        return any((p / column).is_dir() for p in self.folder.iterdir() if p.is_dir())

    def split_columns(self, split: str) -> list[str]:
        """Columns journalled for ``split`` (sorted)."""
        folder = self.folder / split
        if not folder.is_dir():
            return []
        return sorted(p.name for p in folder.iterdir() if p.is_dir())

    # -- chunks ----------------------------------------------------------------------------
    def has_split(self, split: str) -> bool:
        return (self.folder / split / "chunks.json").is_file()

    def chunking(self, split: str, ids: Sequence[str], chunk_size: int) -> Chunking:
        """The split's chunking: read, or made from its sorted ``ids`` on first use."""
        path = self.folder / split / "chunks.json"
        if path.is_file():
            data = json.loads(path.read_text(encoding="utf-8"))
            return Chunking(data["boundaries"], int(data["chunk_size"]))
        ordered = sorted(ids)
        boundaries = ordered[::chunk_size] or [""]
        write_json(path, {"chunk_size": chunk_size, "boundaries": boundaries})
        return Chunking(boundaries, chunk_size)

    def _file(self, split: str, column: str, chunk: int) -> Path:
        return self.folder / split / column / f"{chunk:05d}.jsonl"

    # -- records ---------------------------------------------------------------------------
    def read(self, split: str, column: str, chunk: int) -> dict[str, dict[str, Any]]:
        """id -> its record in one chunk file (first ok, else last failure)."""
        path = self._file(split, column, chunk)
        out: dict[str, dict[str, Any]] = {}
        if not path.is_file():
            return out
        with open(path, "rb") as fh:
            data = fh.read()
        lines = data.split(b"\n")
        torn = lines.pop()  # b"" when the file ends on a whole line
        if torn:
            logger.warning("%s: ignoring a torn last line (%d bytes)", path, len(torn))
        for lineno, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
                sid = rec["id"]
            except (ValueError, KeyError, TypeError):
                logger.warning("%s:%d: skipping an unreadable journal line", path, lineno)
                continue
            prev = out.get(sid)
            if prev is None or prev.get("status") != "ok":
                out[sid] = rec
        return out

    def _repair(self, path: Path) -> None:
        """Cut a torn last line off ``path`` (once per file and process)."""
        if path in self._checked or not path.is_file():
            self._checked.add(path)
            return
        with open(path, "rb+") as fh:
            size = fh.seek(0, os.SEEK_END)
            if size:
                tail_start = max(0, size - 65536)
                while True:
                    fh.seek(tail_start)
                    tail = fh.read(size - tail_start)
                    cut = tail.rfind(b"\n")
                    if cut >= 0 or tail_start == 0:
                        break
                    tail_start = max(0, tail_start - 65536)
                keep = tail_start + cut + 1 if cut >= 0 else 0
                if keep != size:
                    logger.warning("%s: cutting a torn last line (%d bytes)", path, size - keep)
                    fh.truncate(keep)
                    fh.flush()
                    os.fsync(fh.fileno())
        self._checked.add(path)

    def append(
        self, split: str, column: str, chunk: int, records: Sequence[dict[str, Any]]
    ) -> None:
        """Append ``records`` to a chunk file: one write, then fsync (durable on return)."""
        if not records:
            return
        path = self._file(split, column, chunk)
        new = not path.exists()
        if new:
            path.parent.mkdir(parents=True, exist_ok=True)
        else:
            self._repair(path)
        now = round(time.time(), 3)
        data = "".join(
            json.dumps({**r, "t": now}, ensure_ascii=False, separators=(",", ":")) + "\n"
            for r in records
        ).encode("utf-8")
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            view = memoryview(data)
            while view:
                written = os.write(fd, view)
                view = view[written:]
            os.fsync(fd)
        finally:
            os.close(fd)
        if new:
            _fsync_dir(path.parent)
            self._checked.add(path)
