"""Atomic file writes: a file is either absent or complete, never half-written.

Every writer goes through a hidden temporary file in the destination directory
(``.<name>.<random><suffix>``) followed by :func:`os.replace`, which is atomic on POSIX and
Windows file systems. The temporary file is created with mode 0666 so that the process
umask applies, exactly as for ``open(path, "w")``.

:func:`write_bytes` is the hot path of the dataset builder (two files per patch). Where the
file system supports it (Linux: ext4, XFS, btrfs, tmpfs), it writes into an unnamed file
(``O_TMPFILE``) and links it into place once complete: still atomic, nothing is left behind by
a crash, and no rename. Renames lock the folder; with several processes writing into one
folder, that made file creation twice as slow per process (measured on ext4), while linked
unnamed files scale like plain writes. Elsewhere, and when the file already exists, it falls
back to a hidden temporary file and :func:`os.replace`. Parent folders are created only when
missing.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import re
import secrets
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

__all__ = [
    "atomic_path",
    "atomic_open",
    "write_bytes",
    "write_text",
    "write_json",
    "remove_temporaries",
]

_FLAGS = (
    os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_BINARY", 0)
)


def _create_temp(path: str, suffix: str) -> tuple[int, str]:
    """Create a new hidden temporary file next to ``path``: (open descriptor, its path)."""
    head, name = os.path.split(path)
    for _ in range(100):  # pragma: no mutate (a retry budget: 100 or 101 draws never clash)
        tmp = os.path.join(head, f".{name}.{secrets.token_hex(4)}{suffix}")
        try:
            return os.open(tmp, _FLAGS, 0o666), tmp
        except FileExistsError:  # another writer drew the same name: draw again
            continue
        except FileNotFoundError:
            if not head or os.path.isdir(head):
                raise
            os.makedirs(head, exist_ok=True)
    raise FileExistsError(f"{path}: could not create a temporary file beside it")


def _discard(tmp: str) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.unlink(tmp)


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str], *, suffix: str | None = None) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; move it onto ``path`` on success.

    On error the temporary file is removed and ``path`` is left untouched.
    ``suffix`` keeps a file extension for writers that infer the format from it.
    """
    tmp = ""
    try:  # the temporary is made inside: an interrupt right after its creation removes it
        fd, tmp = _create_temp(os.fspath(path), suffix if suffix is not None else ".tmp")
        os.close(fd)
        yield Path(tmp)
        os.replace(tmp, path)
    except BaseException:
        if tmp:
            _discard(tmp)
        raise
    # renaming a hard link onto another link of the same file does nothing (POSIX): the
    # temporary is still there then, and is the file ``path`` already holds
    _discard(tmp)


@contextlib.contextmanager
def atomic_open(path: str | os.PathLike[str], mode: str = "w", **kwargs: Any) -> Iterator[IO[Any]]:
    """Open a temporary file for writing and atomically move it onto ``path`` on close."""
    if not any(m in mode for m in "wx"):
        raise ValueError(f"atomic_open is for writing; got mode {mode!r}")
    with atomic_path(path) as tmp, open(tmp, mode.replace("x", "w"), **kwargs) as fh:
        yield fh


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:  # os.write may write less than asked (signals, huge buffers)
        view = view[os.write(fd, view) :]


#: ``/proc`` opened once per process for linking unnamed files; False once unsupported.
_PROC: int | bool | None = None if hasattr(os, "O_TMPFILE") else False
_UNSUPPORTED = (
    errno.EOPNOTSUPP,
    errno.EISDIR,
    errno.EINVAL,
    errno.EXDEV,
    errno.ENOENT,
    errno.EPERM,
)


_PROC_LOCK = threading.Lock()


