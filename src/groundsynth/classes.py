"""The one class schema of groundsynth.

Seven land-cover classes merged from the eleven ESA WorldCover codes, with the colours of the
ARAS400k released masks. Every stage imports its names, codes and colours from here.

>>> CLASS_NAMES[3], COLOURS[3].tolist()
('Crop', [255, 215, 0])
>>> remap_worldcover(np.array([[10, 95], [0, 80]], dtype=np.uint8)).tolist()
[[0, 0], [255, 6]]
"""

from __future__ import annotations

import numpy as np

__all__ = [
    "CLASS_NAMES",
    "COLOURS",
    "IGNORE_INDEX",
    "NUM_CLASSES",
    "PALETTE",
    "WATER",
    "WORLDCOVER_CODES",
    "WORLDCOVER_NODATA",
    "WORLDCOVER_TO_CLASS",
    "class_index",
    "remap_worldcover",
    "worldcover_lut",
]

#: Class names in index order (the column order of the ARAS tables).
CLASS_NAMES: tuple[str, ...] = ("Tree", "Shrub", "Grass", "Crop", "Built-up", "Barren", "Water")
NUM_CLASSES: int = len(CLASS_NAMES)
WATER: int = CLASS_NAMES.index("Water")

#: Value used for "no class" (nodata, unknown code) in index masks held in memory.
#: It is never written to a dataset: patches holding it are skipped by the builder.
IGNORE_INDEX: int = 255

#: RGB colours of the ARAS400k masks, one row per class index.
COLOURS: np.ndarray = np.array(
    [
        (0, 100, 0),  # Tree
        (255, 182, 193),  # Shrub
        (154, 205, 50),  # Grass
        (255, 215, 0),  # Crop
        (139, 69, 19),  # Built-up
        (211, 211, 211),  # Barren
        (0, 0, 255),  # Water
    ],
    dtype=np.uint8,
)
COLOURS.setflags(write=False)

#: ESA WorldCover code (v100/v200) -> class index. Code 0 is nodata.
WORLDCOVER_TO_CLASS: dict[int, int] = {
    10: 0,  # tree cover
    95: 0,  # mangroves
    20: 1,  # shrubland
    30: 2,  # grassland
    90: 2,  # herbaceous wetland
    100: 2,  # moss and lichen
    40: 3,  # cropland
    50: 4,  # built-up
    60: 5,  # bare / sparse vegetation
    70: 5,  # snow and ice
    80: 6,  # permanent water bodies
}
WORLDCOVER_CODES: tuple[int, ...] = tuple(sorted(WORLDCOVER_TO_CLASS))
WORLDCOVER_NODATA: int = 0

#: Flat 768-entry palette for PIL "P" images: class colours, then black.
PALETTE: list[int] = COLOURS.reshape(-1).tolist() + [0] * (768 - COLOURS.size)


def worldcover_lut() -> np.ndarray:
    """Return a 256-entry uint8 lookup table from WorldCover code to class index.

    Nodata (0) and codes that are not WorldCover classes map to :data:`IGNORE_INDEX`.
    """
    lut = np.full(256, IGNORE_INDEX, dtype=np.uint8)
    for code, idx in WORLDCOVER_TO_CLASS.items():
        lut[code] = idx
    return lut


_LUT = worldcover_lut()


def remap_worldcover(codes: np.ndarray) -> np.ndarray:
    """Map an array of WorldCover codes to class indices (nodata/unknown -> IGNORE_INDEX)."""
    codes = np.asarray(codes)
    if codes.dtype != np.uint8:
        if codes.size and (codes.min() < 0 or codes.max() > 255):
            # Out-of-range values cannot be WorldCover codes.
            out = np.full(codes.shape, IGNORE_INDEX, dtype=np.uint8)
            ok = (codes >= 0) & (codes <= 255)
            out[ok] = _LUT[codes[ok].astype(np.uint8)]
            return out
        codes = codes.astype(np.uint8)
    return _LUT[codes]


def class_index(name: str) -> int:
    """Return the index of a class by name (case-insensitive; 'builtup'/'built up' accepted)."""
    key = name.strip().lower().replace(" ", "-").replace("_", "-")
    for i, n in enumerate(CLASS_NAMES):
        if n.lower() == key or n.lower().replace("-", "") == key.replace("-", ""):
            return i
    raise ValueError(f"unknown class {name!r}; valid classes: {', '.join(CLASS_NAMES)}")
