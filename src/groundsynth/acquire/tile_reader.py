"""Reading the windows an area needs from one remote tile, chunk by chunk, into the journal.

:func:`read_tile` cuts the tile's window into chunks (:meth:`TileWindow.chunks`), reuses the
chunks the journal holds for the same version of the file, and reads the others through a
:class:`~groundsynth.acquire.cog.CogReader`: after each chunk a ``HEAD`` checks that the file
did not change meanwhile, the chunk is saved as a small GeoTIFF (unless it is all nodata) and
its record (window, bounds, bytes fetched, file version) is committed.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import rasterio
from rasterio.windows import Window

from groundsynth.acquire.cog import CogReader, RemoteFile, head, version_changes
from groundsynth.acquire.journal import Journal
from groundsynth.acquire.mosaic import geotiff_profile
from groundsynth.acquire.tiles import PIXELS_PER_DEGREE, GridWindow, Product, TileWindow
from groundsynth.errors import FetchError
from groundsynth.io import atomic_path

__all__ = ["ProgressCallback", "ReadOptions", "ReadState", "RemoteTile", "read_tile", "tile_check"]

#: (windows done, windows total, bytes fetched by this run)
ProgressCallback = Callable[[int, int, int], None]


@dataclass(frozen=True)
class ReadOptions:
    """How windows are read: chunk side (pixels) and the HTTP retry policy."""

    chunk: int = 2048
    retries: int = 5
    backoff: float = 1.0
    timeout: float = 30.0


@dataclass(frozen=True)
class RemoteTile:
    """One remote file that the area needs: its URL and the window of it to read."""

    window: TileWindow
    url: str

    @property
    def product(self) -> Product:
        return self.window.product

    @property
    def name(self) -> str:
        """Journal name: ``map_N00E006``."""
        return f"{self.product.name}_{self.window.tile}"


# ----------------------------------------------------------------------------- checks
def tile_check(rt: RemoteTile, what: str) -> Callable[[rasterio.io.DatasetReader], None]:
    """Product checks of an opened tile: grid, size, bands and pixel type."""

    def check(ds: rasterio.io.DatasetReader) -> None:
        p, tg = rt.product, rt.window.tile_grid
        problems = []
        if ds.crs is None or ds.crs.to_epsg() != 4326:
            problems.append(f"CRS {ds.crs} instead of EPSG:4326")
        t = ds.transform
        west, north = tg.bounds[0], tg.bounds[3]
        res = 1.0 / PIXELS_PER_DEGREE
        if abs(t.a - res) > 1e-9 or abs(t.e + res) > 1e-9 or t.b or t.d:
            problems.append(f"pixel size {t.a} x {-t.e} degrees instead of 1/{PIXELS_PER_DEGREE}")
        elif abs(t.c - west) > res / 2 or abs(t.f - north) > res / 2:
            problems.append(f"origin ({t.c}, {t.f}) instead of ({west}, {north})")
        if (ds.width, ds.height) != (tg.width, tg.height):
            problems.append(f"{ds.width} x {ds.height} pixels instead of {tg.width} x {tg.height}")
        if ds.count != p.count or ds.dtypes[0] != p.dtype:
            problems.append(
                f"{ds.count} band(s) of {ds.dtypes[0]} instead of {p.count} of {p.dtype}"
            )
        if problems:
            raise FetchError(
                f"{what}: {rt.url}: not a {p.title} tile as expected: {'; '.join(problems)}"
            )

    return check


# ----------------------------------------------------------------------------- running
@dataclass
class ReadState:
    """Counts of one acquisition's windows, reported through ``progress``."""

    total: int
    progress: ProgressCallback | None
    done: int = 0
    resumed: int = 0
    fetched: int = 0

    def step(self) -> None:
        self.done += 1
        if self.progress is not None:
            self.progress(self.done, self.total, self.fetched)


def _window_key(rt: RemoteTile, grid: GridWindow) -> str:
    local = GridWindow(
        grid.col - rt.window.tile_grid.col,
        grid.row - rt.window.tile_grid.row,
        grid.width,
        grid.height,
    )
    return f"r{local.row:05d}_c{local.col:05d}_{local.height}x{local.width}"


