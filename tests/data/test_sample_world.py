"""Tests of the sample world: grids, dtypes, codes, structure, determinism and spectra."""

from __future__ import annotations

import numpy as np
import pytest
import rasterio
from rasterio.warp import transform as warp_transform

from groundsynth.classes import WORLDCOVER_CODES
from groundsynth.data.sample_world import (
    IMAGERY_BANDS,
    PIXEL_DEGREES,
    SampleWorld,
    SampleWorldConfig,
    make_landcover,
    make_sample_world,
)

VEGETATION = (10, 20, 30, 40)
RED, GREEN, BLUE, NIR = range(4)


def _read(world: SampleWorld) -> tuple[np.ndarray, np.ndarray]:
    with rasterio.open(world.landcover) as lc, rasterio.open(world.imagery) as im:
        return lc.read(1), im.read()


def _codes_under_imagery(world: SampleWorld) -> tuple[np.ndarray, np.ndarray]:
    """For each imagery pixel: the land-cover code at its centre, and whether it is inside."""
    with rasterio.open(world.landcover) as lc, rasterio.open(world.imagery) as im:
        rows, cols = np.mgrid[0 : im.height, 0 : im.width]
        xs, ys = rasterio.transform.xy(im.transform, rows.ravel(), cols.ravel())
        lon, lat = warp_transform(im.crs, lc.crs, xs, ys)
        r, c = rasterio.transform.rowcol(lc.transform, lon, lat)
        r, c = np.asarray(r), np.asarray(c)
        inside = (r >= 0) & (r < lc.height) & (c >= 0) & (c < lc.width)
        codes = np.zeros(r.shape, dtype=np.uint8)
        codes[inside] = lc.read(1)[r[inside], c[inside]]
        return codes.reshape(rows.shape), inside.reshape(rows.shape)


def test_landcover_grid_and_format(sample_world_512: SampleWorld) -> None:
    assert sample_world_512.landcover.name == "landcover.tif"
    with rasterio.open(sample_world_512.landcover) as src:
        assert src.crs.to_epsg() == 4326
        assert (src.width, src.height, src.count) == (512, 512, 1)
        assert src.dtypes == ("uint8",)
        assert src.nodata == 0
        assert src.res == pytest.approx((PIXEL_DEGREES, PIXEL_DEGREES))
        assert (src.transform.c, src.transform.f) == pytest.approx((33.0, 40.0))
        assert src.profile["tiled"] and src.compression.value.lower() == "deflate"
        assert src.tags()["seed"] == "0"


def test_imagery_grid_and_format(sample_world_512: SampleWorld) -> None:
    assert sample_world_512.imagery.name == "sentinel2.tif"
    with rasterio.open(sample_world_512.imagery) as src:
        assert src.crs.to_epsg() == 32636  # UTM 36N holds 33.0-33.04 E
        assert src.res == (10.0, 10.0)
        assert src.count == 4 and src.dtypes == ("uint16",) * 4
        assert src.descriptions == IMAGERY_BANDS == ("red", "green", "blue", "nir")
        assert src.nodata == 0
        assert src.profile["tiled"] and src.compression.value.lower() == "deflate"
        # ~7.1 m x 9.3 m map pixels at 40 N: the footprint is ~364 x 474 pixels of 10 m.
        assert 340 <= src.width <= 390 and 450 <= src.height <= 500
        image = src.read()
    assert image.max() <= 10000
    assert image.min() == 0  # corners outside the map and the nodata strip


def test_all_codes_present_with_nodata_border(sample_world_512: SampleWorld) -> None:
    lc, _ = _read(sample_world_512)
    assert set(np.unique(lc).tolist()) == {0, *WORLDCOVER_CODES}
    nodata = lc == 0
    assert 0.005 < nodata.mean() < 0.15
    centre = slice(128, 384)
    assert not nodata[centre, centre].any()  # a strip along the edges, not holes
    edges = [nodata[0], nodata[-1], nodata[:, 0], nodata[:, -1]]
    assert any(edge.mean() > 0.9 for edge in edges)
    # Irregular: the strip's width varies along the edge.
    widths = [
        nodata[:64].sum(0),
        nodata[-64:].sum(0),
        nodata[:, :64].sum(1),
        nodata[:, -64:].sum(1),
    ]
    assert max(np.ptp(w) for w in widths if w.mean() > 1) >= 2


