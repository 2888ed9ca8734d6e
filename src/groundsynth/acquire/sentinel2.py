"""``groundsynth acquire sentinel2``: Sentinel-2 L2A imagery for an area, from a STAC API.

Searches a STAC API (default: Element 84's Earth Search v1, collection ``sentinel-2-l2a``) for
scenes over ``bbox`` between two dates under a cloud-cover ceiling, reads from each scene's
band COGs only the tiles covering the area (HTTP range requests), reprojects them onto one grid
(the UTM zone of the area's centre at ``resolution`` metres, see :mod:`.s2_grid`) and writes
either one GeoTIFF per scene or a cloud-masked median composite (:mod:`.s2_composite`).

Every raster written holds reflectance × 10000 as uint16 with 0 = nodata, whatever the scene's
processing baseline (the −1000 ``BOA_ADD_OFFSET`` of baseline 04.00+ is removed where the item
says it is present, see :mod:`.s2_assets`), so ``groundsynth build`` reads it directly.

The output folder is the run directory::

    <out>/config.yaml, manifest.json, acquire-sentinel2.log   how it was made
    <out>/items.json              the STAC items used (as the API returned them)
    <out>/scenes/<item>.tif       one scene on the grid (build-ready); <item>.json: provenance
                                  (asset URLs, sizes, ETags, cloud cover, baseline, offset)
    <out>/scl/<item>.tif          its scene classification on the grid (median only)
    <out>/composite.tif           the median (``composite="median"``)

Scenes are written atomically and recorded last (``scenes/<item>.json``); a rerun with the
same options reuses recorded scenes and fetches only the others. Nothing is written outside
``out``; a failed search writes nothing at all.

Example::

    from groundsynth.acquire.sentinel2 import acquire_sentinel2

    result = acquire_sentinel2((33.00, 39.90, 33.05, 39.95), "2021-06-01/2021-08-31", "s2/")
    result.imagery  # [Path("s2/composite.tif")]: groundsynth build --imagery s2/composite.tif
"""

from __future__ import annotations

import concurrent.futures as cf
import contextlib
import json
import logging
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, fields
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Literal

import numpy as np
import rasterio
from rasterio.enums import Resampling
from rasterio.windows import Window

from groundsynth.acquire.cog import gdal_options, head
from groundsynth.acquire.s2_assets import (
    QUANTIFICATION,
    BandAsset,
    Radiometry,
    check_bands,
    find_asset,
    radiometry,
)
from groundsynth.acquire.s2_cog import RemoteCog
from groundsynth.acquire.s2_composite import SCL_MASKED, CompositeStats, median_composite
from groundsynth.acquire.s2_grid import Grid, output_grid, output_profile, tag_output
from groundsynth.acquire.s2_reuse import changed_assets, record_matches
from groundsynth.acquire.stac_search import (
    EARTH_SEARCH_V1,
    parse_bbox,
    parse_dates,
    search_items,
)
from groundsynth.errors import InputError
from groundsynth.io import atomic_path, write_json
from groundsynth.runs import check_run_dir, config_identity, start_run, to_plain

__all__ = [
    "DEFAULT_BANDS",
    "EARTH_SEARCH_V1",
    "ProgressCallback",
    "Sentinel2Config",
    "Sentinel2Result",
    "acquire_sentinel2",
    "run_sentinel2",
]

log = logging.getLogger(__name__)

#: red, green, blue, NIR: the order ``groundsynth build`` expects.
DEFAULT_BANDS = ("B04", "B03", "B02", "B08")
COMPOSITES = ("median", "per-scene")
RESAMPLINGS = ("nearest", "bilinear", "average")
#: Options that do not change the output (may differ when resuming).
_NOT_IDENTITY = ("workers", "retries", "backoff", "timeout")
_SCENE_MEMORY = 64 << 20  # bytes of float64 per band block while fetching a scene
STAGE = "acquire-sentinel2"