def read_tile(
    rt: RemoteTile, remote: RemoteFile, journal: Journal, options: ReadOptions, state: ReadState
) -> tuple[list[tuple[GridWindow, Path]], dict[str, Any]]:
    """Read (or reuse) every chunk of one tile; return the mosaic pieces and provenance."""
    what = f"{rt.window.tile} {rt.product.name}"
    pieces: list[tuple[GridWindow, Path]] = []
    todo: list[tuple[GridWindow, str]] = []
    for grid in rt.window.chunks(options.chunk):
        key = _window_key(rt, grid)
        record = journal.window(rt.name, key, remote)
        if record is None:
            todo.append((grid, key))
            continue
        if not record.get("empty"):
            pieces.append((grid, journal.window_tif(rt.name, key)))
        state.resumed += 1
        state.step()
    info: dict[str, Any] = {}
    fetched_now = 0
    if todo:
        with CogReader(
            remote,
            what=what,
            retries=options.retries,
            backoff=options.backoff,
            timeout=options.timeout,
            check=tile_check(rt, what),
        ) as cog:
            info = dict(cog.info)
            journal.set_file(rt.name, remote, url=rt.url, cog=info)
            for grid, key in todo:
                # the first chunk's count includes the header read when the file was opened
                before = fetched_now
                piece = _read_window(cog, rt, grid, key, remote, journal, options, what, before)
                if piece is not None:
                    pieces.append(piece)
                fetched_now = cog.bytes_fetched
                state.fetched += fetched_now - before
                state.step()
    records = journal.window_records(rt.name)
    return pieces, {
        "product": rt.product.name,
        "tile": rt.window.tile,
        "url": rt.url,
        "status": "read",
        **{k: v for k, v in remote.record().items() if k != "url"},
        "cog": info or (journal.file(rt.name) or {}).get("cog"),
        "windows": [
            {**r["window"], "bytes_fetched": r.get("bytes_fetched"), "empty": r.get("empty")}
            for r in records
        ],
        "bytes_fetched": sum(int(r.get("bytes_fetched") or 0) for r in records),
        "bytes_fetched_this_run": fetched_now,
    }


def _read_window(
    cog: CogReader,
    rt: RemoteTile,
    grid: GridWindow,
    key: str,
    remote: RemoteFile,
    journal: Journal,
    options: ReadOptions,
    what: str,
    before: int,
) -> tuple[GridWindow, Path] | None:
    """Read one chunk, check the file did not change meanwhile, save it, journal it.

    The chunk's record counts the bytes fetched since ``before`` (a count of ``cog``'s).
    """
    tg = rt.window.tile_grid
    local = Window(grid.col - tg.col, grid.row - tg.row, grid.width, grid.height)
    data = cog.read(local)
    now = head(
        rt.url, what=what, retries=options.retries, backoff=options.backoff, timeout=options.timeout
    )
    changed = ["removed from the server"] if now is None else version_changes(remote, now)
    if changed:
        raise FetchError(
            f"{what}: {rt.url} changed on the server while it was being read "
            f"({'; '.join(changed)}); run again with --on-change refetch to read this tile "
            "over from its new version"
        )
    empty = not bool(np.any(data != 0))
    tif = journal.window_tif(rt.name, key)
    if not empty:
        tif.parent.mkdir(parents=True, exist_ok=True)
        profile = geotiff_profile(grid, count=rt.product.count, dtype=rt.product.dtype)
        with atomic_path(tif, suffix=".tif") as tmp, rasterio.open(tmp, "w", **profile) as dst:
            dst.write(data)
    journal.commit_window(
        rt.name,
        key,
        {
            "url": rt.url,
            "remote": remote.record(),
            "window": {
                "col": grid.col - tg.col,
                "row": grid.row - tg.row,
                "width": grid.width,
                "height": grid.height,
            },
            "bounds": [round(v, 9) for v in grid.bounds],
            "bytes_fetched": cog.bytes_fetched - before,
            "empty": empty,
            "read_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        },
    )
    return None if empty else (grid, tif)
