"""``groundsynth build``: Sentinel-2-like imagery + WorldCover land cover -> a patch dataset.

The dataset directory is also the build's run directory (``config.yaml``, ``manifest.json``,
``build.log``). Work is cut into chunks (see :mod:`groundsynth.data.chunks`) processed by
``workers`` processes (this one and ``workers - 1`` children); each chunk's record is
written last and atomically, so an interrupted build resumes by redoing only unrecorded
chunks, and gives the same dataset as an uninterrupted one. The tables are assembled from
the records at the end, streaming (:mod:`groundsynth.data.build_tables`).
"""

from __future__ import annotations

import concurrent.futures as cf
import logging
import multiprocessing
import os
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Literal

import numpy as np
import rasterio
from rasterio.crs import CRS
from rasterio.warp import transform_bounds

from groundsynth.data import chunks as _chunks
from groundsynth.data.build_tables import preload_table_libraries, write_tables
from groundsynth.data.chunks import Chunk, ChunkPlan, process_chunk, record_path
from groundsynth.data.contract import (
    SPLITS,
    metadata_path,
    percentages_csv,
)
from groundsynth.data.masks import resolve_png_encoder
from groundsynth.data.radiometry import SCALING_METHODS, ScalingMethod, source_percentiles
from groundsynth.data.rasters import (
    ImagerySource,
    LandcoverTile,
    discover_imagery,
    discover_landcover,
)
from groundsynth.data.splits import (
    assign_blocks,
    assign_sources,
    buffer_radius,
    validate_fractions,
)
from groundsynth.errors import InputError
from groundsynth.runs import check_run_dir, config_identity, start_run

__all__ = ["BuildConfig", "BuildResult", "build_dataset"]

log = logging.getLogger(__name__)

#: Config fields that do not change the dataset (may differ when resuming).
_NOT_IDENTITY = ("workers",)
#: sub-folder of a build's output that may hold the rasters it is built from (see
#: groundsynth.acquire.area_dataset); it may exist before the build starts
SOURCE_DIR = "source"

ProgressCallback = Callable[[int, int, int], None]  # (chunks done, chunks total, patches written)


@dataclass(frozen=True)
class BuildConfig:
    """Resolved options of a build (saved as ``config.yaml``)."""

    imagery: tuple[str, ...]
    landcover: tuple[str, ...]
    out: str
    size: int = 256
    stride: int | None = None
    bands: tuple[str, ...] | None = None
    quantification: float | None = None
    scaling: ScalingMethod = "reflectance"
    reflectance_max: float = 0.3
    percentiles: tuple[float, float] = (2.0, 98.0)
    keep_nir: bool = False
    max_water: float = 0.9
    max_label_nodata: float = 0.0
    max_image_nodata: float = 1.0
    split_by: Literal["block", "source"] = "block"
    split_fractions: tuple[float, float, float] = (0.8, 0.1, 0.1)
    block_size: int = 8
    #: patches dropped between blocks of different splits (see groundsynth.data.splits)
    buffer: int = 1
    assign: tuple[tuple[str, str], ...] = ()
    seed: int = 0
    workers: int = 1
    chunk_patches: int = 16
    png_compress_level: int = 1
    png_encoder: Literal["auto", "fpng", "pil"] = "auto"

    def __post_init__(self) -> None:
        if not self.imagery:
            raise InputError("no imagery given (--imagery PATH)")
        if not self.landcover:
            raise InputError("no land cover given (--landcover PATH)")
        if self.size < 8 or self.size % 8:
            raise InputError(f"--size must be a multiple of 8 and >= 8, got {self.size}")
        if self.stride is not None and not self.stride >= 1:
            raise InputError(f"--stride must be >= 1, got {self.stride}")
        if self.scaling not in SCALING_METHODS:
            raise InputError(
                f"--scaling must be one of {', '.join(SCALING_METHODS)}, got {self.scaling!r}"
            )
        if not self.reflectance_max > 0:
            raise InputError(f"--reflectance-max must be > 0, got {self.reflectance_max}")
        lo, hi = self.percentiles
        if not 0 <= lo < hi <= 100:
            raise InputError(f"--percentiles must satisfy 0 <= lo < hi <= 100, got {lo}, {hi}")
        for name in ("max_water", "max_label_nodata", "max_image_nodata"):
            v = getattr(self, name)
            if not 0 <= v <= 1:
                raise InputError(f"--{name.replace('_', '-')} must be within 0..1, got {v}")
        if self.split_by not in ("block", "source"):
            raise InputError(f"--split-by must be 'block' or 'source', got {self.split_by!r}")
        validate_fractions(self.split_fractions)
        if self.block_size < 1 or self.workers < 1 or self.chunk_patches < 1:
            raise InputError("--block-size, --workers and chunk size must be >= 1")
        buffer_radius(self.buffer, self.size, self.stride or self.size)  # validates
        if not 0 <= self.png_compress_level <= 9:
            raise InputError(f"PNG compression level must be 0..9, got {self.png_compress_level}")
        try:
            resolve_png_encoder(self.png_encoder)
        except ValueError as exc:
            raise InputError(str(exc)) from None

    @property
    def step(self) -> int:
        return self.stride or self.size

    def resolved(self) -> BuildConfig:
        """The same config with absolute input/output paths and the stride filled in."""
        kw = {f.name: getattr(self, f.name) for f in fields(self)}
        kw["imagery"] = tuple(str(Path(p).resolve()) for p in self.imagery)
        kw["landcover"] = tuple(str(Path(p).resolve()) for p in self.landcover)
        kw["out"] = str(Path(self.out).resolve())
        kw["stride"] = self.step
        kw["bands"] = tuple(self.bands) if self.bands else None
        kw["assign"] = tuple(tuple(a) for a in self.assign)
        kw["png_encoder"] = resolve_png_encoder(self.png_encoder)
        return BuildConfig(**kw)

    def identity(self) -> dict:
        return config_identity(self, _NOT_IDENTITY)