def _proc_fd() -> int | bool:
    global _PROC
    if _PROC is None:
        with _PROC_LOCK:  # writer threads may get here together
            if _PROC is None:
                try:
                    _PROC = os.open("/proc", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
                except OSError:
                    _PROC = False
    return _PROC


def _write_linked(path: str, data: bytes) -> bool:
    """Write ``data`` into an unnamed file in ``path``'s folder and link it as ``path``.

    Returns False (having written nothing) where unnamed files are not supported.
    """
    global _PROC
    proc = _proc_fd()
    if proc is False:
        return False
    head = os.path.dirname(path) or "."
    flags = os.O_TMPFILE | os.O_WRONLY | os.O_CLOEXEC  # type: ignore[attr-defined]
    try:
        fd = os.open(head, flags, 0o666)
    except FileNotFoundError:
        if os.path.isdir(head):
            return False
        os.makedirs(head, exist_ok=True)
        return _write_linked(path, data)
    except OSError as exc:
        if exc.errno in _UNSUPPORTED:
            return False  # e.g. a file system without O_TMPFILE: per call, folders differ
        raise
    try:
        _write_all(fd, data)
        src = f"self/fd/{fd}"
        try:
            os.link(
                src,
                path,
                src_dir_fd=proc,
                follow_symlinks=True,  # pragma: no mutate (os.link's default; /proc needs it)
            )
        except FileExistsError:  # replacing a file: link under a hidden name, then rename
            for _ in range(100):  # pragma: no mutate (a retry budget, as in _create_temp)
                tmp = os.path.join(head, f".{os.path.basename(path)}.{secrets.token_hex(4)}.tmp")
                try:
                    os.link(
                        src,
                        tmp,
                        src_dir_fd=proc,
                        follow_symlinks=True,  # pragma: no mutate (os.link's default)
                    )
                    break
                except FileExistsError:
                    continue
            else:
                raise FileExistsError(f"{path}: could not create a temporary name beside it")
            try:
                os.replace(tmp, path)
            except BaseException:
                _discard(tmp)
                raise
        except OSError as exc:
            if exc.errno not in _UNSUPPORTED or (
                exc.errno == errno.ENOENT and not os.path.isdir(head)
            ):
                raise
            _PROC = False  # /proc missing or not linkable here: stop trying
            return False
    finally:
        os.close(fd)  # an unnamed file that was never linked vanishes with it
    return True


def write_bytes(path: str | os.PathLike[str], data: bytes) -> None:
    """Atomically write ``data`` to ``path``."""
    path = os.fspath(path)
    if _write_linked(path, data):
        return
    tmp = ""
    try:
        fd, tmp = _create_temp(path, ".tmp")
        try:
            _write_all(fd, data)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except BaseException:
        if tmp:
            _discard(tmp)
        raise


def write_text(path: str | os.PathLike[str], text: str) -> None:
    """Atomically write ``text`` (UTF-8) to ``path``."""
    write_bytes(path, text.encode("utf-8"))  # pragma: no mutate (codec names ignore case)


def write_json(path: str | os.PathLike[str], obj: Any) -> None:
    """Atomically write ``obj`` as indented JSON."""
    write_text(path, json.dumps(obj, indent=2, default=str) + "\n")


#: The names of this module's temporaries: ``.<name>.<8 hex digits><suffix>``.
_TEMPORARY = re.compile(r"\..+\.[0-9a-f]{8}\.[A-Za-z0-9]+")


def remove_temporaries(*folders: str | os.PathLike[str]) -> int:
    """Remove the hidden temporaries a killed writer left in ``folders`` (not below them).

    A process stopped between creating its temporary and renaming it (``kill -9``, a Ray task
    cancelled mid-write) leaves ``.<name>.<random>.tmp`` behind. A stage resuming into its own
    output folders calls this first; no other writer may be writing there then. Missing
    folders are skipped. Returns how many files were removed.
    """
    removed = 0
    for folder in folders:
        try:
            entries = list(os.scandir(folder))
        except FileNotFoundError:
            continue
        for entry in entries:
            if _TEMPORARY.fullmatch(entry.name) and entry.is_file(follow_symlinks=False):
                _discard(entry.path)
                removed += 1
    return removed
