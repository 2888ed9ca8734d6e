"""The ESA WorldCover tile grid and the products published on it.

Every WorldCover product shares one global grid in EPSG:4326: pixels of 1/12000 degree
(about 10 m at the equator) counted from (-180, 90). The land-cover maps come in 3 x 3 degree
tiles of 36000 x 36000 pixels, the Sentinel-2 RGBNIR yearly composites in 1 x 1 degree tiles
of 12000 x 12000 pixels; a tile is named after its lower-left (south-west) corner: ``N00E006``
covers latitude 0..3 and longitude 6..9 (a map tile), ``S01W002`` latitude -1..0 and longitude
-2..-1 (a composite tile). Because the tiles share the grid, windows of different tiles and
products line up pixel for pixel, and a mosaic of them needs no resampling.

Public layout (AWS Open Data, no account needed)::

    https://esa-worldcover.s3.eu-central-1.amazonaws.com/
        v100/2020/map/ESA_WorldCover_10m_2020_v100_N00E006_Map.tif
        v200/2021/map/ESA_WorldCover_10m_2021_v200_N00E006_Map.tif
    https://esa-worldcover-s2.s3.eu-central-1.amazonaws.com/
        rgbnir/2020/N00/ESA_WorldCover_10m_2020_v100_N00E006_S2RGBNIR.tif
        rgbnir/2021/N00/ESA_WorldCover_10m_2021_v200_N00E006_S2RGBNIR.tif
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass

from affine import Affine

from groundsynth.acquire.area import BBox
from groundsynth.errors import InputError

__all__ = [
    "MAP",
    "PIXELS_PER_DEGREE",
    "PRODUCTS",
    "S2RGBNIR",
    "VERSIONS",
    "GridWindow",
    "Product",
    "TileWindow",
    "area_window",
    "tile_name",
    "tile_windows",
]

#: Pixels per degree of the WorldCover grid (pixel size 1/12000 degree).
PIXELS_PER_DEGREE = 12000
#: Algorithm version of each published year.
VERSIONS = {2020: "v100", 2021: "v200"}
DEFAULT_MAP_BASE_URL = "https://esa-worldcover.s3.eu-central-1.amazonaws.com"
DEFAULT_S2_BASE_URL = "https://esa-worldcover-s2.s3.eu-central-1.amazonaws.com"
#: Tolerance, in pixels, when snapping coordinates onto the grid.
_SNAP = 1e-6


def check_year(year: int) -> str:
    """The algorithm version of ``year``; :class:`InputError` for a year not published."""
    if year not in VERSIONS:
        raise InputError(
            f"--year: WorldCover is published for {', '.join(map(str, VERSIONS))}; got {year}"
        )
    return VERSIONS[year]


def tile_name(lat: int, lon: int) -> str:
    """Name of the tile whose lower-left corner is (``lat``, ``lon``): ``N00E006``."""
    ns = f"N{lat:02d}" if lat >= 0 else f"S{-lat:02d}"
    ew = f"E{lon:03d}" if lon >= 0 else f"W{-lon:03d}"
    return ns + ew


@dataclass(frozen=True)
class Product:
    """A WorldCover product: its tiling, pixel type and where its files are."""

    name: str  # "map" or "s2rgbnir"
    title: str
    tile_degrees: int
    count: int
    dtype: str
    band_names: tuple[str, ...]

    @property
    def tile_pixels(self) -> int:
        return self.tile_degrees * PIXELS_PER_DEGREE

    def url(self, base: str, year: int, tile: str) -> str:
        version = check_year(year)
        base = base.rstrip("/")
        stem = f"ESA_WorldCover_10m_{year}_{version}_{tile}"
        if self.name == "map":
            return f"{base}/{version}/{year}/map/{stem}_Map.tif"
        return f"{base}/rgbnir/{year}/{tile[:3]}/{stem}_S2RGBNIR.tif"


MAP = Product(
    name="map",
    title="WorldCover land-cover map",
    tile_degrees=3,
    count=1,
    dtype="uint8",
    band_names=("landcover",),
)
S2RGBNIR = Product(
    name="s2rgbnir",
    title="WorldCover Sentinel-2 RGBNIR yearly composite",
    tile_degrees=1,
    count=4,
    dtype="uint16",
    band_names=("red", "green", "blue", "nir"),
)
PRODUCTS = {p.name: p for p in (MAP, S2RGBNIR)}


@dataclass(frozen=True)
class GridWindow:
    """A window of the global grid: columns from -180 degrees, rows from 90 degrees."""

    col: int
    row: int
    width: int
    height: int

    @property
    def transform(self) -> Affine:
        res = 1.0 / PIXELS_PER_DEGREE
        return Affine(
            res,
            0.0,
            -180.0 + self.col / PIXELS_PER_DEGREE,
            0.0,
            -res,
            90.0 - self.row / PIXELS_PER_DEGREE,
        )

    @property
    def bounds(self) -> BBox:
        return (
            -180.0 + self.col / PIXELS_PER_DEGREE,
            90.0 - (self.row + self.height) / PIXELS_PER_DEGREE,
            -180.0 + (self.col + self.width) / PIXELS_PER_DEGREE,
            90.0 - self.row / PIXELS_PER_DEGREE,
        )

    @property
    def pixels(self) -> int:
        return self.width * self.height

    def intersection(self, other: GridWindow) -> GridWindow | None:
        c0, r0 = max(self.col, other.col), max(self.row, other.row)
        c1 = min(self.col + self.width, other.col + other.width)
        r1 = min(self.row + self.height, other.row + other.height)
        if c1 <= c0 or r1 <= r0:
            return None
        return GridWindow(c0, r0, c1 - c0, r1 - r0)


def area_window(bbox: BBox) -> GridWindow:
    """The smallest window of whole grid pixels that covers ``bbox``."""
    west, south, east, north = bbox
    c0 = math.floor((west + 180.0) * PIXELS_PER_DEGREE + _SNAP)
    c1 = math.ceil((east + 180.0) * PIXELS_PER_DEGREE - _SNAP)
    r0 = math.floor((90.0 - north) * PIXELS_PER_DEGREE + _SNAP)
    r1 = math.ceil((90.0 - south) * PIXELS_PER_DEGREE - _SNAP)
    return GridWindow(c0, r0, max(c1 - c0, 1), max(r1 - r0, 1))


@dataclass(frozen=True)
class TileWindow:
    """The part of one tile that an area needs, and where it goes in the area's grid."""

    product: Product
    tile: str
    #: The tile itself in the global grid.
    tile_grid: GridWindow
    #: The needed part of the tile, in the global grid.
    grid: GridWindow

    @property
    def local(self) -> GridWindow:
        """The needed part in the tile's own pixel coordinates."""
        return GridWindow(
            self.grid.col - self.tile_grid.col,
            self.grid.row - self.tile_grid.row,
            self.grid.width,
            self.grid.height,
        )

    def chunks(self, size: int) -> Iterator[GridWindow]:
        """The needed part cut at tile-local multiples of ``size`` (global-grid windows).

        Chunk edges fall on tile-local multiples of ``size``; with ``size`` a multiple of the
        file's internal block size, no block is fetched for two chunks.
        """
        local = self.local
        for r in range(local.row // size * size, local.row + local.height, size):
            for c in range(local.col // size * size, local.col + local.width, size):
                cell = GridWindow(self.tile_grid.col + c, self.tile_grid.row + r, size, size)
                part = cell.intersection(self.grid)
                if part is not None:
                    yield part


def tile_windows(product: Product, area: GridWindow) -> list[TileWindow]:
    """The tiles of ``product`` that ``area`` touches, north to south, west to east."""
    tp = product.tile_pixels
    out = []
    for trow in range(area.row // tp, (area.row + area.height - 1) // tp + 1):
        for tcol in range(area.col // tp, (area.col + area.width - 1) // tp + 1):
            tile_grid = GridWindow(tcol * tp, trow * tp, tp, tp)
            part = tile_grid.intersection(area)
            if part is None:  # pragma: no cover - the loop bounds exclude it
                continue
            lat = 90 - (trow + 1) * product.tile_degrees
            lon = -180 + tcol * product.tile_degrees
            out.append(TileWindow(product, tile_name(lat, lon), tile_grid, part))
    return out
