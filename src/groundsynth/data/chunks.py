"""The builder's unit of work: one chunk = up to K patches along one patch row of a source.

A chunk reads one imagery window (bands x size x K*stride) and the land cover under it
(reprojected onto the imagery grid, nearest, mosaicked across tiles), cuts it into patches,
filters them, writes images and masks atomically, and records its metadata rows and skip
counts in one JSON file written last. A chunk whose record exists is done; one without is
redone from scratch on resume, rewriting the same bytes. Memory per chunk is independent
of the raster size.
"""

from __future__ import annotations

import concurrent.futures as cf
import json
import logging
import math
from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import rasterio
from affine import Affine
from rasterio.enums import Resampling
from rasterio.errors import RasterioError
from rasterio.warp import reproject
from rasterio.warp import transform as warp_transform
from rasterio.windows import Window, from_bounds

from groundsynth.classes import CLASS_NAMES, IGNORE_INDEX, WATER, remap_worldcover
from groundsynth.data.composition import class_fractions
from groundsynth.data.contract import image_path, mask_path, nir_path
from groundsynth.data.masks import encode_mask_png, encode_rgb_png
from groundsynth.data.radiometry import Scaler, describe_scaling
from groundsynth.data.rasters import ImagerySource, LandcoverTile
from groundsynth.data.splits import in_buffer
from groundsynth.errors import InputError
from groundsynth.io import atomic_path, write_bytes

__all__ = ["Chunk", "ChunkPlan", "flush_commits", "process_chunk", "record_path"]

log = logging.getLogger(__name__)

SKIP_REASONS = ("imagery_empty", "imagery_nodata", "label_nodata", "water")


@dataclass(frozen=True)
class Chunk:
    source: int  # index into ChunkPlan.sources
    row: int  # patch row
    col0: int  # first patch column
    ncols: int

    @property
    def key(self) -> str:
        return f"{self.source:04d}-{self.row:06d}-{self.col0:06d}"


@dataclass(frozen=True)
class ChunkPlan:
    """Everything a worker needs, picklable (paths and numbers only)."""

    out: str
    sources: tuple[ImagerySource, ...]
    tiles: tuple[LandcoverTile, ...]
    source_tiles: tuple[tuple[int, ...], ...]  # per source: indices of overlapping tiles
    tile_bounds_in_source: tuple[tuple[tuple[float, float, float, float], ...], ...]
    percentiles: tuple[tuple[tuple[float, ...], tuple[float, ...]] | None, ...]
    source_split: tuple[str | None, ...]  # fixed split per source, or None for blocked
    block_splits: dict[tuple[str, int, int], str]  # (source name, block row, block col) -> split
    size: int
    stride: int
    scaling: str
    reflectance_max: float
    keep_nir: bool
    max_water: float
    max_label_nodata: float
    max_image_nodata: float
    split_fractions: tuple[float, float, float]
    block_size: int
    seed: int
    buffer_radius: int  # grid steps; see groundsynth.data.splits.in_buffer
    png_compress_level: int
    png_encoder: str


def record_path(out: str | Path, chunk: Chunk) -> Path:
    return Path(out) / ".build" / "chunks" / f"{chunk.key}.json"


class _Datasets:
    """Per-process cache of open rasters: each file is opened once per worker."""

    def __init__(self) -> None:
        self._open: dict[str, rasterio.io.DatasetReader] = {}

    def get(self, path: str) -> rasterio.io.DatasetReader:
        ds = self._open.get(path)
        if ds is None:
            try:
                ds = rasterio.open(path)
            except RasterioError as exc:
                raise InputError(f"{path}: cannot be read as a raster: {exc}") from exc
            self._open[path] = ds
        return ds

    def close(self) -> None:
        for ds in self._open.values():
            ds.close()
        self._open.clear()


_CACHE = _Datasets()
#: File writes run on background threads so that file-system latency (about 1 ms per file
#: on some disks) overlaps reading and encoding the next patches; a chunk's record is written
#: only once all its files are in place, so resumption is unaffected.
_WRITER: cf.ThreadPoolExecutor | None = None


#: Record writes queued behind their chunk's files (``process_chunk(..., wait=False)``).
_COMMITS: list[cf.Future] = []


def _commit(files: list[cf.Future], path: Path, payload: bytes) -> None:
    """Write a chunk's record once its files are in place (runs on the writer thread, after
    the file writes queued before it: one thread, first in first out)."""
    for f in files:
        f.result()  # a failed file write fails the commit: no record, the chunk is redone
    write_bytes(path, payload)


