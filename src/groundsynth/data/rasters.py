"""Raster inputs of the builder: imagery sources and land-cover tiles.

An *imagery source* is one grid of pixels with red, green, blue and optionally NIR bands:
either a multi-band GeoTIFF/COG, or a one-file-per-band product (Sentinel-2 ``*_B04.tif``,
``B4.tif``...), grouped by folder and file-name prefix. Land-cover tiles are matched to
imagery by spatial overlap, never by file name.

Radiometry: each band gets a linear map ``reflectance = DN * scale + offset``, taken from the
file's GDAL scale/offset when set, else from Sentinel-2 metadata (``BOA_ADD_OFFSET`` and
``BOA_QUANTIFICATION_VALUE`` tags, or ``PROCESSING_BASELINE`` >= 04.00 in tags, a sidecar
``metadata.json`` or the product name's ``_Nxxxx_`` field, which implies the -1000 offset of
processing baseline 04.00), else ``DN / quantification``.
"""

from __future__ import annotations

import json
import logging
import os
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import rasterio
from rasterio.crs import CRS
from rasterio.errors import RasterioError, RasterioIOError
from rasterio.warp import transform_bounds
from rasterio.windows import Window

from groundsynth.errors import InputError

__all__ = [
    "BandRef",
    "ImagerySource",
    "LandcoverTile",
    "discover_imagery",
    "discover_landcover",
    "open_raster",
]

log = logging.getLogger(__name__)

RASTER_SUFFIXES = (".tif", ".tiff", ".jp2", ".vrt")
SUPPORTED_DTYPES = ("uint16", "int16", "uint32", "int32", "float32", "float64")
_BAND_RE = re.compile(r"^(?:(?P<prefix>.*?)[_-])?(?P<band>B(?:8A|0?[1-9]|1[0-2]))$", re.I)
_BASELINE_RE = re.compile(r"_N(\d{2})(\d{2})_")
#: Sentinel-2 L1C/L2A 13-band stack order (B10 absent from L2A 12-band stacks).
_S2_13 = ("B01", "B02", "B03", "B04", "B05", "B06", "B07", "B08", "B8A", "B09", "B10", "B11", "B12")
_S2_12 = tuple(b for b in _S2_13 if b != "B10")
_DESCRIPTION_NAMES = {
    "red": ("red", "b04", "b4"),
    "green": ("green", "b03", "b3"),
    "blue": ("blue", "b02", "b2"),
    "nir": ("nir", "b08", "b8", "nir08"),
}
DEFAULT_PRODUCT_BANDS = ("B04", "B03", "B02", "B08")


def open_raster(path: str | os.PathLike[str]) -> rasterio.io.DatasetReader:
    """Open a raster or raise :class:`InputError` naming the file and the problem."""
    path = Path(path)
    if not path.exists():
        raise InputError(f"{path}: no such file")
    try:
        return rasterio.open(path)
    except RasterioIOError as exc:
        raise InputError(
            f"{path}: cannot be read as a raster (corrupt or truncated?): {exc}"
        ) from exc


def _normalise_band(name: str) -> str:
    name = name.upper()
    if name == "B8A":
        return name
    return f"B{int(name[1:]):02d}"


def _check_readable(ds: rasterio.io.DatasetReader, path: Path, band: int) -> None:
    """Read the last block of a band, so a truncated file fails now, not mid-build."""
    h, w = ds.block_shapes[band - 1]
    win = Window(max(ds.width - w, 0), max(ds.height - h, 0), min(w, ds.width), min(h, ds.height))
    try:
        ds.read(band, window=win)
    except RasterioError as exc:
        raise InputError(f"{path}: cannot read its pixels (corrupt or truncated?): {exc}") from exc


@dataclass(frozen=True)
class BandRef:
    """One band of an imagery source: a file, a 1-based band index and its radiometric map."""

    path: str
    index: int
    name: str  # "red", "green", "blue" or "nir"
    scale: float
    offset: float
    nodata: float | None


