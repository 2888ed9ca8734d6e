"""The sample world: a synthetic, WorldCover-like land-cover map and matching Sentinel-2 image.

It is the built-in default input of groundsynth, so that every stage can run (and be tested)
without downloading anything. :func:`make_sample_world` writes two GeoTIFFs:

``landcover.tif``
    uint8 ESA WorldCover codes (all eleven, 10 ... 100), nodata 0 with an irregular nodata
    strip along at least one edge, EPSG:4326, 1/12000 degree pixels (as WorldCover), tiled,
    deflate. Structure: an elevation-like field carries smooth natural cover (tree, shrub,
    grass, bare), rock, moss/lichen and snow on the highest ground; lowlands hold a grid of
    rectangular parcels (mostly crop); towns are clustered built-up blocks joined by roads;
    meandering rivers and lakes with wetland shores and rare mangrove patches.
``sentinel2.tif``
    4-band uint16 reflectance x 10000 (red, green, blue, NIR), nodata 0, on a different grid:
    the UTM zone of the map centre at 10 m, covering the map's footprint (zero outside it and
    wherever the map is nodata). Rendered from the map: nearest-neighbour reprojection of the
    codes, per-class mean spectra, per-parcel and low-frequency texture, per-pixel noise.

The ``region`` shifts class balance and spectra ("arid": more bare/shrub, less tree/crop,
drier and brighter vegetation and soil), for cross-region experiments. Output is a pure
function of the config: same config, byte-identical pixels.

>>> world = make_sample_world(tmp_dir, SampleWorldConfig(size=512, seed=1))  # doctest: +SKIP
>>> world.landcover.name, world.imagery.name  # doctest: +SKIP
('landcover.tif', 'sentinel2.tif')
"""

from __future__ import annotations

import logging
import math
import numbers
import time
from dataclasses import asdict, dataclass
from os import PathLike
from pathlib import Path
from typing import Literal

import numpy as np
import rasterio
from rasterio.crs import CRS
from rasterio.enums import ColorInterp, Resampling
from rasterio.transform import Affine
from rasterio.warp import reproject, transform_bounds

from groundsynth.data.noise import lowres, noise, quantiles, upsample, window
from groundsynth.data.sample_regions import (
    BARE,
    BUILT,
    CROP,
    GRASS,
    MANGROVE,
    MOSS,
    REGIONS,
    SNOW,
    SOIL_MIX,
    TEXTURE,
    WATER,
    WETLAND,
    WORLDCOVER_COLOURS,
    Region,
)
from groundsynth.io import atomic_path

__all__ = [
    "IMAGERY_BANDS",
    "PIXEL_DEGREES",
    "SampleWorld",
    "SampleWorldConfig",
    "imagery_grid",
    "make_landcover",
    "make_sample_world",
    "render_imagery",
]

logger = logging.getLogger(__name__)

#: Pixel size of the land-cover map in degrees, as ESA WorldCover (about 10 m).
PIXEL_DEGREES: float = 1.0 / 12000.0
#: Band order of the imagery.
IMAGERY_BANDS: tuple[str, ...] = ("red", "green", "blue", "nir")
_IMAGERY_RES = 10.0  # metres
_BLOCK = 256


