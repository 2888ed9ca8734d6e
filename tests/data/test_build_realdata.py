"""Builds on real data from ../shared/data (skipped when it is absent)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import rasterio
from PIL import Image
from rasterio.windows import Window

from groundsynth.classes import CLASS_NAMES
from groundsynth.data.build import BuildConfig, build_dataset
from groundsynth.data.masks import read_mask
from groundsynth.errors import InputError
from tests.data.rasters import write_imagery, write_landcover

pytestmark = pytest.mark.realdata

WC = "worldcover/ESA_WorldCover_10m_2020_v100_N00E006_Map.tif"
#: A 1536² window at São Tomé's north-east coast: town, forest, grass, sea, wetland, mangrove.
ROW, COL, SIDE = 31200, 8000, 1536
#: WorldCover code -> class index, written out independently of groundsynth.classes.
REMAP = {10: 0, 95: 0, 20: 1, 30: 2, 90: 2, 100: 2, 40: 3, 50: 4, 60: 5, 70: 5, 80: 6}


def _largest_remainder(counts: np.ndarray) -> list[int]:
    pct = counts / counts.sum() * 100
    out = np.floor(pct).astype(int)
    order = sorted(range(len(pct)), key=lambda i: (-(pct[i] - out[i]), i))
    for i in order[: 100 - out.sum()]:
        out[i] += 1
    return out.tolist()


def test_real_worldcover_tile_patches_match_numpy(shared_data, tmp_path):
    tile = shared_data / WC
    with rasterio.open(tile) as ds:
        codes = ds.read(1, window=Window(COL, ROW, SIDE, SIDE))
        transform = ds.window_transform(Window(COL, ROW, SIDE, SIDE))
        crs = ds.crs
    # imagery on part of the tile's own grid (EPSG:4326, 1/12000 degree)
    rng = np.random.default_rng(0)
    img = write_imagery(
        tmp_path / "s2.tif", rng.integers(1, 3000, (4, SIDE, SIDE), dtype=np.uint16),
        transform, crs=crs.to_string(),
    )  # fmt: skip
    result = build_dataset(
        BuildConfig(imagery=(str(img),), landcover=(str(tile),), out=str(tmp_path / "ds"), size=256)
    )
    # independent expectation
    expected = {}
    skipped = {"water": 0, "label_nodata": 0}
    for r in range(SIDE // 256):
        for c in range(SIDE // 256):
            block = codes[r * 256 : (r + 1) * 256, c * 256 : (c + 1) * 256]
            if (block == 0).any():
                skipped["label_nodata"] += 1
                continue
            classes = np.vectorize(REMAP.get)(block)
            counts = np.bincount(classes.ravel(), minlength=7)
            if counts[6] / counts.sum() > 0.9:
                skipped["water"] += 1
                continue
            expected[(r, c)] = (classes, _largest_remainder(counts))
    assert sum(result.counts.values()) == len(expected) == 21
    assert result.skipped.get("water", 0) == skipped["water"] == 15
    md = pd.read_parquet(result.out / "metadata.parquet")
    tables = pd.concat(
        [pd.read_csv(result.out / "class_percentages" / f"{s}.csv") for s in result.counts]
    ).set_index("filename")
    for _, row in md.iterrows():
        classes, pct = expected[(row["row"], row["col"])]
        mask = read_mask(result.out / row["split"] / "masks" / f"{row['id']}.png")
        np.testing.assert_array_equal(mask, classes)
        assert tables.loc[f"{row['id']}.png", list(CLASS_NAMES)].tolist() == pct
    assert set(md["landcover"]) == {Path(WC).name}
    lat = 3 - (ROW + md["row"] * 256 + 128) / 12000  # the tile's top edge is 3 N, west edge 6 E
    lon = 6 + (COL + md["col"] * 256 + 128) / 12000
    np.testing.assert_allclose(md["lat"], lat, atol=1e-9)
    np.testing.assert_allclose(md["lon"], lon, atol=1e-9)


def test_real_bigearthnet_band_files_as_imagery(shared_data, tmp_path):
    root = shared_data / "sentinel2" / "bigearthnet-mini" / "BigEarthNet-v1.0"
    products = sorted(p for p in root.iterdir() if p.is_dir())
    # land cover over their footprint (Ireland), in EPSG:4326
    bounds = []
    for p in products:
        with rasterio.open(next(p.glob("*_B04.tif"))) as ds:
            bounds.append(rasterio.warp.transform_bounds(ds.crs, "EPSG:4326", *ds.bounds))
    west, south = min(b[0] for b in bounds) - 0.01, min(b[1] for b in bounds) - 0.01
    east, north = max(b[2] for b in bounds) + 0.01, max(b[3] for b in bounds) + 0.01
    n_rows, n_cols = int((north - south) * 12000), int((east - west) * 12000)
    lc = write_landcover(
        tmp_path / "lc.tif", np.full((n_rows, n_cols), 30, np.uint8), lon=west, lat=north
    )
    cfg = BuildConfig(
        imagery=(str(root),), landcover=(str(lc),), out=str(tmp_path / "ds"), size=64,
        bands=("B04", "B03", "B02", "B8A"), keep_nir=True,
    )  # fmt: skip
    result = build_dataset(cfg)
    md = pd.read_parquet(result.out / "metadata.parquet")
    assert sorted(md["source"]) == sorted(p.name for p in products)  # one patch per 120² product
    r = md.iloc[0]
    product = root / r["source"]
    with rasterio.open(next(product.glob("*_B04.tif"))) as ds:
        red = ds.read(1, window=Window(0, 0, 64, 64)).astype(np.float64)
    image = np.asarray(Image.open(result.out / r["split"] / "images" / f"{r['id']}.png"))
    expected = np.clip(np.rint(red / 10000 * 255 / 0.3), 0, 255)
    assert np.abs(image[..., 0] - expected).max() <= 1
    with rasterio.open(result.out / r["split"] / "images_nir" / f"{r['id']}.tif") as ds:
        assert ds.count == 4 and ds.crs.to_epsg() == 32629
        nir = ds.read(4)
    assert nir.shape == (64, 64) and nir.mean() > 0  # the 20 m B8A, resampled onto 10 m


def test_real_ssl4eo_dates_as_sources(shared_data, tmp_path):
    ssl = shared_data / "sentinel2" / "ssl4eo-s12" / "s2a"
    with rasterio.open(next(ssl.rglob("B4.tif"))) as ds:
        b = rasterio.warp.transform_bounds(ds.crs, "EPSG:4326", *ds.bounds)
    n_rows = int((b[3] - b[1]) * 12000) + 40
    n_cols = int((b[2] - b[0]) * 12000) + 40
    codes = np.full((n_rows, n_cols), 40, np.uint8)
    lc = write_landcover(tmp_path / "lc.tif", codes, lon=b[0] - 0.001, lat=b[3] + 0.001)
    cfg = BuildConfig(imagery=(str(ssl),), landcover=(str(lc),), out=str(tmp_path / "ds"), size=64)
    result = build_dataset(cfg)
    md = pd.read_parquet(result.out / "metadata.parquet")
    # four dates, one folder each with B4.tif-style names: four sources named by folder
    assert md["source"].nunique() == 4
    assert all(s.endswith("_T33TYN") for s in md["source"].unique())
    assert (md["frac_Crop"] == 1.0).all()


def test_real_dfc2020_patch_without_georeferencing_is_refused(shared_data, tmp_path):
    dfc = next((shared_data / "sentinel2" / "dfc2020").rglob("s2_*/*.tif"))
    lc = write_landcover(tmp_path / "lc.tif", np.full((64, 64), 30, np.uint8))
    cfg = BuildConfig(imagery=(str(dfc),), landcover=(str(lc),), out=str(tmp_path / "ds"), size=64)
    with pytest.raises(InputError, match=f"{dfc.name}: has no georeferencing"):
        build_dataset(cfg)
    assert not (tmp_path / "ds").exists()