@dataclass(frozen=True)
class ImagerySource:
    """A grid of imagery pixels (the grid of its finest band) and where its bands live."""

    name: str
    bands: tuple[BandRef, ...]  # red, green, blue[, nir]
    crs: str
    transform: tuple[float, ...]
    width: int
    height: int
    bounds: tuple[float, float, float, float]
    extra: dict = field(default_factory=dict, compare=False)

    @property
    def has_nir(self) -> bool:
        return len(self.bands) == 4

    def bounds_in(self, crs: CRS | str) -> tuple[float, float, float, float]:
        return transform_bounds(CRS.from_user_input(self.crs), crs, *self.bounds, densify_pts=21)


@dataclass(frozen=True)
class LandcoverTile:
    """A land-cover raster (WorldCover codes) and its footprint."""

    path: str
    crs: str
    bounds: tuple[float, float, float, float]
    res: tuple[float, float]


# ----------------------------------------------------------------------------- discovery
def _expand(paths: Iterable[str | os.PathLike[str]], what: str) -> list[Path]:
    files: list[Path] = []
    for p in paths:
        p = Path(p)
        if p.is_dir():
            found = sorted(
                q for q in p.rglob("*") if q.is_file() and q.suffix.lower() in RASTER_SUFFIXES
            )
            if not found:
                raise InputError(
                    f"{p}: folder holds no raster files ({', '.join(RASTER_SUFFIXES)})"
                )
            files.extend(found)
        elif p.exists():
            files.append(p)
        else:
            raise InputError(f"{p}: no such {what} file or folder")
    if not files:
        raise InputError(f"no {what} given")
    return files


def _crs_string(crs: CRS) -> str:
    epsg = crs.to_epsg()
    return f"EPSG:{epsg}" if epsg else crs.to_wkt()


def _baseline_from(path: Path, tags: dict[str, str]) -> tuple[int, int] | None:
    for key in ("PROCESSING_BASELINE", "processing_baseline"):
        if key in tags:
            return _parse_baseline(tags[key])
    for parent in (path.parent, path.parent.parent):
        side = parent / "metadata.json"
        if side.is_file():
            try:
                meta = json.loads(side.read_text())
            except (OSError, ValueError):
                log.warning("%s: unreadable sidecar metadata, ignored", side)
                continue
            if "PROCESSING_BASELINE" in meta:
                return _parse_baseline(str(meta["PROCESSING_BASELINE"]))
    for part in (path.name, *(p.name for p in path.parents)):
        m = _BASELINE_RE.search(part + "_")
        if m and part.upper().startswith("S2"):
            return int(m.group(1)), int(m.group(2))
    return None


def _parse_baseline(text: str) -> tuple[int, int] | None:
    m = re.match(r"\s*(\d+)\.(\d+)", text)
    return (int(m.group(1)), int(m.group(2))) if m else None


def _radiometry(
    ds: rasterio.io.DatasetReader,
    path: Path,
    index: int,
    band_name: str,
    quantification: float | None,
) -> tuple[float, float]:
    """Return (scale, offset) so that reflectance = DN * scale + offset for one band."""
    gscale, goffset = ds.scales[index - 1], ds.offsets[index - 1]
    if (gscale, goffset) != (1.0, 0.0) and gscale:
        return float(gscale), float(goffset)
    is_float = np.dtype(ds.dtypes[index - 1]).kind == "f"
    tags = {**ds.tags(), **ds.tags(index)}
    q = quantification
    for key in ("BOA_QUANTIFICATION_VALUE", "QUANTIFICATION_VALUE"):
        if q is None and key in tags:
            q = float(tags[key])
    if q is None:
        q = 1.0 if is_float else 10000.0
    add = None
    for key in (f"BOA_ADD_OFFSET_{band_name}", "BOA_ADD_OFFSET", "RADIO_ADD_OFFSET"):
        if key in tags:
            add = float(tags[key])
            break
    if add is None and not is_float:
        baseline = _baseline_from(path, tags)
        if baseline is not None and baseline >= (4, 0):
            add = -1000.0
            log.info(
                "%s: processing baseline %d.%02d: applying BOA_ADD_OFFSET -1000", path, *baseline
            )
    return 1.0 / q, (add or 0.0) / q


