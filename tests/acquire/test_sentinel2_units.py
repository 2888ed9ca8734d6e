"""Parts of groundsynth.acquire.sentinel2 that need no server: band and asset resolution,
radiometry rules, argument checks, the output grid and the median composite."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import rasterio

from groundsynth.acquire.s2_assets import (
    check_bands,
    find_asset,
    normalise_band,
    processing_baseline,
    radiometry,
)
from groundsynth.acquire.s2_composite import median_composite
from groundsynth.acquire.s2_grid import Grid, output_grid, output_profile, utm_epsg
from groundsynth.acquire.sentinel2 import Sentinel2Config, _to_dn
from groundsynth.acquire.stac_search import parse_bbox, parse_dates
from groundsynth.errors import InputError

TIF = "image/tiff; application=geotiff; profile=cloud-optimized"


def _asset(href: str, name: str | None = None, common: str | None = None, **raster: Any):
    a: dict[str, Any] = {"href": href, "type": TIF}
    if name:
        a["eo:bands"] = [{"name": name, "common_name": common or name}]
    if raster:
        a["raster:bands"] = [raster]
    return a


def _item(assets: dict[str, Any], **props: Any) -> dict[str, Any]:
    return {
        "id": "S2X",
        "properties": {"datetime": "2020-02-19T11:34:25Z", **props},
        "assets": assets,
    }


# --------------------------------------------------------------------------- bands, assets
@pytest.mark.parametrize(
    ("given", "want"),
    [("B4", "B04"), ("b04", "B04"), ("red", "B04"), ("NIR", "B08"), ("b8a", "B8A"), ("nir08", "B8A"),
     ("scl", "SCL"), ("B12", "B12"), ("swir16", "B11")],
)  # fmt: skip
def test_band_names(given, want):
    assert normalise_band(given) == want


def test_unknown_band_and_scl_as_output_are_refused():
    with pytest.raises(InputError, match="unknown Sentinel-2 band 'B13'"):
        normalise_band("B13")
    with pytest.raises(InputError, match="SCL is a mask"):
        check_bands(["B04", "SCL"])
    assert check_bands(["red", "B04", "B3"]) == ("B04", "B03")


def test_assets_found_by_v1_key_v0_key_and_eo_bands():
    v1 = _item(
        {
            "red": _asset("https://x/B04.tif", "red", scale=0.0001, offset=0),
            "red-jp2": {"href": "s3://x/B04.jp2", "type": "image/jp2"},
            "visual": _asset("https://x/TCI.tif") | {"eo:bands": [{"name": "red"}, {"name": "g"}]},
            "scl": _asset("https://x/SCL.tif"),
        }
    )
    a = find_asset(v1, "B04")
    assert (a.key, a.href, a.raster["scale"]) == ("red", "https://x/B04.tif", 0.0001)
    assert find_asset(v1, "scl").key == "scl"
    v0 = _item({"B04": _asset("https://x/B04.tif", "B04", "red"), "SCL": _asset("https://x/S.tif")})
    assert find_asset(v0, "red").key == "B04" and find_asset(v0, "SCL").key == "SCL"
    odd = _item({"band_4": _asset("https://x/b4.tif", "B4", "red")})
    assert find_asset(odd, "B04").key == "band_4"  # by eo:bands common name
    with pytest.raises(InputError, match=r"no GeoTIFF asset for band B08.*\['red', 'red-jp2'"):
        find_asset(v1, "nir")


# --------------------------------------------------------------------------- radiometry
def test_radiometry_rules():
    plain = _asset("https://x/B04.tif", "red", scale=0.0001, offset=0)
    minus = _asset("https://x/B04.tif", "red", scale=0.0001, offset=-0.1)
    old = radiometry(
        _item({"red": plain}, **{"s2:processing_baseline": "02.14"}),
        find_asset(_item({"red": plain}), "B04"),
    )
    assert (old.offset, old.offset_source, old.baseline) == (0.0, "none", "02.14")

    def rad(asset, **props):
        it = _item({"red": asset}, **props)
        return radiometry(it, find_asset(it, "B04"))

    new = rad(plain, **{"s2:processing_baseline": "04.00"})
    assert new.offset == pytest.approx(-0.1) and new.offset_source == "processing baseline"
    assert rad(minus, **{"s2:processing_baseline": "04.00"}).offset_source == "raster:bands"
    applied = rad(
        minus, **{"s2:processing_baseline": "04.00", "earthsearch:boa_offset_applied": True}
    )
    assert (applied.offset, applied.offset_source) == (0.0, "already applied")
    v0 = rad(
        plain, **{"sentinel:processing_baseline": "04.00", "sentinel:boa_offset_applied": True}
    )
    assert v0.offset == 0.0
    by_name = rad(plain, **{"s2:product_uri": "S2B_MSIL2A_20220126T112119_N0400_R037_T29RKH.SAFE"})
    assert by_name.baseline == "04.00" and by_name.baseline_source == "product name"
    by_date = rad(plain, datetime="2022-06-01T10:00:00Z")
    assert by_date.offset == pytest.approx(-0.1)
    assert by_date.baseline_source == "acquisition date (assumed)"
    assert processing_baseline(_item({}))[0] is None
    # DN -> reflectance x 10000: the offset removed, nodata kept 0, dark pixels kept valid (1)
    dn = np.array([0, 1, 900, 1000, 1001, 5000], dtype=np.float64)
    np.testing.assert_array_equal(_to_dn(dn, new), [0, 1, 1, 1, 1, 4000])
    np.testing.assert_array_equal(_to_dn(dn, old), [0, 1, 900, 1000, 1001, 5000])


# --------------------------------------------------------------------------- arguments
@pytest.mark.parametrize(
    ("bbox", "match"),
    [("1,2,3", "four"), ("a,b,c,d", "four numbers"), ("10,40,9,41", "W < E"),
     ("170,40,190,41", "antimeridian"), ("10,41,11,40", "S < N"), ("10,85,11,86", "UTM"),
     ("0,0,10,1", "larger than 6")],
)  # fmt: skip
def test_bad_bbox(bbox, match):
    with pytest.raises(InputError, match=match):
        parse_bbox(bbox)


def test_dates():
    assert parse_dates("2021-06-01/2021-08-31") == (
        "2021-06-01T00:00:00.000Z",
        "2021-08-31T23:59:59.999Z",
    )
    assert parse_dates("2021-06-01T10:00:00+02:00/2021-06-02")[0] == "2021-06-01T08:00:00.000Z"
    for bad, match in [("2021-06-01", "START/END"), ("2021-06-01/..", "ISO date"),
                       ("2021-13-01/2021-12-01", "ISO date"), ("2021-06-02/2021-06-01", "before")]:  # fmt: skip
        with pytest.raises(InputError, match=match):
            parse_dates(bad)


@pytest.mark.parametrize(
    ("kw", "match"),
    [({"max_cloud": 0}, "max-cloud"), ({"max_cloud": 101}, "max-cloud"),
     ({"resolution": -10}, "resolution"), ({"composite": "mean"}, "composite"),
     ({"bands": ("B04", "B99")}, "B99"), ({"max_items": 0}, "max-items"),
     ({"stac_url": "ftp://x"}, "stac-url"), ({"resampling": "cubic"}, "resampling")],
)  # fmt: skip
def test_bad_options(kw, match, tmp_path):
    with pytest.raises(InputError, match=match):
        Sentinel2Config(
            bbox=(33, 39.9, 33.05, 39.95), dates="2021-06-01/2021-06-30", out=str(tmp_path), **kw
        )
    assert not any(tmp_path.iterdir())


# --------------------------------------------------------------------------- grid
def test_output_grid_is_the_centres_utm_zone_snapped_to_the_resolution():
    assert utm_epsg(-11.2, 25.1) == 32629 and utm_epsg(151.2, -33.9) == 32756
    g = output_grid((32.80, 39.85, 32.90, 39.95), 10)
    assert g.crs == "EPSG:32636" and g.transform[0] == 10 and g.transform[4] == -10
    assert g.transform[2] % 10 == 0 and g.transform[5] % 10 == 0
    assert 850 < g.width < 900 and 1100 < g.height < 1130
    with pytest.raises(InputError, match="more than 40000"):
        output_grid((30.0, 39.0, 35.0, 44.0), 10)


# --------------------------------------------------------------------------- median
def _write(path: Path, grid: Grid, data: np.ndarray, dtype: str = "uint16") -> Path:
    data = np.asarray(data, dtype=dtype).reshape(-1, grid.height, grid.width)
    with rasterio.open(path, "w", **output_profile(grid, data.shape[0], dtype)) as dst:
        dst.write(data)
    return path


@pytest.mark.parametrize("memory", [1, 256 << 20])  # one row per block, or one block
def test_median_by_hand(tmp_path, memory):
    grid = Grid("EPSG:32636", (10.0, 0.0, 500000.0, 0.0, -10.0, 4400000.0), 3, 2)
    # one band, three scenes, 2 x 3 pixels
    vals = [[[10, 20, 30], [40, 50, 0]], [[12, 22, 32], [42, 52, 62]], [[14, 24, 35], [44, 54, 64]]]
    scls = [[[4, 4, 4], [9, 4, 4]], [[4, 8, 4], [3, 10, 4]], [[4, 11, 4], [0, 1, 4]]]
    scenes = []
    for k, (v, s) in enumerate(zip(vals, scls)):
        b = _write(tmp_path / f"b{k}.tif", grid, v)
        c = _write(tmp_path / f"s{k}.tif", grid, s, "uint8")
        scenes.append((f"s{k}", b, c))
    stats = median_composite(scenes, tmp_path / "m.tif", grid, ["B04"], memory=memory)
    with rasterio.open(tmp_path / "m.tif") as ds:
        got = ds.read(1)
        assert ds.nodata == 0 and ds.descriptions == ("red",)
    # (0,0): 10,12,14 -> 12; (0,1): 20, [22 cloud], 24 (snow kept) -> 22; (0,2): 30,32,35 -> 32
    # (1,0): all masked -> 0; (1,1): 50 only -> 50; (1,2): [0 nodata], 62, 64 -> 63
    np.testing.assert_array_equal(got, [[12, 22, 32], [0, 50, 63]])
    assert stats.pixels == 6 and stats.pixels_without_clear == 1
    assert stats.clear_per_scene == {"s0": 4, "s1": 3, "s2": 4}
    assert stats.masked_per_scene == {"s0": 1, "s1": 3, "s2": 2}