@dataclass(frozen=True)
class SampleWorldConfig:
    """What sample world to make.

    Args:
        size: the land-cover map is ``size`` x ``size`` pixels (1/12000 degree, about 10 m).
        seed: random seed; the output is a pure function of the config.
        region: "temperate" or "arid"; sets the class balance and the spectra.
        lon: west edge of the map, degrees east.
        lat: north edge of the map, degrees north.
        nodata_fraction: mean width of the nodata strip along an edge, as a fraction of
            ``size`` (about the fraction of nodata pixels per strip).
    """

    size: int = 4096
    seed: int = 0
    region: Literal["temperate", "arid"] = "temperate"
    lon: float = 33.0
    lat: float = 40.0
    nodata_fraction: float = 0.03

    def __post_init__(self) -> None:
        if not _is_int(self.size) or self.size < 64:
            raise ValueError(f"size must be an integer >= 64 pixels; got {self.size!r}")
        if self.size > 36000:
            raise ValueError(f"size must be <= 36000 (one WorldCover tile); got {self.size}")
        if not _is_int(self.seed) or self.seed < 0:
            raise ValueError(f"seed must be a non-negative integer; got {self.seed!r}")
        if self.region not in REGIONS:
            raise ValueError(f"unknown region {self.region!r}; valid regions: {', '.join(REGIONS)}")
        extent = self.size * PIXEL_DEGREES
        if not -180.0 <= self.lon <= 180.0 - extent:
            raise ValueError(
                f"lon (west edge) must lie in [-180, {180.0 - extent:.4f}] so that the "
                f"{self.size}-pixel map fits; got {self.lon}"
            )
        centre_lat = self.lat - extent / 2
        if not (self.lat <= 84.0 and centre_lat >= -80.0):
            raise ValueError(
                "lat (north edge) must keep the map inside the UTM range (80 S to 84 N); "
                f"got lat={self.lat} for a map {extent:.4f} degrees tall"
            )
        if not 0.0 < self.nodata_fraction <= 0.2:
            raise ValueError(f"nodata_fraction must be in (0, 0.2]; got {self.nodata_fraction}")

    @property
    def bounds(self) -> tuple[float, float, float, float]:
        """Map bounds (west, south, east, north) in degrees."""
        extent = self.size * PIXEL_DEGREES
        return (self.lon, self.lat - extent, self.lon + extent, self.lat)

    @property
    def utm_crs(self) -> CRS:
        """The UTM CRS (WGS84) of the zone holding the map centre."""
        west, south, east, north = self.bounds
        lon_c, lat_c = (west + east) / 2, (south + north) / 2
        zone = min(int((lon_c + 180.0) // 6.0) + 1, 60)
        return CRS.from_epsg((32600 if lat_c >= 0 else 32700) + zone)


def _is_int(value: object) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


@dataclass(frozen=True)
class SampleWorld:
    """The files of a sample world and the config that made them."""

    landcover: Path
    imagery: Path
    config: SampleWorldConfig


def make_sample_world(
    out_dir: str | PathLike[str], config: SampleWorldConfig = SampleWorldConfig()
) -> SampleWorld:
    """Write ``landcover.tif`` and ``sentinel2.tif`` for ``config`` into ``out_dir``.

    Existing files of those names are replaced (atomically). Returns their paths.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    codes, variant = make_landcover(config)
    t1 = time.perf_counter()
    landcover = _write_landcover(out / "landcover.tif", codes, config)
    t2 = time.perf_counter()
    image, crs, transform = render_imagery(codes, variant, config)
    t3 = time.perf_counter()
    imagery = _write_imagery(out / "sentinel2.tif", image, crs, transform, config)
    t4 = time.perf_counter()
    logger.info(
        "sample world %dx%d (%s, seed %d) in %s: map %.2fs + write %.2fs, imagery %dx%d "
        "%.2fs + write %.2fs",
        config.size, config.size, config.region, config.seed, out, t1 - t0, t2 - t1,
        image.shape[2], image.shape[1], t3 - t2, t4 - t3,
    )  # fmt: skip
    return SampleWorld(landcover=landcover, imagery=imagery, config=config)


# ----------------------------------------------------------------------------- noise


def _rng(config: SampleWorldConfig, stream: int) -> np.random.Generator:
    """An independent random stream per component, so components do not perturb each other."""
    return np.random.default_rng(np.random.SeedSequence(config.seed, spawn_key=(stream,)))


# ----------------------------------------------------------------------------- land cover


def make_landcover(config: SampleWorldConfig) -> tuple[np.ndarray, np.ndarray]:
    """Return the land-cover map of ``config`` and its per-parcel variant.

    Both are ``size`` x ``size`` uint8: WorldCover codes (0 = nodata), and a random value
    1..255 per farmland parcel (128 elsewhere) that the imagery uses for parcel spectra.
    """
    n = config.size
    shape = (n, n)
    region = REGIONS[config.region]
    valid = _nodata_border(config)

    # Natural cover from a moisture-like score; drier on high ground.
    elev_low = lowres(_rng(config, 1), shape, beta=3.2)
    elev = upsample(elev_low, 4, shape)
    score = upsample(lowres(_rng(config, 2), shape, beta=2.8) - 0.45 * elev_low, 4, shape)
    classes = np.fromiter(region.natural, dtype=np.uint8)
    cuts = quantiles(score, valid, np.cumsum(list(region.natural.values()))[:-1])
    codes = classes[np.searchsorted(cuts, score)]
    del score

    # High ground: rock, then moss/lichen, then snow on the very top.
    rock, moss, snow = quantiles(elev, valid, [0.94, 0.97, 0.988])
    codes[elev >= rock] = BARE
    codes[elev >= moss] = MOSS
    codes[elev >= snow] = SNOW

    # Lowland parcels and the towns on them.
    rng = _rng(config, 3)
    agri = upsample(0.6 * lowres(rng, shape, beta=3.0) - elev_low, 4, shape)
    farmland = agri >= quantiles(agri, valid, 1.0 - region.cultivated)
    del agri
    parcels, parcel_variant = _parcels(rng, shape, region)
    codes[farmland] = parcels[farmland]
    variant = np.full(shape, 128, dtype=np.uint8)
    variant[farmland] = parcel_variant[farmland]
    del parcels, parcel_variant
    _towns(_rng(config, 4), codes, farmland & valid, region)
    del farmland

    # Water: rivers, then lakes with wetland shores and mangroves.
    river_max = float(quantiles(elev, valid, region.river_max_elev))
    _rivers(_rng(config, 5), codes, elev_low, river_max)
    _lakes(_rng(config, 6), codes, elev, valid, region)
    codes[~valid] = 0
    return codes, variant


def _nodata_border(config: SampleWorldConfig) -> np.ndarray:
    """Boolean mask of valid pixels: False in an irregular strip along one or two edges."""
    rng = _rng(config, 0)
    n = config.size
    edges = [int(rng.integers(4))]
    if rng.random() < 0.35:
        edges.append((edges[0] + 1 + int(rng.integers(3))) % 4)
    valid = np.ones((n, n), dtype=bool)
    depth = np.arange(n)
    for edge in edges:  # 0 top, 1 right, 2 bottom, 3 left
        along = noise(rng, (1, n), beta=2.2, factor=8)[0] + 0.04 * rng.standard_normal(n)
        width = np.clip(config.nodata_fraction * n * (1.0 + 0.5 * along), 1, n / 3)
        d = depth if edge in (0, 3) else depth[::-1]
        valid &= (d[:, None] >= width[None, :]) if edge in (0, 2) else (d >= width[:, None])
    return valid


def _parcels(rng: np.random.Generator, shape: tuple[int, int], region: Region):
    """A full-map grid of rectangular parcels (150-500 m sides): codes and variants 1..255."""

    def cuts(n: int) -> np.ndarray:  # index of the parcel row/column of every pixel
        sizes = rng.integers(15, 50, size=n // 15 + 2)
        return np.repeat(np.arange(sizes.size), sizes)[:n]

    rows, cols = cuts(shape[0]), cuts(shape[1])
    table = rng.choice(
        np.fromiter(region.parcels, dtype=np.uint8),
        size=(rows[-1] + 1, cols[-1] + 1),
        p=list(region.parcels.values()),
    )
    variant = rng.integers(1, 256, size=table.shape, dtype=np.uint8)
    return table[rows[:, None], cols[None, :]], variant[rows[:, None], cols[None, :]]


def _towns(rng: np.random.Generator, codes: np.ndarray, land: np.ndarray, region: Region):
    """Clustered built-up blocks with streets, on farmland, joined by roads."""
    n = codes.shape[0]
    count = max(1, round(n * n / region.town_area))
    centres = _pick(rng, land, count, margin=8)
    for cy, cx in centres:
        radius = float(rng.uniform(20, 110)) * min(1.0, n / 1024 + 0.3)
        win, dy, dx = window((cy, cx), radius * 1.3, codes.shape)
        wobble = noise(rng, dy.shape, beta=2.5, factor=2)
        dist = np.hypot(dy, dx) / radius + 0.15 * wobble
        block, street = int(rng.integers(6, 13)), int(rng.integers(1, 3))
        period = block + street
        oy = (dy + radius * 2 + rng.integers(period)).astype(np.intp)  # >= 0 in the window
        ox = (dx + radius * 2 + rng.integers(period)).astype(np.intp)
        in_block = (oy % period < block) & (ox % period < block)  # else: a street
        by, bx = oy // period, ox // period
        built_p = rng.random((by.max() + 1, bx.max() + 1))
        built = in_block & (built_p[by, bx] < 1.15 - dist)
        streets = ~in_block & (dist < 0.8)
        town = dist < 1.0
        sub = codes[win]
        sub[town & ~built & ~streets & (sub == CROP)] = GRASS  # gardens
        sub[town & (built | streets)] = BUILT
    for i in range(1, len(centres)):  # each town to its nearest earlier one
        d = np.hypot(*(np.asarray(centres[:i]) - centres[i]).T)
        _road(rng, codes, centres[i], centres[int(np.argmin(d))])


def _road(rng: np.random.Generator, codes: np.ndarray, a, b) -> None:
    """Draw a gently meandering 1-2 pixel built-up line from ``a`` to ``b``."""
    (ay, ax), (by, bx) = a, b
    length = math.hypot(by - ay, bx - ax)
    t = np.linspace(0.0, 1.0, max(2, int(length * 2)))
    bend = np.sin(np.pi * t) * sum(
        rng.normal(0, 0.04 * length) * np.sin(np.pi * k * t + rng.uniform(0, 6.3))
        for k in (1, 2, 3)
    )
    ny, nx = (bx - ax) / max(length, 1), -(by - ay) / max(length, 1)
    ys = np.round(ay + (by - ay) * t + ny * bend).astype(np.intp)
    xs = np.round(ax + (bx - ax) * t + nx * bend).astype(np.intp)
    width = int(rng.integers(1, 3))
    for off in range(width):
        ok = (ys + off < codes.shape[0]) & (ys >= 0) & (xs >= 0) & (xs < codes.shape[1])
        codes[ys[ok] + off, xs[ok]] = BUILT


def _rivers(rng, codes: np.ndarray, elev_low: np.ndarray, max_elev: float) -> None:
    """Meandering rivers, 1.5-5 pixels wide, along the zero lines of a smooth field.

    Rivers run below ``max_elev``, widen downhill, and break into reaches; every field but
    the one whose zero lines they follow is combined at low resolution (``elev_low``'s grid).
    """
    shape = codes.shape
    field_low = lowres(rng, shape, beta=3.4)
    gy, gx = np.gradient(field_low)
    slope = np.hypot(gy, gx) / 4  # field change per full-resolution pixel
    width = 1.5 + 3.5 * np.clip((max_elev - elev_low) / (abs(max_elev) + 1.0), 0.0, 1.0)
    keep = (elev_low < max_elev) & (lowres(rng, shape, beta=2.5) > -0.6)
    # |field| / slope ~ distance (pixels) to the zero line; tapers at the ends of reaches.
    half = upsample(np.where(keep, width / 2 * slope, 0.0).astype(np.float32), 4, shape)
    codes[np.abs(upsample(field_low, 4, shape)) < half] = WATER


def _lakes(rng, codes: np.ndarray, elev: np.ndarray, valid: np.ndarray, region: Region):
    """Lakes (noisy blobs) on lower ground, wetland on their shores, rare mangroves."""
    n = codes.shape[0]
    count = max(1, round(n * n / region.lake_area))
    below = elev < quantiles(elev, valid, 0.55)
    centres = _pick(rng, below & valid, count, margin=max(12, n // 16))
    shores: list[np.ndarray] = []  # valid land pixels (row, col) on each lake's shore
    for cy, cx in centres:
        radius = float(rng.uniform(10, 60)) * min(1.0, n / 1024 + 0.3)
        win, dy, dx = window((cy, cx), radius * 1.8, codes.shape)
        wobble = noise(rng, dy.shape, beta=2.5, factor=2)
        dist = np.hypot(dy, dx) / radius + 0.2 * wobble
        ring = np.maximum(1.12 + 0.2 * noise(rng, dy.shape, beta=3.0, factor=2), 1.06)
        sub = codes[win]
        sub[(dist >= 1.0) & (dist < ring) & (sub != WATER)] = WETLAND
        sub[dist < 1.0] = WATER
        shore = np.argwhere((dist >= 1.0) & (dist < 1.4) & (sub != WATER) & valid[win])
        if shore.size:
            shores.append(shore + (win[0].start, win[1].start))
    for i in range(max(1, count // 3) if shores else 0):  # rare mangroves on lake shores
        shore = shores[i % len(shores)]
        at = shore[rng.integers(len(shore))]
        size = float(rng.uniform(3, 8))
        win, dy, dx = window((float(at[0]), float(at[1])), size, codes.shape)
        sub = codes[win]
        sub[(np.hypot(dy, dx) < size) & (sub != WATER)] = MANGROVE


def _pick(rng, mask: np.ndarray, count: int, margin: int) -> list[tuple[float, float]]:
    """``count`` random pixel positions where ``mask`` holds, ``margin`` px off the edges."""
    n = mask.shape[0]
    step = max(1, n // 1024)
    inner = mask[margin : n - margin : step, margin : n - margin : step]
    ys, xs = np.nonzero(inner)
    if ys.size == 0:  # no such ground: fall back to anywhere inside the margin
        ys, xs = np.nonzero(np.ones_like(inner))
    idx = rng.choice(ys.size, size=count, replace=ys.size < count)
    return [(float(margin + ys[i] * step), float(margin + xs[i] * step)) for i in idx]


# ----------------------------------------------------------------------------- imagery


def _north_up(west: float, north: float, res: float) -> Affine:
    """A north-up transform (as ``rasterio.transform.from_origin``, without its warning)."""
    return Affine(res, 0.0, west, 0.0, -res, north)


def imagery_grid(config: SampleWorldConfig) -> tuple[CRS, Affine, int, int]:
    """The imagery grid: UTM CRS, transform, width and height (10 m, map's footprint)."""
    crs = config.utm_crs
    left, bottom, right, top = transform_bounds("EPSG:4326", crs, *config.bounds, densify_pts=21)
    left, top = (
        math.floor(left / _IMAGERY_RES) * _IMAGERY_RES,
        math.ceil(top / _IMAGERY_RES) * _IMAGERY_RES,
    )
    width = math.ceil((right - left) / _IMAGERY_RES)
    height = math.ceil((top - bottom) / _IMAGERY_RES)
    return crs, _north_up(left, top, _IMAGERY_RES), width, height


def render_imagery(codes: np.ndarray, variant: np.ndarray, config: SampleWorldConfig):
    """Render the Sentinel-2-like image of a land-cover map on its UTM grid.

    ``variant`` (1..255 per pixel, see :func:`make_landcover`) sets how far each crop parcel
    has turned to bare soil. Returns ``(image, crs, transform)``; ``image`` is uint16
    (4, height, width), reflectance x 10000 in band order :data:`IMAGERY_BANDS`, 0 where the
    map is nodata or absent.
    """
    region = REGIONS[config.region]
    crs, transform, width, height = imagery_grid(config)
    src_transform = _north_up(config.lon, config.lat, PIXEL_DEGREES)
    # Reproject the codes together with a per-parcel "variant" band (1..255, never nodata).
    rng = _rng(config, 7)
    dst = np.zeros((2, height, width), dtype=np.uint8)
    reproject(
        np.stack([codes, variant]), dst, src_transform=src_transform, src_crs="EPSG:4326",
        dst_transform=transform, dst_crs=crs, resampling=Resampling.nearest,
        src_nodata=0, dst_nodata=0, num_threads=1,
    )  # fmt: skip
    lc, var = dst[0], dst[1].astype(np.float32) / 255.0
    del dst

    lut = np.zeros((256, 4), dtype=np.float32)
    for code, spectrum in region.spectra.items():
        lut[code] = spectrum
    texture_lut = np.zeros(256, dtype=np.float32)
    soil_lut = np.zeros(256, dtype=np.float32)
    for code, amp in TEXTURE.items():
        texture_lut[code] = amp
    for code, mix in SOIL_MIX.items():
        soil_lut[code] = mix
    # Brightness: low-frequency texture times per-pixel variation common to all bands
    # (sub-pixel heterogeneity), then a little independent noise per band (sensor).
    gain = noise(rng, lc.shape, beta=2.6)
    gain *= texture_lut[lc]
    gain += 1.0
    gain *= 1.0 + 0.04 * rng.standard_normal(lc.shape, dtype=np.float32)
    gain *= 10000.0
    soil = soil_lut[lc] * var**2
    del var
    nodata = lc == 0
    image = np.empty((4, height, width), dtype=np.uint16)
    for b in range(4):
        refl = lut[:, b].copy()[lc]
        refl += (region.soil[b] - refl) * soil
        refl *= gain
        sensor = rng.random(lc.shape, dtype=np.float32)
        sensor -= 0.5
        sensor *= 0.035 * refl + 35.0  # uniform, sd ~1 % + 10 DN
        refl += sensor
        del sensor
        np.clip(refl, 1.0, 10000.0, out=refl)
        refl[nodata] = 0.0
        image[b] = np.rint(refl)
    return image, crs, transform


# ----------------------------------------------------------------------------- writing


def _write_landcover(path: Path, codes: np.ndarray, config: SampleWorldConfig) -> Path:
    transform = _north_up(config.lon, config.lat, PIXEL_DEGREES)
    profile = dict(
        driver="GTiff", width=config.size, height=config.size, count=1, dtype="uint8",
        crs="EPSG:4326", nodata=0, tiled=True, blockxsize=_BLOCK, blockysize=_BLOCK,
        compress="deflate", transform=transform,
    )  # fmt: skip
    with atomic_path(path, suffix=".tif") as tmp, rasterio.open(tmp, "w", **profile) as dst:
        dst.write_colormap(1, {c: (*rgb, 255) for c, rgb in WORLDCOVER_COLOURS.items()})
        dst.write(codes, 1)
        dst.set_band_description(1, "worldcover_code")
        dst.update_tags(**_tags(config))
    return path


def _write_imagery(path: Path, image, crs, transform, config: SampleWorldConfig) -> Path:
    profile = dict(
        driver="GTiff", width=image.shape[2], height=image.shape[1], count=4, dtype="uint16",
        crs=crs, transform=transform, nodata=0, tiled=True, blockxsize=_BLOCK,
        blockysize=_BLOCK, compress="deflate", zlevel=1, predictor=2, interleave="pixel",
    )  # fmt: skip
    with atomic_path(path, suffix=".tif") as tmp, rasterio.open(tmp, "w", **profile) as dst:
        rgb = [ColorInterp.red, ColorInterp.green, ColorInterp.blue, ColorInterp.undefined]
        dst.colorinterp = rgb  # before the pixels: TIFF fixes it once data are written
        for b, name in enumerate(IMAGERY_BANDS, start=1):
            dst.set_band_description(b, name)
        dst.write(image)
        dst.update_tags(**_tags(config), scale="10000")
    return path


def _tags(config: SampleWorldConfig) -> dict[str, str]:
    return {"groundsynth_sample_world": "1", **{k: str(v) for k, v in asdict(config).items()}}