def _check_commits(wait: bool) -> None:
    """Raise the first error of the queued record writes (``wait``: wait for all of them)."""
    if wait:
        cf.wait(_COMMITS)
    done = [f for f in _COMMITS if f.done()]
    for f in done:
        _COMMITS.remove(f)
    for f in done:
        f.result()


def flush_commits() -> None:
    """Wait until every queued chunk record is written; raise the first error."""
    _check_commits(wait=True)


def _writer() -> cf.ThreadPoolExecutor:
    global _WRITER
    if _WRITER is None:
        # one thread is enough to hide the latency (measured: 2 were no faster)
        _WRITER = cf.ThreadPoolExecutor(max_workers=1, thread_name_prefix="groundsynth-write")
    return _WRITER


_SCALERS: dict[tuple[str, int], Scaler] = {}


def _scaler(plan: ChunkPlan, si: int) -> Scaler:
    """The source's scaler, built once per process (its lookup tables cost ~1 ms)."""
    key = (plan.out, si)
    if key not in _SCALERS:
        perc = plan.percentiles[si]
        _SCALERS[key] = Scaler(
            plan.sources[si].bands, plan.scaling,  # type: ignore[arg-type]
            reflectance_max=plan.reflectance_max,
            lo=list(perc[0]) if perc else None, hi=list(perc[1]) if perc else None,
        )  # fmt: skip
    return _SCALERS[key]


def _shifted(t: Affine, cols: float, rows: float) -> Affine:
    """The transform of the pixel grid ``t`` moved by (cols, rows) pixels (north-up grids)."""
    return Affine(t.a, t.b, t.c + t.a * cols + t.b * rows, t.d, t.e, t.f + t.d * cols + t.e * rows)


def _on_grid(ds: rasterio.io.DatasetReader, src: ImagerySource) -> bool:
    return tuple(ds.transform)[:6] == src.transform and ds.shape == (src.height, src.width)


def _guarded_read(ds: rasterio.io.DatasetReader, path: str, window: Window, **kw) -> np.ndarray:
    try:
        return ds.read(window=window, **kw)
    except RasterioError as exc:
        raise InputError(
            f"{path}: failed to read window {window} (corrupt or truncated?): {exc}"
        ) from exc


def _read_imagery(src: ImagerySource, win: Window, nbands: int) -> tuple[np.ndarray, np.ndarray]:
    """Raw DNs (nbands, h, w) of the first ``nbands`` bands on the source grid, and the
    pixels that are nodata in every band read."""
    h, w = int(win.height), int(win.width)
    grid = Affine(*src.transform)
    bounds = rasterio.windows.bounds(win, grid)
    refs = src.bands[:nbands]
    first = _CACHE.get(refs[0].path)
    out = np.empty((nbands, h, w), dtype=first.dtypes[refs[0].index - 1])
    if len({r.path for r in refs}) == 1 and _on_grid(first, src):
        # one multi-band file: read all bands in one pass over its (pixel-interleaved) tiles
        _guarded_read(first, refs[0].path, win, indexes=[r.index for r in refs], out=out)
    else:
        for k, ref in enumerate(refs):
            ds = _CACHE.get(ref.path)
            if _on_grid(ds, src) and ds.dtypes[ref.index - 1] == out.dtype:
                _guarded_read(ds, ref.path, win, indexes=ref.index, out=out[k])
            else:  # a coarser band of a one-file-per-band product: resample onto the grid
                out[k] = _guarded_read(
                    ds, ref.path, from_bounds(*bounds, transform=ds.transform), indexes=ref.index,
                    out_shape=(h, w), resampling=Resampling.bilinear, boundless=True,
                    fill_value=ref.nodata or 0,
                )  # fmt: skip
    nodata = np.ones((h, w), dtype=bool)
    for k, ref in enumerate(refs):
        nodata &= out[k] == (ref.nodata if ref.nodata is not None else 0)
    return out, nodata