def _describe(path: Path, ds: rasterio.io.DatasetReader) -> None:
    if ds.crs is None:
        raise InputError(f"{path}: has no CRS; assign one (e.g. gdal_edit.py -a_srs EPSG:xxxx)")
    if ds.dtypes[0] not in SUPPORTED_DTYPES:
        raise InputError(
            f"{path}: unsupported data type {ds.dtypes[0]} for imagery; "
            f"expected one of {', '.join(SUPPORTED_DTYPES)}"
        )
    _check_grid(ds, path)


def _check_grid(ds: rasterio.io.DatasetReader, path: Path) -> None:
    t = ds.transform
    if t.is_identity:
        raise InputError(
            f"{path}: has no georeferencing (identity geotransform, so pixel coordinates are "
            "not map coordinates); assign a transform, e.g. with gdal_translate -a_ullr"
        )
    if t.b != 0 or t.d != 0 or t.e >= 0:
        raise InputError(f"{path}: only north-up grids are supported; warp it first (gdalwarp)")


def _choose_multiband(
    ds: rasterio.io.DatasetReader, path: Path, bands: Sequence[str] | None
) -> list[int]:
    """1-based indices of red, green, blue[, nir] in a multi-band file."""
    if bands:
        out = []
        for b in bands:
            if str(b).isdigit():
                i = int(b)
            else:
                desc = [(d or "").lower() for d in ds.descriptions]
                key = str(b).lower()
                if key not in desc:
                    raise InputError(
                        f"{path}: no band described as {b!r}; bands: {ds.descriptions}"
                    )
                i = desc.index(key) + 1
            if not 1 <= i <= ds.count:
                raise InputError(f"{path}: band {i} requested but the file has {ds.count} bands")
            out.append(i)
        if len(out) not in (3, 4):
            raise InputError(f"--bands needs 3 (RGB) or 4 (RGB+NIR) bands, got {len(out)}")
        return out
    desc = [(d or "").lower() for d in ds.descriptions]
    found = []
    for role in ("red", "green", "blue", "nir"):
        hit = [i + 1 for i, d in enumerate(desc) if d in _DESCRIPTION_NAMES[role]]
        found.append(hit[0] if hit else None)
    if all(found[:3]):
        return [i for i in found if i is not None]
    if ds.count in (3, 4):
        return list(range(1, ds.count + 1))
    if ds.count in (12, 13):
        order = _S2_13 if ds.count == 13 else _S2_12
        return [order.index(b) + 1 for b in DEFAULT_PRODUCT_BANDS]
    raise InputError(
        f"{path}: unsupported band count {ds.count}; say which bands are red, green, blue[, nir] "
        "with --bands (1-based indices or band descriptions)"
    )


