"""The data contract between stages: where a dataset directory keeps what.

::

    DATASET/
      <split>/images/<id>.png          RGB 8-bit
      <split>/images_nir/<id>.tif      optional 4-band reflectance (x10000, uint16) GeoTIFF
      <split>/masks/<id>.png           palette PNG, values = class indices 0-6
      metadata.parquet                 one row per patch (columns: METADATA_COLUMNS)
      class_percentages/<split>.csv    filename, split, Tree, ..., Water (integer percent)
      captions/<split>.csv             class-percentage columns, then one column per stream
      config.yaml, manifest.json, <stage>.log   the run that made it

ARAS400k uses the same ``<split>/images`` / ``<split>/masks`` layout with RGB colour masks.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from groundsynth.classes import CLASS_NAMES

__all__ = [
    "CAPTION_STREAMS",
    "METADATA_COLUMNS",
    "PERCENT_COLUMNS",
    "SPLITS",
    "captions_csv",
    "image_path",
    "mask_path",
    "metadata_path",
    "metadata_schema",
    "nir_path",
    "percentages_csv",
]

#: Split names in their canonical order (ARAS400k adds "synth").
SPLITS: tuple[str, ...] = ("train", "val", "test")

#: The ARAS class-percentage table: these columns, in this order.
PERCENT_COLUMNS: tuple[str, ...] = ("filename", "split", *CLASS_NAMES)

#: The five caption streams of ARAS400k, in its column order.
CAPTION_STREAMS: tuple[str, ...] = (
    "hybrid_gemma3-4b",
    "hybrid_qwen3-vl-8b",
    "text_qwen3-4b",
    "vision_gemma3-4b",
    "vision_qwen3-vl-8b",
)

#: Columns of ``metadata.parquet`` (class fractions are ``frac_<name>`` floats in 0..1).
METADATA_COLUMNS: tuple[str, ...] = (
    "id",
    "split",
    "source",  # imagery source name (file stem or product name)
    "landcover",  # land-cover tile(s) read, ';'-joined file names
    "row",  # patch row in the source's patch grid
    "col",  # patch column in the source's patch grid
    "crs",  # CRS of the patch grid (WKT or EPSG:xxxx)
    "transform",  # affine of the patch, 6 numbers (a, b, c, d, e, f)
    "minx",
    "miny",
    "maxx",
    "maxy",  # bounds in ``crs``
    "lon",
    "lat",  # centre in WGS84 degrees
    *(f"frac_{n}" for n in CLASS_NAMES),
    "scaling",  # radiometric scaling used for the 8-bit image (and its parameters)
    "origin",  # "real" or the generator's name
)


def metadata_schema(extra: Mapping[str, Any] | None = None) -> Any:
    """The pyarrow schema of ``metadata.parquet``: :data:`METADATA_COLUMNS` with their types,
    then ``extra`` columns (name -> pyarrow type) that a stage adds (e.g. ``confidence``)."""
    import pyarrow as pa

    types = {
        "row": pa.int32(),
        "col": pa.int32(),
        "transform": pa.list_(pa.float64()),
        **{c: pa.float64() for c in ("minx", "miny", "maxx", "maxy", "lon", "lat")},
        **{f"frac_{n}": pa.float64() for n in CLASS_NAMES},
    }
    fields = [(c, types.get(c, pa.string())) for c in METADATA_COLUMNS]
    return pa.schema(fields + list((extra or {}).items()))


def image_path(root: Path, split: str, sample_id: str) -> Path:
    return Path(root) / split / "images" / f"{sample_id}.png"


def mask_path(root: Path, split: str, sample_id: str) -> Path:
    return Path(root) / split / "masks" / f"{sample_id}.png"


def nir_path(root: Path, split: str, sample_id: str) -> Path:
    return Path(root) / split / "images_nir" / f"{sample_id}.tif"


def metadata_path(root: Path) -> Path:
    return Path(root) / "metadata.parquet"


def percentages_csv(root: Path, split: str) -> Path:
    return Path(root) / "class_percentages" / f"{split}.csv"


def captions_csv(root: Path, split: str) -> Path:
    return Path(root) / "captions" / f"{split}.csv"
