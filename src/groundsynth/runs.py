"""Run directories: resolved config, manifest (inputs, outputs, versions, seeds, timings), log.

Every stage that writes results calls :func:`start_run` and :meth:`Run.finish`, so a result
directory always says how it was made.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import hashlib
import importlib.metadata
import logging
import os
import platform
import sys
import threading
import time
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import yaml

from groundsynth.errors import OutputConflictError
from groundsynth.io import write_json, write_text

__all__ = [
    "Run",
    "check_run_dir",
    "config_identity",
    "file_digest",
    "library_versions",
    "start_run",
    "to_plain",
]

_VERSIONED = (
    "groundsynth",
    "numpy",
    "scipy",
    "rasterio",
    "pillow",
    "pandas",
    "pyarrow",
    "torch",
    "torchvision",
    "segmentation-models-pytorch",
    "lightning",
    "torchmetrics",
    "diffusers",
    "transformers",
    "open-clip-torch",
)


def library_versions(extra: Iterable[str] = ()) -> dict[str, str]:
    """Versions of Python, GDAL and the installed libraries groundsynth uses."""
    out = {"python": platform.python_version(), "platform": platform.platform()}
    for name in (*_VERSIONED, *extra):
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    try:
        import rasterio

        out["gdal"] = rasterio.__gdal_version__
    except ImportError:  # pragma: no cover - rasterio is a core dependency
        pass
    return out


def to_plain(obj: Any) -> Any:
    """Convert dataclasses, paths, tuples and numpy scalars into YAML/JSON-safe values."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: to_plain(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, Mapping):
        return {str(k): to_plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple, set, frozenset)):
        return [to_plain(v) for v in obj]
    if isinstance(obj, os.PathLike):
        return os.fspath(obj)
    if hasattr(obj, "item") and callable(obj.item):  # numpy scalar
        return obj.item()
    return obj


def config_identity(config: Any, ignore: Iterable[str]) -> dict[str, Any]:
    """``config`` as plain values less the ``ignore`` keys: the options that change results
    (what :func:`check_run_dir` compares on resume)."""
    skip = set(ignore)
    return {k: v for k, v in to_plain(config).items() if k not in skip}


def file_digest(path: str | os.PathLike[str], algorithm: str = "sha256") -> str:
    """Hex digest of a file, read in 1 MiB blocks."""
    h = hashlib.new(algorithm)
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


@dataclasses.dataclass
class Run:
    """A run directory being written. Use :func:`start_run` to create one."""

    directory: Path
    stage: str
    config: dict[str, Any]
    seeds: dict[str, int]
    started: float
    log_path: Path
    _handler: logging.Handler | None = None
    _thread: int = 0

    def finish(
        self,
        *,
        inputs: Iterable[str | os.PathLike[str]] = (),
        outputs: Mapping[str, Any] | None = None,
        extra: Mapping[str, Any] | None = None,
        digest: Iterable[str | os.PathLike[str]] = (),
    ) -> dict[str, Any]:
        """Write ``manifest.json``: inputs, outputs (with digests of ``digest`` files),
        versions, seeds, timings and ``extra``. Returns the manifest."""
        ended = time.time()
        files = {}
        for p in digest:
            p = Path(p)
            if p.exists():
                files[os.path.relpath(p, self.directory)] = {
                    "bytes": p.stat().st_size,
                    "sha256": file_digest(p),
                }
        manifest = {
            "stage": self.stage,
            "command": " ".join(sys.argv),
            "inputs": [os.fspath(p) for p in inputs],
            "outputs": to_plain(dict(outputs or {})) | ({"files": files} if files else {}),
            "seeds": self.seeds,
            "versions": library_versions(),
            "timings": {
                "started": _iso(self.started),
                "ended": _iso(ended),
                "seconds": round(ended - self.started, 3),
            },
        }
        if extra:
            manifest.update(to_plain(dict(extra)))
        write_json(self.directory / "manifest.json", manifest)
        self.close()
        return manifest

    def close(self) -> None:
        """Detach the run's log handler (idempotent)."""
        if self._handler is not None:
            logging.getLogger("groundsynth").removeHandler(self._handler)
            self._handler.close()
            self._handler = None
            with _RUNS_LOCK:
                _RUN_THREADS[self._thread] -= 1
                if not _RUN_THREADS[self._thread]:
                    del _RUN_THREADS[self._thread]