#: progress(phase, done, total, info); phase is "scenes" or "composite".
ProgressCallback = Callable[[str, int, int, str], None]


@dataclass(frozen=True)
class Sentinel2Config:
    """Resolved options of one acquisition (saved as ``config.yaml``)."""

    bbox: tuple[float, float, float, float]
    dates: str
    out: str
    max_cloud: float = 20.0
    stac_url: str = EARTH_SEARCH_V1
    collection: str = "sentinel-2-l2a"
    composite: Literal["median", "per-scene"] = "median"
    bands: tuple[str, ...] = DEFAULT_BANDS
    resolution: float = 10.0
    max_items: int | None = 10
    resampling: Literal["nearest", "bilinear", "average"] = "nearest"
    workers: int = 4
    retries: int = 5
    backoff: float = 1.0
    timeout: float = 60.0

    def __post_init__(self) -> None:
        object.__setattr__(self, "bbox", parse_bbox(self.bbox))
        parse_dates(self.dates)
        object.__setattr__(self, "bands", check_bands(self.bands))
        if not 0 < self.max_cloud <= 100:
            raise InputError(f"--max-cloud must be within (0, 100] percent, got {self.max_cloud}")
        if not 0 < self.resolution <= 1000:
            raise InputError(f"--resolution must be within (0, 1000] metres, got {self.resolution}")
        if self.composite not in COMPOSITES:
            raise InputError(f"--composite must be one of {COMPOSITES}, got {self.composite!r}")
        if self.resampling not in RESAMPLINGS:
            raise InputError(f"--resampling must be one of {RESAMPLINGS}, got {self.resampling!r}")
        if self.max_items is not None and self.max_items < 1:
            raise InputError(f"--max-items must be >= 1, got {self.max_items}")
        if self.workers < 1 or self.retries < 0 or self.backoff < 0 or not self.timeout > 0:
            raise InputError("workers must be >= 1, retries >= 0, backoff >= 0 and timeout > 0")
        if not re.match(r"https?://", self.stac_url):
            raise InputError(f"--stac-url must be an http(s) URL, got {self.stac_url!r}")
        if not self.collection.strip():
            raise InputError("--collection must not be empty")

    def resolved(self) -> Sentinel2Config:
        """The same config with an absolute ``out`` and no trailing slash on the URL."""
        kw = {f.name: getattr(self, f.name) for f in fields(self)}
        kw["out"] = str(Path(self.out).resolve())
        kw["stac_url"] = self.stac_url.rstrip("/")
        return Sentinel2Config(**kw)

    def identity(self) -> dict[str, Any]:
        return config_identity(self, _NOT_IDENTITY)


@dataclass
class Sentinel2Result:
    out: Path
    #: what to give ``groundsynth build --imagery``: the composite, or every scene
    imagery: list[Path]
    grid: Grid
    items: list[str]
    scenes_fetched: int
    scenes_reused: int
    composite: Path | None = None
    stats: CompositeStats | None = None
    #: items the search returned / dropped as too cloudy / dropped beyond max_items
    search: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0
    manifest: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class _Scene:
    item: dict[str, Any]
    name: str
    bands: tuple[tuple[BandAsset, Radiometry], ...]
    scl: BandAsset | None


def acquire_sentinel2(
    bbox: str | Sequence[float],
    dates: str,
    out: str | Path,
    *,
    progress: ProgressCallback | None = None,
    **options: Any,
) -> Sentinel2Result:
    """Acquire Sentinel-2 L2A imagery of ``bbox`` (W, S, E, N degrees) between ``dates``
    (``"START/END"``) into the run directory ``out``; ``options`` are the other fields of
    :class:`Sentinel2Config` (``max_cloud``, ``stac_url``, ``collection``, ``composite``,
    ``bands``, ``resolution``, ``max_items``, ``resampling``, ``workers``, ``retries``...)."""
    cfg = Sentinel2Config(bbox=bbox, dates=dates, out=str(out), **options)  # type: ignore[arg-type]
    return run_sentinel2(cfg, progress=progress)


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", name).strip("-.") or "item"