@dataclass
class BuildResult:
    out: Path
    counts: dict[str, int]
    skipped: dict[str, int]
    class_share: dict[str, dict[str, float]]
    leakage: dict[str, float | int]
    chunks_total: int
    chunks_resumed: int
    seconds: float = 0.0
    phases: dict[str, float] = field(default_factory=dict)  # seconds: plan, process, finalise
    manifest: dict = field(default_factory=dict)


# ----------------------------------------------------------------------------- planning
def _pair(sources: list[ImagerySource], tiles: list[LandcoverTile]):
    """Per source: indices of tiles that overlap it, and those tiles' bounds in its CRS."""
    idx, bounds = [], []
    for s in sources:
        scrs = CRS.from_user_input(s.crs)
        hit, hb = [], []
        for i, t in enumerate(tiles):
            try:
                tb = transform_bounds(CRS.from_user_input(t.crs), scrs, *t.bounds, densify_pts=21)
            except Exception as exc:  # noqa: BLE001 - PROJ raises several types
                log.debug("cannot transform %s into %s: %s", t.path, s.crs, exc)
                continue
            if not np.all(np.isfinite(tb)):
                continue
            sb = s.bounds
            if tb[0] < sb[2] and tb[2] > sb[0] and tb[1] < sb[3] and tb[3] > sb[1]:
                hit.append(i)
                hb.append(tuple(float(v) for v in tb))
        if not hit:
            geo = tuple(round(v, 4) for v in s.bounds_in("EPSG:4326"))
            tgeo = [
                tuple(round(v, 4) for v in transform_bounds(t.crs, "EPSG:4326", *t.bounds))
                for t in tiles[:3]
            ]
            raise InputError(
                f"imagery {s.bands[0].path}: no overlap with any land-cover file "
                f"(imagery lon/lat bounds {geo}; land cover {tgeo}{' ...' if len(tiles) > 3 else ''})"
            )
        idx.append(tuple(hit))
        bounds.append(tuple(hb))
    return tuple(idx), tuple(bounds)


def _chunks_of(sources: list[ImagerySource], size: int, step: int, k: int) -> list[Chunk]:
    out = []
    for si, s in enumerate(sources):
        if s.width < size or s.height < size:
            log.warning("%s: %dx%d is smaller than one patch; skipped", s.name, s.width, s.height)
            continue
        nrows = (s.height - size) // step + 1
        ncols = (s.width - size) // step + 1
        for r in range(nrows):
            for c0 in range(0, ncols, k):
                out.append(Chunk(si, r, c0, min(k, ncols - c0)))
    return out