def _safe_name(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", text).strip("-") or "source"


def discover_imagery(
    paths: Iterable[str | os.PathLike[str]],
    *,
    bands: Sequence[str] | None = None,
    quantification: float | None = None,
    check_pixels: bool = True,
) -> list[ImagerySource]:
    """Find imagery sources among files and folders; validate CRS, dtype, bands, readability.

    One-file-per-band products are grouped by folder and name prefix; ``bands`` then names the
    product bands for red, green, blue[, nir] (default B04, B03, B02, B08; NIR is dropped when
    absent). For multi-band files ``bands`` are 1-based indices or band descriptions.
    """
    files = _expand(paths, "imagery")
    groups: dict[tuple[Path, str], dict[str, Path]] = {}
    singles: list[Path] = []
    for f in files:
        m = _BAND_RE.match(f.stem)
        if m:
            groups.setdefault((f.parent, m.group("prefix") or ""), {})[
                _normalise_band(m.group("band"))
            ] = f
        else:
            singles.append(f)
    sources: list[ImagerySource] = []
    for f in singles:
        with open_raster(f) as ds:
            _describe(f, ds)
            idx = _choose_multiband(ds, f, bands)
            if check_pixels:
                _check_readable(ds, f, idx[0])
            roles = ("red", "green", "blue", "nir")
            refs = tuple(
                BandRef(
                    str(f), i, roles[k], *_radiometry(ds, f, i, roles[k], quantification), ds.nodata
                )
                for k, i in enumerate(idx)
            )
            sources.append(_make_source(f.stem, refs, ds))
    for (folder, prefix), members in sorted(groups.items()):
        wanted = [_normalise_band(b) for b in bands] if bands else list(DEFAULT_PRODUCT_BANDS)
        label = prefix or folder.name
        if not bands and "B08" not in members:
            wanted = wanted[:3]
        missing = [b for b in wanted if b not in members]
        if missing:
            raise InputError(
                f"{folder}: product {label!r} lacks band files {missing}; has {sorted(members)}"
            )
        if len(wanted) not in (3, 4):
            raise InputError(f"--bands needs 3 (RGB) or 4 (RGB+NIR) bands, got {len(wanted)}")
        refs_list = []
        finest: tuple[float, Path] | None = None
        for role, b in zip(("red", "green", "blue", "nir"), wanted):
            p = members[b]
            with open_raster(p) as ds:
                _describe(p, ds)
                if check_pixels:
                    _check_readable(ds, p, 1)
                refs_list.append(
                    BandRef(str(p), 1, role, *_radiometry(ds, p, 1, b, quantification), ds.nodata)
                )
                if finest is None or ds.res[0] < finest[0]:
                    finest = (ds.res[0], p)
        if finest is None:  # unreachable: ``wanted`` is never empty
            raise InputError(f"{folder}: product {label!r} has no bands")
        with open_raster(finest[1]) as ds:
            sources.append(_make_source(label, tuple(refs_list), ds))
    _dedupe_names(sources)
    return sources


def _make_source(
    name: str, refs: tuple[BandRef, ...], ds: rasterio.io.DatasetReader
) -> ImagerySource:
    return ImagerySource(
        name=_safe_name(name),
        bands=refs,
        crs=_crs_string(ds.crs),
        transform=tuple(ds.transform)[:6],
        width=ds.width,
        height=ds.height,
        bounds=tuple(ds.bounds),
    )


def _dedupe_names(sources: list[ImagerySource]) -> None:
    seen: dict[str, int] = {}
    for i, s in enumerate(sources):
        n = seen.get(s.name, 0)
        seen[s.name] = n + 1
        if n:
            sources[i] = ImagerySource(**{**s.__dict__, "name": f"{s.name}-{n + 1}"})


def discover_landcover(
    paths: Iterable[str | os.PathLike[str]], *, check_pixels: bool = True
) -> list[LandcoverTile]:
    """Find land-cover tiles; each must have a CRS and one uint8 band of WorldCover codes."""
    tiles = []
    for f in _expand(paths, "land-cover"):
        with open_raster(f) as ds:
            if ds.crs is None:
                raise InputError(f"{f}: land cover has no CRS")
            _check_grid(ds, f)
            if ds.count != 1 or ds.dtypes[0] not in ("uint8", "int16", "uint16", "int32"):
                raise InputError(
                    f"{f}: expected one band of integer WorldCover codes, "
                    f"got {ds.count} band(s) of {ds.dtypes[0]}"
                )
            if check_pixels:
                _check_readable(ds, f, 1)
            tiles.append(LandcoverTile(str(f), _crs_string(ds.crs), tuple(ds.bounds), ds.res))
    return tiles