def _plan(items: list[dict[str, Any]], cfg: Sentinel2Config) -> list[_Scene]:
    scenes, seen = [], set()
    for item in items:
        name = _safe(str(item.get("id", "item")))
        while name in seen:
            name += "-2"
        seen.add(name)
        bands = tuple((a, radiometry(item, a)) for a in (find_asset(item, b) for b in cfg.bands))
        scl = find_asset(item, "SCL") if cfg.composite == "median" else None
        scenes.append(_Scene(item=item, name=name, bands=bands, scl=scl))
    return scenes


def _to_dn(dn: np.ndarray, rad: Radiometry) -> np.ndarray:
    """Resampled source DNs (0 = nodata) -> uint16 reflectance × 10000 (valid pixels >= 1)."""
    refl = np.rint((dn * rad.scale + rad.offset) * QUANTIFICATION)
    return np.where(dn > 0, np.clip(refl, 1, 65535), 0).astype(np.uint16)


def _fetch_scene(
    scene: _Scene, cfg: Sentinel2Config, grid: Grid, out: Path, pool: cf.ThreadPoolExecutor
) -> dict[str, Any]:
    """Read one scene's bands (and SCL) onto ``grid``; write them atomically; return the
    scene's provenance record (written last, as ``scenes/<name>.json``)."""
    t0 = time.time()
    opts = gdal_options(retries=cfg.retries, backoff=cfg.backoff, timeout=cfg.timeout)
    net = {"retries": cfg.retries, "backoff": cfg.backoff}
    item_id = scene.item.get("id")
    wanted = [a for a, _ in scene.bands] + ([scene.scl] if scene.scl else [])

    def open_one(asset: BandAsset) -> tuple[Any, RemoteCog]:
        what = f"item {item_id} asset {asset.key!r} ({asset.band})"
        with rasterio.Env(**opts):
            # a dead asset fails here, naming its URL and status; a server without HEAD
            # leaves size and ETag unknown (GDAL's range reads will tell)
            info = head(
                asset.href,
                what=what,
                timeout=cfg.timeout,
                missing_ok=False,
                head_optional=True,
                **net,
            )
            return info, RemoteCog(asset.href, what=what, nodata=asset.raster.get("nodata"), **net)

    futures = [pool.submit(open_one, a) for a in wanted]
    cf.wait(futures)
    failed = [f.exception() for f in futures if f.exception() is not None]
    if failed:  # close what did open, then report the first failure
        for f in futures:
            if f.exception() is None:
                f.result()[1].close()
        raise failed[0]
    opened = [f.result() for f in futures]
    cogs = [c for _, c in opened]
    resampling = Resampling[cfg.resampling]

    def read(cog: RemoteCog, t: Any, n: int, rad: Radiometry | None) -> np.ndarray:
        with rasterio.Env(**opts):
            if rad is None:  # SCL: classes, nearest
                return cog.read(t, (n, grid.width), grid.crs, resampling=Resampling.nearest)
            dn = cog.read(t, (n, grid.width), grid.crs, resampling=resampling)
            return _to_dn(dn, rad)

    rows = max(1, min(grid.height, _SCENE_MEMORY // (8 * grid.width * len(wanted))))
    scene_tif = out / "scenes" / f"{scene.name}.tif"
    scl_tif = out / "scl" / f"{scene.name}.tif"
    valid = 0
    props = scene.item.get("properties") or {}
    tags = {"stac_item": item_id, "datetime": props.get("datetime", "")}
    scene_tif.parent.mkdir(parents=True, exist_ok=True)
    if scene.scl is not None:
        scl_tif.parent.mkdir(parents=True, exist_ok=True)
    try:
        with contextlib.ExitStack() as stack:  # closes, then moves into place, in reverse
            tmp = stack.enter_context(atomic_path(scene_tif, suffix=".tif"))
            dst = stack.enter_context(
                rasterio.open(tmp, "w", **output_profile(grid, len(scene.bands)))
            )
            tag_output(dst, [a.band for a, _ in scene.bands], **tags)
            scl_dst = None
            if scene.scl is not None:
                scl_tmp = stack.enter_context(atomic_path(scl_tif, suffix=".tif"))
                scl_dst = stack.enter_context(
                    rasterio.open(scl_tmp, "w", **output_profile(grid, 1, "uint8"))
                )
                scl_dst.set_band_description(1, "scl")
            for r0, n, t in grid.blocks(rows):
                win = Window(0, r0, grid.width, n)
                jobs = [pool.submit(read, c, t, n, rad) for c, (_, rad) in zip(cogs, scene.bands)]
                if scl_dst is not None:
                    jobs.append(pool.submit(read, cogs[-1], t, n, None))
                cf.wait(jobs)  # all done before any error closes the files they read
                arrays = [j.result() for j in jobs]
                for i in range(len(scene.bands)):
                    dst.write(arrays[i], i + 1, window=win)
                valid += int((arrays[0] != 0).sum())
                if scl_dst is not None:
                    scl_dst.write(arrays[-1].astype(np.uint8), 1, window=win)
    finally:
        for c in cogs:
            c.close()

    def asset_record(asset: BandAsset, info: Any, cog: RemoteCog, rad: Radiometry | None):
        rec = {"key": asset.key, "href": asset.href, "bytes": info.size, "etag": info.etag}
        rec["last_modified"] = info.last_modified
        rec.update(rad.as_dict() if rad else {})
        rec["cog"] = cog.info
        return rec

    rads = [rad for _, rad in scene.bands] + ([None] if scene.scl else [])
    assets = {
        a.band: asset_record(a, info, cog, rad) for a, (info, cog), rad in zip(wanted, opened, rads)
    }
    first = scene.bands[0][1]
    return {
        "item": item_id,
        "collection": scene.item.get("collection"),
        "datetime": props.get("datetime"),
        "cloud_cover": props.get("eo:cloud_cover"),
        "platform": props.get("platform"),
        "processing_baseline": first.baseline,
        "baseline_source": first.baseline_source,
        "boa_offset_applied_flag": props.get(
            "earthsearch:boa_offset_applied", props.get("sentinel:boa_offset_applied")
        ),
        "offset_subtracted_dn": round(-first.offset * QUANTIFICATION, 6),
        "grid": grid.as_dict(),
        "bands": list(cfg.bands),
        "resampling": cfg.resampling,
        "scl": scene.scl is not None,
        "output": f"scenes/{scene.name}.tif",
        "scl_output": f"scl/{scene.name}.tif" if scene.scl else None,
        "valid_pixels": valid,
        "assets": assets,
        "fetched": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "seconds": round(time.time() - t0, 3),
    }


def run_sentinel2(
    config: Sentinel2Config, *, progress: ProgressCallback | None = None
) -> Sentinel2Result:
    """Run one acquisition (see the module docstring); resumes a run with the same options."""
    t0 = time.time()
    cfg = config.resolved()
    out = Path(cfg.out)
    check_run_dir(
        out,
        cfg.identity(),
        what="Sentinel-2 acquisition",
        ignore=_NOT_IDENTITY,
        required=("stac_url", "collection", "dates", "bbox"),
    )
    grid = output_grid(cfg.bbox, cfg.resolution)
    start, end = parse_dates(cfg.dates)
    found = search_items(
        stac_url=cfg.stac_url,
        collection=cfg.collection,
        bbox=cfg.bbox,
        start=start,
        end=end,
        max_cloud=cfg.max_cloud,
        max_items=cfg.max_items,
        retries=cfg.retries,
        backoff=cfg.backoff,
        timeout=cfg.timeout,
    )
    scenes = _plan(found.items, cfg)  # a missing band asset fails here, before any write
    run = start_run(out, STAGE, cfg)
    try:
        log.info(
            "%d item(s) to acquire (%d matched, %d too cloudy, %d beyond max_items); grid %s",
            len(scenes),
            found.matched,
            found.dropped_cloud,
            found.dropped_max_items,
            grid.as_dict(),
        )
        write_json(out / "items.json", {"type": "FeatureCollection", "features": found.items})
        records, fetched, reused = [], 0, 0
        if progress:
            progress("scenes", 0, len(scenes), "")
        opts = gdal_options(retries=cfg.retries, backoff=cfg.backoff, timeout=cfg.timeout)
        with (
            rasterio.Env(**opts),
            cf.ThreadPoolExecutor(max_workers=cfg.workers, thread_name_prefix="s2") as pool,
        ):
            for k, scene in enumerate(scenes):
                rec_path = out / "scenes" / f"{scene.name}.json"
                outputs_exist = (out / "scenes" / f"{scene.name}.tif").is_file() and (
                    scene.scl is None or (out / "scl" / f"{scene.name}.tif").is_file()
                )
                old = (
                    json.loads(rec_path.read_text(encoding="utf-8"))
                    if outputs_exist and record_matches(rec_path, scene, cfg, grid)
                    else None
                )
                changed = changed_assets(old, cfg) if old is not None else []
                if changed:
                    log.warning("%s changed remotely: %s; fetched again", scene.name, changed)
                if old is not None and not changed:
                    records.append(old)
                    reused += 1
                    log.info("%s: already acquired (%s); reused", scene.name, rec_path)
                else:
                    rec = _fetch_scene(scene, cfg, grid, out, pool)
                    write_json(rec_path, rec)
                    records.append(rec)
                    fetched += 1
                if progress:
                    progress("scenes", k + 1, len(scenes), scene.name)
        names = {s.name for s in scenes}
        stale = sorted(p.name for p in (out / "scenes").glob("*.tif") if p.stem not in names)
        if stale:  # from an earlier run whose search found other items
            log.warning(
                "%s holds %d scene(s) this search did not select (%s); the manifest lists "
                "this run's imagery",
                out / "scenes",
                len(stale),
                ", ".join(stale[:5]) + (" ..." if len(stale) > 5 else ""),
            )
        composite = stats = None
        imagery = [out / r["output"] for r in records]
        if cfg.composite == "median":
            composite = out / "composite.tif"

            def report(done: int, total: int) -> None:
                if progress:
                    progress("composite", done, total, "")

            stats = median_composite(
                [(r["item"], out / r["output"], out / r["scl_output"]) for r in records],
                composite,
                grid,
                cfg.bands,
                tags={"stac_items": ",".join(r["item"] for r in records)},
                progress=report,
            )
            imagery = [composite]
            log.info(
                "composite: %d of %d pixels without a clear observation (nodata)",
                stats.pixels_without_clear,
                stats.pixels,
            )
        search = {
            "matched": found.matched,
            "dropped_cloud": found.dropped_cloud,
            "dropped_max_items": found.dropped_max_items,
        }
        manifest = run.finish(
            inputs=[found.search["url"]]
            + [a["href"] for r in records for a in r["assets"].values()],
            outputs={
                "imagery": [str(p.relative_to(out)) for p in imagery],
                "grid": grid.as_dict(),
                "scenes_fetched": fetched,
                "scenes_reused": reused,
                "composite": to_plain(stats) if stats else None,
                "scl_masked_classes": list(SCL_MASKED) if composite else None,
                "convention": "uint16 reflectance x 10000, nodata 0, BOA offset removed",
            },
            extra={"search": {**found.search, **search}, "scenes": records},
            digest=[composite] if composite else [],
        )
    finally:
        run.close()
    return Sentinel2Result(
        out=out,
        imagery=imagery,
        grid=grid,
        items=[r["item"] for r in records],
        scenes_fetched=fetched,
        scenes_reused=reused,
        composite=composite,
        stats=stats,
        search=search,
        seconds=round(time.time() - t0, 3),
        manifest=manifest,
    )