#: thread ident -> runs open in that thread (see :class:`_OwnThread`)
_RUN_THREADS: dict[int, int] = {}
_RUNS_LOCK = threading.Lock()


class _OwnThread(logging.Filter):
    """A run's log keeps the records of the thread that started it and of threads without a
    run of their own (e.g. file writers), not those of runs going on in other threads at the
    same time (the experiment's benchmarks run side by side)."""

    def __init__(self, thread: int) -> None:
        super().__init__()
        self.thread = thread

    def filter(self, record: logging.LogRecord) -> bool:
        return record.thread == self.thread or not _RUN_THREADS.get(record.thread or 0)


def _iso(t: float) -> str:
    return _dt.datetime.fromtimestamp(t, tz=_dt.timezone.utc).isoformat(timespec="seconds")


def start_run(
    directory: str | os.PathLike[str],
    stage: str,
    config: Any,
    *,
    seeds: Mapping[str, int] | None = None,
) -> Run:
    """Create ``directory``, write the resolved ``config.yaml`` and attach ``<stage>.log``."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    plain = to_plain(config)
    write_text(directory / "config.yaml", yaml.safe_dump(plain, sort_keys=False))
    log_path = directory / f"{stage}.log"
    handler = logging.FileHandler(log_path, encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    handler.setLevel(logging.INFO)
    thread = threading.get_ident()
    handler.addFilter(_OwnThread(thread))
    with _RUNS_LOCK:
        _RUN_THREADS[thread] = _RUN_THREADS.get(thread, 0) + 1
    root = logging.getLogger("groundsynth")
    root.addHandler(handler)
    if root.level == logging.NOTSET or root.level > logging.INFO:
        root.setLevel(logging.INFO)
    return Run(
        directory=directory,
        stage=stage,
        config=plain,
        seeds=dict(seeds or {}),
        started=time.time(),
        log_path=log_path,
        _handler=handler,
        _thread=thread,
    )


def check_run_dir(
    out: str | os.PathLike[str],
    identity: Mapping[str, Any],
    *,
    what: str,
    ignore: Iterable[str] = (),
    required: Iterable[str] = (),
    allow: Iterable[str] = (),
    defaults: Mapping[str, Any] | None = None,
) -> bool:
    """Check that ``out`` may receive a run of ``identity`` (the options that change results).

    Returns False for a missing or empty folder (a fresh run) and True when ``out`` holds a run
    whose ``config.yaml`` has the same identity (resume). Raises :class:`OutputConflictError`
    naming the folder when it is a file, holds another run (listing the options that differ;
    keys in ``ignore`` are not compared), holds another command's run (its ``config.yaml``
    lacks a key of ``required``), or is a non-empty folder without a run — nothing is written
    in those cases. ``what`` names the kind of run in messages ("build", ...). Entries named
    in ``allow`` may stand in a folder without a run (a build's ``source/`` of acquired
    rasters, written before the build starts). ``defaults``: options added after runs were
    made, with the value a ``config.yaml`` without them stands for (on both sides).
    """
    out = Path(out)
    if not out.exists():
        return False
    if not out.is_dir():
        raise OutputConflictError(f"{out}: exists and is not a directory")
    cfg = out / "config.yaml"
    if not cfg.is_file():
        allowed = set(allow)
        if any(p.name not in allowed for p in out.iterdir()):
            raise OutputConflictError(
                f"{out}: is not empty and holds no {what} (no config.yaml); choose a new or empty --out"
            )
        return False
    try:
        old = yaml.safe_load(cfg.read_text(encoding="utf-8")) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise OutputConflictError(f"{cfg}: unreadable ({exc}); use a new --out") from exc
    if not isinstance(old, dict):
        raise OutputConflictError(f"{cfg}: not a run configuration; use a new --out")
    if not set(required).issubset(old):
        raise OutputConflictError(
            f"{out}: holds another command's run (its config.yaml is not a {what}'s); "
            "choose a new or empty --out"
        )
    skip = set(ignore)
    filled = to_plain(dict(defaults or {}))
    old = {k: v for k, v in {**filled, **old}.items() if k not in skip}
    new = {k: v for k, v in {**filled, **to_plain(dict(identity))}.items() if k not in skip}
    if old != new:
        keys = sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))
        raise OutputConflictError(
            f"{out}: holds another {what} (options differ: {', '.join(keys)}); use a new --out, "
            "or rerun with the same options to resume"
        )
    return True
