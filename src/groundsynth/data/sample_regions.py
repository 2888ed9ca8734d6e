"""Regions of the sample world: WorldCover codes, class balance and spectra per region.

Pure data used by :mod:`groundsynth.data.sample_world`: a region sets how much of the map is
natural cover (and which), cultivated parcels, towns, lakes and rivers, and the mean surface
reflectance of every WorldCover class in red, green, blue and NIR.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["REGIONS", "Region"]

# WorldCover codes.
TREE, SHRUB, GRASS, CROP, BUILT, BARE, SNOW, WATER, WETLAND, MANGROVE, MOSS = (
    10, 20, 30, 40, 50, 60, 70, 80, 90, 95, 100,
)  # fmt: skip

#: Official WorldCover colours, written as the land-cover colour map.
WORLDCOVER_COLOURS: dict[int, tuple[int, int, int]] = {
    TREE: (0, 100, 0), SHRUB: (255, 187, 34), GRASS: (255, 255, 76), CROP: (240, 150, 255),
    BUILT: (250, 0, 0), BARE: (180, 180, 180), SNOW: (240, 240, 240), WATER: (0, 100, 200),
    WETLAND: (0, 150, 160), MANGROVE: (0, 207, 117), MOSS: (250, 230, 160),
}  # fmt: skip


@dataclass(frozen=True)
class Region:
    """Class-balance and spectral parameters of a region."""

    natural: dict[int, float]  # natural cover, driest first -> fraction of the map
    cultivated: float  # fraction of the map given to parcels (lowest ground first)
    parcels: dict[int, float]  # class mix of parcels
    town_area: float  # pixels of map per town
    lake_area: float  # pixels of map per lake
    river_max_elev: float  # rivers run below this elevation quantile
    spectra: dict[int, tuple[float, float, float, float]]  # mean reflectance R, G, B, NIR
    soil: tuple[float, float, float, float]  # bare soil of fallow / harvested parcels


# fmt: off
REGIONS: dict[str, Region] = {
    "temperate": Region(
        natural={BARE: 0.10, SHRUB: 0.17, GRASS: 0.30, TREE: 0.43},
        cultivated=0.36,
        parcels={CROP: 0.72, GRASS: 0.18, TREE: 0.05, SHRUB: 0.05},
        town_area=900.0**2, lake_area=1300.0**2, river_max_elev=0.75,
        spectra={
            TREE: (0.030, 0.050, 0.028, 0.300), SHRUB: (0.060, 0.075, 0.045, 0.240),
            GRASS: (0.055, 0.085, 0.045, 0.320), CROP: (0.070, 0.090, 0.050, 0.330),
            BUILT: (0.155, 0.145, 0.130, 0.190), BARE: (0.240, 0.200, 0.160, 0.290),
            SNOW: (0.820, 0.840, 0.860, 0.740), WATER: (0.030, 0.045, 0.055, 0.015),
            WETLAND: (0.045, 0.065, 0.040, 0.220), MANGROVE: (0.025, 0.045, 0.025, 0.260),
            MOSS: (0.090, 0.095, 0.070, 0.200),
        },
        soil=(0.160, 0.130, 0.100, 0.220),
    ),
    "arid": Region(  # drier, brighter vegetation and soil
        natural={BARE: 0.40, SHRUB: 0.33, GRASS: 0.21, TREE: 0.06},
        cultivated=0.20,
        parcels={CROP: 0.58, GRASS: 0.12, SHRUB: 0.15, BARE: 0.15},
        town_area=1100.0**2, lake_area=2000.0**2, river_max_elev=0.6,
        spectra={
            TREE: (0.045, 0.060, 0.038, 0.250), SHRUB: (0.110, 0.110, 0.080, 0.220),
            GRASS: (0.100, 0.110, 0.075, 0.240), CROP: (0.090, 0.100, 0.065, 0.280),
            BUILT: (0.180, 0.165, 0.145, 0.220), BARE: (0.310, 0.260, 0.200, 0.340),
            SNOW: (0.800, 0.820, 0.840, 0.720), WATER: (0.040, 0.060, 0.065, 0.020),
            WETLAND: (0.070, 0.085, 0.055, 0.210), MANGROVE: (0.035, 0.055, 0.030, 0.240),
            MOSS: (0.120, 0.115, 0.090, 0.210),
        },
        soil=(0.220, 0.180, 0.140, 0.270),
    ),
}
# fmt: on

#: Relative amplitude of the low-frequency brightness texture, per class.
TEXTURE = {
    TREE: 0.15, SHRUB: 0.15, GRASS: 0.15, CROP: 0.08, BUILT: 0.12, BARE: 0.15,
    SNOW: 0.04, WATER: 0.20, WETLAND: 0.15, MANGROVE: 0.10, MOSS: 0.12,
}  # fmt: skip
#: How far a parcel of the class may drift towards bare soil (fallow, harvested).
SOIL_MIX = {CROP: 0.85, GRASS: 0.25}