@pytest.mark.parametrize("region", ["temperate", "arid"])
@pytest.mark.parametrize("seed", [1, 2])
def test_rare_codes_present_in_small_worlds(region: str, seed: int) -> None:
    codes, _ = make_landcover(SampleWorldConfig(size=512, seed=seed, region=region))
    assert set(np.unique(codes).tolist()) == {0, *WORLDCOVER_CODES}


def test_spatially_coherent(sample_world_512: SampleWorld) -> None:
    lc, _ = _read(sample_world_512)
    assert (lc[:, 1:] == lc[:, :-1]).mean() > 0.8
    assert (lc[1:] == lc[:-1]).mean() > 0.8


def test_patches_varied_and_water_does_not_dominate() -> None:
    codes, _ = make_landcover(SampleWorldConfig(size=1024, seed=3))
    patches = codes.reshape(4, 256, 4, 256).swapaxes(1, 2).reshape(16, -1)
    water = (patches == 80).mean(axis=1)
    assert (water <= 0.9).mean() >= 0.9
    dominant = {int(np.bincount(p[p > 0]).argmax()) for p in patches if (p > 0).any()}
    assert len(dominant) >= 3


def test_deterministic_by_seed(tmp_path, sample_world_512: SampleWorld) -> None:
    again = make_sample_world(tmp_path / "again", SampleWorldConfig(size=512))
    lc_a, im_a = _read(sample_world_512)
    lc_b, im_b = _read(again)
    assert np.array_equal(lc_a, lc_b) and np.array_equal(im_a, im_b)
    other, _ = make_landcover(SampleWorldConfig(size=512, seed=1))
    assert (other != lc_a).mean() > 0.2


def test_arid_has_more_barren_and_shrub_than_temperate() -> None:
    def fractions(region: str) -> dict[int, float]:
        codes, _ = make_landcover(SampleWorldConfig(size=512, seed=4, region=region))
        valid = codes[codes > 0]
        return {c: float((valid == c).mean()) for c in (10, 20, 40, 60)}

    temperate, arid = fractions("temperate"), fractions("arid")
    assert arid[60] + arid[20] > temperate[60] + temperate[20] + 0.2
    assert arid[10] + arid[40] < temperate[10] + temperate[40] - 0.2


def test_imagery_zero_outside_map_and_where_nodata(sample_world_512: SampleWorld) -> None:
    _, image = _read(sample_world_512)
    codes, inside = _codes_under_imagery(sample_world_512)
    assert not inside.all()  # the UTM grid sticks out past the map's corners
    assert (image[:, ~inside] == 0).all()
    assert (image[:, codes == 0] == 0).mean() > 0.99  # nearest pixel may differ on edges
    assert (image[:, codes > 0] > 0).mean() > 0.99


def test_imagery_spectra_follow_classes(sample_world_512: SampleWorld) -> None:
    _, image = _read(sample_world_512)
    codes, _ = _codes_under_imagery(sample_world_512)
    refl = image.astype(np.float64) / 10000.0
    vegetation = np.isin(codes, VEGETATION)
    assert refl[NIR][vegetation].mean() > 3 * refl[RED][vegetation].mean()
    assert refl[NIR][vegetation].mean() > 0.2
    water = codes == 80
    assert refl[NIR][water].mean() < 0.05 < refl[NIR][vegetation].mean()
    assert refl[RED][codes == 70].mean() > 0.6  # snow
    assert 0.2 < refl[RED][codes == 60].mean() < 0.35  # bare
    built = refl[:3][:, codes == 50].mean(axis=1)
    assert np.all((built > 0.1) & (built < 0.2)) and np.ptp(built) < 0.05  # greyish


def test_arid_spectra_are_drier(tmp_path) -> None:
    world = make_sample_world(tmp_path, SampleWorldConfig(size=256, region="arid", seed=2))
    _, image = _read(world)
    codes, _ = _codes_under_imagery(world)
    red = image[RED][np.isin(codes, (20, 30))].mean()
    assert red > 0.08 * 10000  # temperate shrub/grass red ~0.055-0.06


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"size": 32}, "size must be an integer >= 64"),
        ({"size": 100.0}, "size must be an integer"),
        ({"seed": -1}, "seed must be a non-negative integer"),
        ({"region": "polar"}, "valid regions: temperate, arid"),
        ({"lon": 180.0}, "lon"),
        ({"lat": 89.0}, "UTM range"),
        ({"nodata_fraction": 0.0}, "nodata_fraction"),
    ],
)
def test_config_validation(kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        SampleWorldConfig(**kwargs)