def _plan(config: BuildConfig, sources, tiles, all_chunks: list[Chunk]) -> ChunkPlan:
    source_tiles, tile_bounds = _pair(sources, tiles)
    if config.scaling == "percentile":
        lo, hi = config.percentiles
        perc = tuple(tuple(map(tuple, source_percentiles(s, lo, hi))) for s in sources)
    else:
        perc = tuple(None for _ in sources)
    if config.split_by == "source":
        areas = {s.name: float(s.width * s.height) for s in sources}
        split_of = assign_sources(
            areas, fractions=config.split_fractions, seed=config.seed, fixed=dict(config.assign)
        )
        source_split = tuple(split_of[s.name] for s in sources)
    else:
        if config.assign:
            raise InputError("--assign applies to --split-by source only")
        source_split = tuple(None for _ in sources)
    blocks: dict[tuple[str, int, int], str] = {}
    if config.split_by == "block":
        b = config.block_size
        keys = {
            (sources[c.source].name, c.row // b, col // b)
            for c in all_chunks
            for col in range(c.col0, c.col0 + c.ncols)
        }
        blocks = assign_blocks(keys, fractions=config.split_fractions, seed=config.seed)
    return ChunkPlan(
        out=config.out,
        sources=tuple(sources),
        tiles=tuple(tiles),
        source_tiles=source_tiles,
        tile_bounds_in_source=tile_bounds,
        percentiles=perc,
        source_split=source_split,
        block_splits=blocks,
        size=config.size,
        stride=config.step,
        scaling=config.scaling,
        reflectance_max=config.reflectance_max,
        keep_nir=config.keep_nir,
        max_water=config.max_water,
        max_label_nodata=config.max_label_nodata,
        max_image_nodata=config.max_image_nodata,
        split_fractions=config.split_fractions,
        block_size=config.block_size,
        seed=config.seed,
        buffer_radius=buffer_radius(config.buffer, config.size, config.step)
        if config.split_by == "block"
        else 0,
        png_compress_level=config.png_compress_level,
        png_encoder=config.png_encoder,
    )


def _remove_temporaries(out: Path) -> int:
    """Delete the hidden temporary files (see groundsynth.io) an interrupted run left."""
    n = 0
    folders = [out, out / ".build" / "chunks", out / "class_percentages"]
    folders += [
        d for s in SPLITS for d in (out / s / "images", out / s / "masks", out / s / "images_nir")
    ]
    for folder in folders:
        if not folder.is_dir():
            continue
        with os.scandir(folder) as entries:
            for e in entries:
                if e.name.startswith(".") and e.is_file(follow_symlinks=False):
                    os.unlink(e.path)
                    n += 1
    return n


# ----------------------------------------------------------------------------- execution
_WORKER_PLAN: ChunkPlan | None = None
#: GDAL block cache per process, MiB: chunks are read once, so a small cache suffices and
#: keeps each worker's memory independent of raster size (GDAL's default is 5 % of RAM).
GDAL_CACHE_MIB = 64


def _init_worker(plan: ChunkPlan) -> None:
    global _WORKER_PLAN
    _WORKER_PLAN = plan
    env = rasterio.Env(GDAL_CACHEMAX=GDAL_CACHE_MIB)
    env.__enter__()  # for the worker's lifetime


def _work(chunk: Chunk) -> dict:
    if _WORKER_PLAN is None:  # pragma: no cover - initializer always runs first
        raise RuntimeError("worker was not initialised")
    return process_chunk(_WORKER_PLAN, chunk)


def _run_chunks(
    plan: ChunkPlan, todo: list[Chunk], workers: int, on_done: Callable[[dict], None]
) -> None:
    """Process ``todo`` with ``workers`` processes: this one and ``workers - 1`` children.

    This process works too, so it starts at once while the children start up (importing
    the libraries takes ~0.3 s per child), and a build with N workers keeps N processes busy.
    Each child has at most three chunks handed to it (one running, two waiting); at the end
    this process takes back the waiting ones rather than sit idle. Results arrive in any
    order: records are per chunk and the tables are assembled in chunk order afterwards.
    """
    queue = deque(todo)
    try:
        with rasterio.Env(GDAL_CACHEMAX=GDAL_CACHE_MIB):
            if workers == 1 or len(todo) <= 1:
                while queue:
                    on_done(process_chunk(plan, queue.popleft(), wait=False))
                _chunks.flush_commits()
                return
            children = min(workers, len(todo)) - 1
            ctx = multiprocessing.get_context("spawn")
            with cf.ProcessPoolExecutor(
                children, mp_context=ctx, initializer=_init_worker, initargs=(plan,)
            ) as pool:
                pending: dict[cf.Future, Chunk] = {}
                try:
                    while queue or pending:
                        while queue and len(pending) < 3 * children:
                            c = queue.popleft()
                            pending[pool.submit(_work, c)] = c
                        for f in [f for f in pending if f.done()]:
                            del pending[f]
                            on_done(f.result())
                        if not queue:  # take back a chunk no child has started yet
                            for f in list(pending):
                                if f.cancel():
                                    queue.append(pending.pop(f))
                                    break
                        if queue:
                            on_done(process_chunk(plan, queue.popleft(), wait=False))
                        elif pending:
                            cf.wait(pending, return_when=cf.FIRST_COMPLETED)
                    _chunks.flush_commits()
                except BaseException:
                    for f in pending:
                        f.cancel()
                    raise
    finally:
        _chunks.close_datasets()


# ----------------------------------------------------------------------------- entry point
def build_dataset(config: BuildConfig, *, progress: ProgressCallback | None = None) -> BuildResult:
    """Build (or resume building) a patch dataset as described by ``config``."""
    t_start = time.perf_counter()
    config = config.resolved()
    out = Path(config.out)
    sources = discover_imagery(
        config.imagery, bands=config.bands, quantification=config.quantification
    )
    tiles = discover_landcover(config.landcover)
    if config.keep_nir:
        no_nir = [s.name for s in sources if not s.has_nir]
        if no_nir:
            raise InputError(f"--keep-nir: imagery without a NIR band: {', '.join(no_nir)}")
    resuming = check_run_dir(
        out,
        config.identity(),
        what="groundsynth build",
        ignore=_NOT_IDENTITY,
        allow=(SOURCE_DIR,),
    )
    all_chunks = _chunks_of(sources, config.size, config.step, config.chunk_patches)
    if not all_chunks:
        raise InputError("imagery is smaller than one patch everywhere; lower --size")
    plan = _plan(config, sources, tiles, all_chunks)  # checks overlap before anything is written
    if resuming:
        removed = _remove_temporaries(out)
        if removed:
            log.info("removed %d temporary file(s) left by an interrupted run", removed)
    run = start_run(out, "build", config, seeds={"split": config.seed})
    try:
        todo = [c for c in all_chunks if not record_path(out, c).exists()]
        n_done = len(all_chunks) - len(todo)
        if resuming:
            log.info("resuming: %d of %d chunks already done", n_done, len(all_chunks))
        log.info(
            "%d sources, %d land-cover tiles, %d chunks to process",
            len(sources),
            len(tiles),
            len(todo),
        )
        written = 0
        state = {"done": n_done}

        def on_done(res: dict) -> None:
            nonlocal written
            state["done"] += 1
            written += res["written"]
            if progress is not None:
                progress(state["done"], len(all_chunks), written)

        if progress is not None:
            progress(n_done, len(all_chunks), 0)
        t_process = time.perf_counter()
        preload = preload_table_libraries()
        _run_chunks(plan, todo, config.workers, on_done)
        t_finalise = time.perf_counter()
        preload.join()
        counts, skipped, class_share, leak = write_tables(out, all_chunks)
        phases = {
            "plan": round(t_process - t_start, 3),
            "process": round(t_finalise - t_process, 3),
            "finalise": round(time.perf_counter() - t_finalise, 3),
        }
        outputs = {
            "patches": counts,
            "skipped": skipped,
            "class_share": class_share,
            "leakage": leak,
            "buffer": {
                "patches": config.buffer if config.split_by == "block" else 0,
                "radius_steps": plan.buffer_radius,
                "dropped": skipped.get("buffer", 0),
            },
            "sources": {
                s.name: {"split": plan.source_split[i], "crs": s.crs, "size": [s.width, s.height]}
                for i, s in enumerate(sources)
            },
        }
        manifest = run.finish(
            inputs=[b.path for s in sources for b in s.bands] + [t.path for t in tiles],
            outputs=outputs,
            digest=[metadata_path(out)] + [percentages_csv(out, s) for s in SPLITS],
            extra={"chunks": {"total": len(all_chunks), "resumed": n_done}, "phases": phases},
        )
    except BaseException:
        run.close()
        raise
    log.info("built %d patches into %s (skipped: %s)", sum(counts.values()), out, skipped)
    return BuildResult(
        out=out,
        counts=counts,
        skipped=skipped,
        class_share=class_share,
        leakage=leak,
        chunks_total=len(all_chunks),
        chunks_resumed=n_done,
        seconds=manifest["timings"]["seconds"],
        phases=phases,
        manifest=manifest,
    )
