"""``groundsynth acquire worldcover``: an area of ESA WorldCover (and its Sentinel-2 composite).

Reads only what an area needs from the public Cloud-Optimized GeoTIFFs (see
:mod:`groundsynth.acquire.tiles` for the grid and the bucket layout): each tile that the area
touches is asked for its size and ETag (``HEAD``; a 404 means the tile does not exist, e.g.
open ocean), then the needed window is read through GDAL's HTTP range requests in chunks
(:mod:`groundsynth.acquire.cog`), each chunk saved and journalled (:mod:`.journal`), and the
chunks are pasted into one GeoTIFF per product on the tiles' own 1/12000 degree grid
(:mod:`.mosaic`): no resampling, EPSG:4326, nodata 0, deflate, tiled.

``out`` is the run directory (``config.yaml``, ``manifest.json`` with every remote file's URL,
size, ETag, Last-Modified, windows read and bytes fetched, ``acquire.log``)::

    out/landcover/worldcover_2021_v200_map.tif        1 band, uint8 WorldCover codes
    out/imagery/worldcover_2021_v200_s2rgbnir.tif     4 bands red, green, blue, nir, uint16
                                                      (reflectance x 10000), with_s2 only
    out/.acquire/                                     journal and windows, for resuming

Both files are on the same grid, so ``groundsynth build --imagery out/imagery
--landcover out/landcover`` pairs them pixel for pixel. Rerunning the same request resumes:
finished chunks are kept, unless their remote file changed (``on_change``).

Example::

    from groundsynth.acquire.worldcover import acquire_worldcover

    result = acquire_worldcover("data/saotome", bbox=(6.45, 0.0, 6.8, 0.45), with_s2=True)
    result.landcover, result.imagery, result.bytes_fetched
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from groundsynth.acquire.area import BBox, check_bbox, resolve_area
from groundsynth.acquire.cog import RemoteFile, head
from groundsynth.acquire.journal import Journal
from groundsynth.acquire.mosaic import write_mosaic
from groundsynth.acquire.tile_reader import (
    ProgressCallback,
    ReadOptions,
    ReadState,
    RemoteTile,
    read_tile,
)
from groundsynth.acquire.tiles import (
    DEFAULT_MAP_BASE_URL,
    DEFAULT_S2_BASE_URL,
    MAP,
    PIXELS_PER_DEGREE,
    S2RGBNIR,
    GridWindow,
    Product,
    area_window,
    check_year,
    tile_windows,
)
from groundsynth.errors import FetchError, InputError
from groundsynth.runs import check_run_dir, config_identity, start_run

__all__ = [
    "RemoteTile",
    "WorldCoverConfig",
    "WorldCoverResult",
    "acquire_worldcover",
    "plan_worldcover",
]

log = logging.getLogger(__name__)

#: Options that do not change what is acquired (may differ when resuming).
_NOT_IDENTITY = (
    "out",
    "geojson",
    "base_url",
    "s2_base_url",
    "on_change",
    "max_pixels",
    "retries",
    "backoff",
    "timeout",
)
_LICENCE = "CC-BY 4.0; (c) ESA WorldCover project / contains modified Copernicus Sentinel data"


@dataclass(frozen=True)
class WorldCoverConfig:
    """Resolved options of an acquisition (saved as ``config.yaml``)."""

    out: str
    bbox: BBox
    year: int = 2021
    with_s2: bool = False
    base_url: str = DEFAULT_MAP_BASE_URL
    s2_base_url: str = DEFAULT_S2_BASE_URL
    #: Side of the chunks read and journalled, in pixels (a multiple of 256).
    chunk: int = 2048
    #: What to do when a remote file differs (size/ETag) from the one earlier windows came from.
    on_change: Literal["error", "refetch"] = "error"
    #: Refuse areas larger than this many pixels (at 1/12000 degree; 1 degree^2 = 1.44e8).
    max_pixels: int = 600_000_000
    retries: int = 5
    backoff: float = 1.0
    timeout: float = 30.0
    #: The GeoJSON file the box came from, if any (provenance only).
    geojson: str | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "bbox", check_bbox(self.bbox))
        check_year(self.year)
        if self.chunk < 256 or self.chunk % 256:
            raise InputError(f"chunk must be a multiple of 256 pixels, got {self.chunk}")
        if self.on_change not in ("error", "refetch"):
            raise InputError(f"--on-change must be 'error' or 'refetch', got {self.on_change!r}")
        if self.retries < 0 or self.backoff < 0 or not self.timeout > 0:
            raise InputError(
                f"--retries and --backoff must be >= 0 and --timeout > 0; got retries="
                f"{self.retries}, backoff={self.backoff}, timeout={self.timeout}"
            )
        for name in ("base_url", "s2_base_url"):
            url = getattr(self, name)
            if not url.lower().startswith(("http://", "https://")):
                raise InputError(f"--{name.replace('_', '-')}: {url!r} is not an http(s) URL")
        area = area_window(self.bbox)
        if area.pixels > self.max_pixels:
            raise InputError(
                f"the area is {area.width} x {area.height} = {area.pixels:,} pixels at 10 m "
                f"(limit {self.max_pixels:,}); choose a smaller --bbox or raise --max-pixels"
            )

    @property
    def read_options(self) -> ReadOptions:
        return ReadOptions(
            chunk=self.chunk, retries=self.retries, backoff=self.backoff, timeout=self.timeout
        )

    def identity(self) -> dict[str, Any]:
        return config_identity(self, _NOT_IDENTITY)


@dataclass
class WorldCoverResult:
    out: Path
    landcover: Path
    imagery: Path | None
    #: product -> tiles read / tiles absent from the server (404)
    tiles: dict[str, list[str]]
    missing: dict[str, list[str]]
    windows_total: int
    windows_resumed: int
    #: Bytes GDAL requested by this run (headers and internal tiles).
    bytes_fetched: int
    #: Total size of the remote files read (what downloading them whole would cost).
    bytes_remote: int
    seconds: float = 0.0
    manifest: dict = field(default_factory=dict)


def output_paths(out: str | os.PathLike[str], year: int) -> dict[str, Path]:
    """Where the mosaics go: ``{"map": landcover file, "s2rgbnir": imagery file}``."""
    stem = f"worldcover_{year}_{check_year(year)}"
    out = Path(out)
    return {
        "map": out / "landcover" / f"{stem}_map.tif",
        "s2rgbnir": out / "imagery" / f"{stem}_s2rgbnir.tif",
    }


def _remove_hidden(folder: Path) -> int:
    """Delete hidden temporary files an interrupted mosaic left in ``folder``."""
    n = 0
    if folder.is_dir():
        for f in folder.iterdir():
            if f.name.startswith(".") and f.is_file():
                f.unlink()
                n += 1
    return n


def plan_worldcover(config: WorldCoverConfig) -> list[RemoteTile]:
    """The remote files an acquisition reads, with their windows (no network)."""
    area = area_window(config.bbox)
    products = [(MAP, config.base_url)]
    if config.with_s2:
        products.append((S2RGBNIR, config.s2_base_url))
    return [
        RemoteTile(tw, product.url(base, config.year, tw.tile))
        for product, base in products
        for tw in tile_windows(product, area)
    ]


def _discover(plan: Sequence[RemoteTile], config: WorldCoverConfig) -> dict[str, RemoteFile | None]:
    return {
        rt.name: head(
            rt.url,
            what=f"{rt.window.tile} {rt.product.name}",
            retries=config.retries,
            backoff=config.backoff,
            timeout=config.timeout,
        )
        for rt in plan
    }


def _require_tiles(
    plan: Sequence[RemoteTile],
    remotes: dict[str, RemoteFile | None],
    product: Product,
    config: WorldCoverConfig,
) -> None:
    mine = [rt for rt in plan if rt.product is product]
    if mine and all(remotes[rt.name] is None for rt in mine):
        urls = "; ".join(rt.url for rt in mine[:4]) + (" ..." if len(mine) > 4 else "")
        raise InputError(
            f"no {product.title} tile covers the area {list(config.bbox)} ({config.year}): "
            f"the server answered 404 for {', '.join(rt.window.tile for rt in mine)} ({urls}). "
            "WorldCover has tiles over land only (open ocean has none); if the area has land, "
            f"check {'--base-url' if product is MAP else '--s2-base-url'}"
        )


def _check_versions(
    plan: Sequence[RemoteTile],
    remotes: dict[str, RemoteFile | None],
    journal: Journal,
    config: WorldCoverConfig,
) -> None:
    """Compare each remote file with the version earlier windows came from."""
    changed = {rt.name: journal.changes(rt.name, remotes[rt.name]) for rt in plan}
    changed = {k: v for k, v in changed.items() if v}
    if not changed:
        return
    listing = "; ".join(f"{k}: {', '.join(v)}" for k, v in changed.items())
    if config.on_change == "error":
        raise FetchError(
            f"{config.out}: remote file(s) changed since earlier windows were read from them "
            f"({listing}); rerun with --on-change refetch to read them again, or use a new --out"
        )
    for name in changed:
        n = journal.forget(name)
        log.warning("%s changed on the server; discarded %d window(s) read before", name, n)


def acquire_worldcover(
    out: str | os.PathLike[str],
    *,
    bbox: str | Sequence[float] | None = None,
    geojson: str | os.PathLike[str] | None = None,
    year: int = 2021,
    with_s2: bool = False,
    base_url: str = DEFAULT_MAP_BASE_URL,
    s2_base_url: str = DEFAULT_S2_BASE_URL,
    on_change: Literal["error", "refetch"] = "error",
    chunk: int = 2048,
    max_pixels: int = 600_000_000,
    retries: int = 5,
    backoff: float = 1.0,
    timeout: float = 30.0,
    progress: ProgressCallback | None = None,
) -> WorldCoverResult:
    """Acquire the WorldCover map (and, ``with_s2``, the S2 RGBNIR composite) of an area.

    The area is ``bbox`` (W,S,E,N degrees) or the bounding box of ``geojson``. See the module
    docstring for what is written to ``out``. Raises :class:`InputError` for a bad area or
    year, or when no tile covers the area; :class:`FetchError` for an unreachable server, a
    file that is not a tiled GeoTIFF of the expected grid, or a remote file that changed
    (``on_change="error"``; ``"refetch"`` reads a changed file's windows again). Nothing is
    written before every tile has answered its ``HEAD`` request.
    """
    config = WorldCoverConfig(
        out=str(Path(out).resolve()),
        bbox=resolve_area(bbox, geojson),
        year=year,
        with_s2=with_s2,
        base_url=base_url,
        s2_base_url=s2_base_url,
        chunk=chunk,
        on_change=on_change,
        max_pixels=max_pixels,
        retries=retries,
        backoff=backoff,
        timeout=timeout,
        geojson=str(Path(geojson).resolve()) if geojson is not None else None,
    )
    return run_worldcover(config, progress=progress)


def run_worldcover(
    config: WorldCoverConfig, *, progress: ProgressCallback | None = None
) -> WorldCoverResult:
    """Run (or resume) the acquisition ``config`` describes; see :func:`acquire_worldcover`."""
    t0 = time.perf_counter()
    out = Path(config.out)
    resuming = check_run_dir(
        out,
        config.identity(),
        what="groundsynth acquire worldcover",
        ignore=_NOT_IDENTITY,
        required=("bbox", "year", "with_s2"),
    )
    plan = plan_worldcover(config)
    remotes = _discover(plan, config)
    _require_tiles(plan, remotes, MAP, config)
    if config.with_s2:
        _require_tiles(plan, remotes, S2RGBNIR, config)
    journal = Journal(out / ".acquire")
    if resuming:
        _check_versions(plan, remotes, journal, config)
        removed = journal.remove_temporaries()
        for folder in {path.parent for path in output_paths(out, config.year).values()}:
            removed += _remove_hidden(folder)
        if removed:
            log.info("removed %d temporary file(s) left by an interrupted run", removed)
    run = start_run(out, "acquire", config)
    try:
        area = area_window(config.bbox)
        present = [rt for rt in plan if remotes[rt.name] is not None]
        state = ReadState(
            total=sum(len(list(rt.window.chunks(config.chunk))) for rt in present),
            progress=progress,
        )
        if progress is not None:
            progress(0, state.total, 0)
        pieces: dict[str, list[tuple[GridWindow, Path]]] = {MAP.name: [], S2RGBNIR.name: []}
        files = []
        for rt in plan:
            remote = remotes[rt.name]
            journal.set_file(rt.name, remote, url=rt.url)
            if remote is None:
                log.info("%s: no tile on the server (404): %s", rt.name, rt.url)
                files.append(
                    {
                        "product": rt.product.name,
                        "tile": rt.window.tile,
                        "url": rt.url,
                        "status": "missing (404)",
                    }
                )
                continue
            got, record = read_tile(rt, remote, journal, config.read_options, state)
            pieces[rt.product.name] += got
            files.append(record)
        paths = output_paths(out, config.year)
        products = [MAP, S2RGBNIR] if config.with_s2 else [MAP]
        for product in products:
            write_mosaic(
                paths[product.name],
                area,
                pieces[product.name],
                count=product.count,
                dtype=product.dtype,
                band_names=product.band_names,
                tags={
                    "product": product.title,
                    "year": str(config.year),
                    "version": check_year(config.year),
                    "bbox": ",".join(f"{v:g}" for v in config.bbox),
                    "license": _LICENCE,
                },
            )
        tiles = {p.name: [rt.window.tile for rt in present if rt.product is p] for p in products}
        missing = {
            p.name: [rt.window.tile for rt in plan if rt.product is p and remotes[rt.name] is None]
            for p in products
        }
        bytes_remote = sum(remotes[rt.name].size or 0 for rt in present)  # type: ignore[union-attr]
        outputs = {
            "landcover": str(paths[MAP.name]),
            "imagery": str(paths[S2RGBNIR.name]) if config.with_s2 else None,
            "grid": {
                "crs": "EPSG:4326",
                "width": area.width,
                "height": area.height,
                "bounds": list(area.bounds),
                "pixel_degrees": f"1/{PIXELS_PER_DEGREE}",
            },
            "tiles": tiles,
            "missing_tiles": missing,
        }
        manifest = run.finish(
            inputs=[rt.url for rt in present],
            outputs=outputs,
            digest=[paths[p.name] for p in products],
            extra={
                "remote_files": files,
                "windows": {"total": state.total, "resumed": state.resumed},
                "bytes": {
                    "fetched_this_run": state.fetched,
                    "fetched_all_runs": sum(f.get("bytes_fetched", 0) for f in files),
                    "remote_files_total": bytes_remote,
                },
            },
        )
    except BaseException:
        run.close()
        raise
    log.info(
        "acquired %s into %s (%d bytes fetched of %d)",
        config.bbox,
        out,
        state.fetched,
        bytes_remote,
    )
    return WorldCoverResult(
        out=out,
        landcover=paths[MAP.name],
        imagery=paths[S2RGBNIR.name] if config.with_s2 else None,
        tiles=tiles,
        missing=missing,
        windows_total=state.total,
        windows_resumed=state.resumed,
        bytes_fetched=state.fetched,
        bytes_remote=bytes_remote,
        seconds=round(time.perf_counter() - t0, 3),
        manifest=manifest,
    )