def _read_landcover(plan: ChunkPlan, si: int, win: Window) -> tuple[np.ndarray, list[str]]:
    """Class indices (h, w) on the imagery window's grid, mosaicked from overlapping tiles."""
    src = plan.sources[si]
    h, w = int(win.height), int(win.width)
    dst_transform = rasterio.windows.transform(win, Affine(*src.transform))
    cb = rasterio.windows.bounds(win, Affine(*src.transform))
    codes = np.zeros((h, w), dtype=np.uint8)
    used = []
    for ti, tb in zip(plan.source_tiles[si], plan.tile_bounds_in_source[si]):
        if tb[0] >= cb[2] or tb[2] <= cb[0] or tb[1] >= cb[3] or tb[3] <= cb[1]:
            continue
        tile = plan.tiles[ti]
        ds = _CACHE.get(tile.path)
        try:
            tbounds = rasterio.warp.transform_bounds(src.crs, ds.crs, *cb, densify_pts=21)
            fw = from_bounds(*tbounds, transform=ds.transform)
            c0, r0 = math.floor(fw.col_off) - 2, math.floor(fw.row_off) - 2
            c1 = math.ceil(fw.col_off + fw.width) + 2
            r1 = math.ceil(fw.row_off + fw.height) + 2
            swin = Window(c0, r0, c1 - c0, r1 - r0)
            swin = swin.intersection(Window(0, 0, ds.width, ds.height))
        except (rasterio.errors.WindowError, ValueError):
            continue
        if swin.width < 1 or swin.height < 1:
            continue
        arr = _guarded_read(ds, tile.path, swin, indexes=1)
        if arr.dtype != np.uint8:
            arr = np.where((arr >= 0) & (arr <= 255), arr, 0).astype(np.uint8)
        tmp = np.zeros((h, w), dtype=np.uint8)
        # No src_nodata: with nearest resampling a nodata (0) source pixel gives 0 either way,
        # and GDAL's nodata masking costs a third of the warp's time (measured).
        reproject(
            arr,
            tmp,
            src_transform=ds.window_transform(swin),
            src_crs=ds.crs,
            dst_transform=dst_transform,
            dst_crs=src.crs,
            dst_nodata=0,
            resampling=Resampling.nearest,
        )
        np.copyto(codes, tmp, where=codes == 0)
        used.append(Path(tile.path).name)
    return remap_worldcover(codes), used


def _write_nir(path: Path, refl: np.ndarray, crs: str, transform: Affine, level: int) -> None:
    data = np.clip(np.rint(refl * 10000.0), 0, 65535).astype(np.uint16)
    with (
        atomic_path(path, suffix=".tif") as tmp,
        rasterio.open(
            tmp,
            "w",
            driver="GTiff",
            width=data.shape[2],
            height=data.shape[1],
            count=data.shape[0],
            dtype="uint16",
            crs=crs,
            transform=transform,
            compress="deflate",
            zlevel=max(level, 1),
        ) as dst,
    ):
        dst.write(data)
        dst.update_tags(QUANTIFICATION_VALUE="10000", BANDS="red,green,blue,nir")
        dst.scales = (1e-4,) * data.shape[0]
        for i, name in enumerate(("red", "green", "blue", "nir")[: data.shape[0]], start=1):
            dst.set_band_description(i, name)


def process_chunk(plan: ChunkPlan, chunk: Chunk, *, wait: bool = True) -> dict:
    """Process one chunk; write its patches and its record. Returns a summary.

    With ``wait=False`` the record is queued behind the chunk's files on the writer thread
    and this returns at once, so reading and encoding the next chunk overlaps them; call
    :func:`flush_commits` at the end (errors of earlier chunks surface at the next call).
    """
    src = plan.sources[chunk.source]
    size, stride = plan.size, plan.stride
    width = (chunk.ncols - 1) * stride + size
    win = Window(chunk.col0 * stride, chunk.row * stride, width, size)
    dn, img_nodata = _read_imagery(src, win, 4 if plan.keep_nir else 3)
    labels, used = _read_landcover(plan, chunk.source, win)
    grid = Affine(*src.transform)
    perc = plan.percentiles[chunk.source]
    scaler = _scaler(plan, chunk.source)
    skipped: Counter[str] = Counter()
    rows = []
    writes: list[cf.Future] = []
    for k in range(chunk.ncols):
        x = k * stride
        col = chunk.col0 + k
        if plan.source_split[chunk.source] is None and in_buffer(
            plan.block_splits,
            src.name,
            chunk.row,
            col,
            block_size=plan.block_size,
            radius=plan.buffer_radius,
        ):
            skipped["buffer"] += 1
            continue
        nd = img_nodata[:, x : x + size]
        if nd.all():
            skipped["imagery_empty"] += 1
            continue
        if nd.mean() > plan.max_image_nodata:
            skipped["imagery_nodata"] += 1
            continue
        lab = labels[:, x : x + size]
        if (lab == IGNORE_INDEX).mean() > plan.max_label_nodata:
            skipped["label_nodata"] += 1
            continue
        frac = class_fractions(lab)
        if frac[WATER] > plan.max_water:
            skipped["water"] += 1
            continue
        if plan.max_label_nodata > 0:  # tolerated nodata pixels: give them the nearest class
            lab = _fill_ignore(lab)
        patch = dn[:, :, x : x + size]
        image, pmax = scaler.to_uint8(patch[:3])
        sid = f"{src.name}_{chunk.row:03d}_{col:03d}"
        split = (
            plan.source_split[chunk.source]
            or plan.block_splits[(src.name, chunk.row // plan.block_size, col // plan.block_size)]
        )
        png = encode_rgb_png(image, plan.png_compress_level, plan.png_encoder)
        writes.append(_writer().submit(write_bytes, image_path(Path(plan.out), split, sid), png))
        mask_png = encode_mask_png(lab)
        writes.append(
            _writer().submit(write_bytes, mask_path(Path(plan.out), split, sid), mask_png)
        )
        ptransform = _shifted(grid, chunk.col0 * stride + x, chunk.row * stride)
        if plan.keep_nir:
            if not src.has_nir:
                raise InputError(f"--keep-nir: imagery source {src.name} has no NIR band")
            _write_nir(
                nir_path(Path(plan.out), split, sid),
                scaler.reflectance(patch),
                src.crs,
                ptransform,
                plan.png_compress_level,
            )
        minx, maxy = ptransform.c, ptransform.f
        far = _shifted(ptransform, size, size)
        maxx, miny = far.c, far.f
        rows.append(
            {
                "id": sid,
                "split": split,
                "source": src.name,
                "landcover": ";".join(used),
                "row": chunk.row,
                "col": col,
                "crs": src.crs,
                "transform": list(ptransform)[:6],
                "minx": minx,
                "miny": miny,
                "maxx": maxx,
                "maxy": maxy,
                **{f"frac_{n}": float(f) for n, f in zip(CLASS_NAMES, frac)},
                "scaling": describe_scaling(
                    plan.scaling,
                    reflectance_max=plan.reflectance_max,
                    lo=list(perc[0]) if perc else None,
                    hi=list(perc[1]) if perc else None,
                    patch_max=pmax,
                ),
                "origin": "real",
            }
        )
    if rows:
        xs = [(r["minx"] + r["maxx"]) / 2 for r in rows]
        ys = [(r["miny"] + r["maxy"]) / 2 for r in rows]
        lons, lats = warp_transform(src.crs, "EPSG:4326", xs, ys)
        for r, lon, lat in zip(rows, lons, lats):
            r["lon"], r["lat"] = float(lon), float(lat)
    record = {"chunk": asdict(chunk), "rows": rows, "skipped": dict(skipped)}
    # compact JSON: json's C encoder is used only without indentation
    payload = json.dumps(record, separators=(",", ":")).encode()
    if wait:
        for f in writes:  # every file of the chunk is in place before its record says so
            f.result()
        write_bytes(record_path(plan.out, chunk), payload)
    else:
        _COMMITS.append(_writer().submit(_commit, writes, record_path(plan.out, chunk), payload))
        _check_commits(wait=False)
    return {"chunk": chunk.key, "written": len(rows), "skipped": dict(skipped)}


def _fill_ignore(lab: np.ndarray) -> np.ndarray:
    """Replace IGNORE_INDEX pixels by the nearest labelled pixel's class."""
    from scipy import ndimage

    bad = lab == IGNORE_INDEX
    if not bad.any():
        return lab
    idx = ndimage.distance_transform_edt(bad, return_distances=False, return_indices=True)
    return lab[tuple(idx)]


def load_record(path: Path) -> dict:
    """Read a chunk record (raises InputError naming the file if it is unreadable)."""
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise InputError(
            f"{path}: unreadable chunk record ({exc}); delete it to redo the chunk"
        ) from exc


def close_datasets() -> None:
    """Close the open rasters; let queued writes finish (files and records of processed
    chunks), forgetting their errors: call :func:`flush_commits` first to see them."""
    global _WRITER
    _CACHE.close()
    _SCALERS.clear()
    if _WRITER is not None:
        _WRITER.shutdown(wait=True)
        _WRITER = None
    _COMMITS.clear()
