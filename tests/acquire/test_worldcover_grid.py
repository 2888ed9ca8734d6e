"""The WorldCover grid, tile names, URLs and area parsing (no network)."""

from __future__ import annotations

import json

import pytest

from groundsynth.acquire.area import bbox_from_geojson, parse_bbox, resolve_area
from groundsynth.acquire.tiles import (
    MAP,
    S2RGBNIR,
    GridWindow,
    area_window,
    check_year,
    tile_name,
    tile_windows,
)
from groundsynth.errors import InputError


def test_tile_names_are_the_lower_left_corner():
    assert tile_name(0, 6) == "N00E006"
    assert tile_name(-3, -3) == "S03W003"
    assert tile_name(57, -180) == "N57W180"
    assert tile_name(-60, 177) == "S60E177"


def test_urls_follow_the_public_bucket_layout():
    base = "https://esa-worldcover.s3.eu-central-1.amazonaws.com"
    assert MAP.url(base, 2020, "N00E006") == (
        f"{base}/v100/2020/map/ESA_WorldCover_10m_2020_v100_N00E006_Map.tif"
    )
    assert MAP.url(base + "/", 2021, "S03W063") == (
        f"{base}/v200/2021/map/ESA_WorldCover_10m_2021_v200_S03W063_Map.tif"
    )
    s2 = "https://esa-worldcover-s2.s3.eu-central-1.amazonaws.com"
    assert S2RGBNIR.url(s2, 2021, "N47W121") == (
        f"{s2}/rgbnir/2021/N47/ESA_WorldCover_10m_2021_v200_N47W121_S2RGBNIR.tif"
    )
    assert S2RGBNIR.url(s2, 2020, "S01E006") == (
        f"{s2}/rgbnir/2020/S01/ESA_WorldCover_10m_2020_v100_S01E006_S2RGBNIR.tif"
    )


def test_year_must_be_published():
    assert check_year(2020) == "v100" and check_year(2021) == "v200"
    with pytest.raises(InputError, match="2020, 2021.*2019"):
        check_year(2019)


def test_area_window_snaps_outwards_to_the_grid():
    w = area_window((6.5, 0.2, 6.75, 0.4))
    assert (w.col, w.row, w.width, w.height) == (186 * 12000 + 6000, 89 * 12000 + 7200, 3000, 2400)
    assert w.bounds == pytest.approx((6.5, 0.2, 6.75, 0.4))
    # a box not on pixel edges gets the pixels it touches
    w = area_window((6.50001, 0.2, 6.5001, 0.20001))
    assert (w.width, w.height) == (2, 1)


def test_tiles_of_an_area_across_tile_corners():
    area = area_window((5.99, 2.99, 6.01, 3.01))
    maps = tile_windows(MAP, area)
    assert [t.tile for t in maps] == ["N03E003", "N03E006", "N00E003", "N00E006"]
    assert sum(t.grid.pixels for t in maps) == area.pixels
    s2 = tile_windows(S2RGBNIR, area)
    assert [t.tile for t in s2] == ["N03E005", "N03E006", "N02E005", "N02E006"]
    # N00E006 (map) needs its top-left corner: 120 x 120 pixels from (0, 0)
    local = maps[3].local
    assert (local.col, local.row, local.width, local.height) == (0, 0, 120, 120)
    # an area on a tile edge does not touch the next tile
    assert [t.tile for t in tile_windows(MAP, area_window((6.0, 0.0, 9.0, 3.0)))] == ["N00E006"]
    assert [t.tile for t in tile_windows(MAP, area_window((-3.0, -3.0, -2.9, -2.9)))] == ["S03W003"]


def test_chunks_fall_on_tile_local_multiples_and_cover_the_window():
    tw = tile_windows(MAP, area_window((6.1, 0.5, 6.2, 0.6)))[0]
    chunks = list(tw.chunks(1024))
    assert sum(c.pixels for c in chunks) == tw.grid.pixels
    for c in chunks:
        local = GridWindow(c.col - tw.tile_grid.col, c.row - tw.tile_grid.row, c.width, c.height)
        assert local.col // 1024 == (local.col + local.width - 1) // 1024
        assert local.row // 1024 == (local.row + local.height - 1) // 1024


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("6.75,0.2,6.5,0.4", "west .* less than east"),
        ("6.5,0.4,6.75,0.2", "south .* less than north"),
        ("6.5,0.2,6.75", "4 numbers"),
        ("a,b,c,d", "not four numbers"),
        ("190,0,191,1", "longitudes"),
        ("0.2,6.5,0.4,95", "latitudes"),
        ("nan,0,1,1", "finite"),
    ],
)
def test_invalid_bbox_is_an_input_error(text, message):
    with pytest.raises(InputError, match=message):
        parse_bbox(text)


def test_geojson_bbox_and_crs(tmp_path):
    fc = {
        "type": "FeatureCollection",
        "features": [
            {
                "type": "Feature",
                "properties": {},
                "geometry": {
                    "type": "Polygon",
                    "coordinates": [[[6.5, 0.2], [6.75, 0.2], [6.7, 0.4], [6.5, 0.2]]],
                },
            },
            {
                "type": "Feature",
                "properties": {},
                "geometry": {"type": "Point", "coordinates": [6.6, 0.1]},
            },
        ],
    }
    path = tmp_path / "area.geojson"
    path.write_text(json.dumps(fc))
    assert bbox_from_geojson(path) == (6.5, 0.1, 6.75, 0.4)
    assert resolve_area(None, path) == (6.5, 0.1, 6.75, 0.4)
    fc["crs"] = {"type": "name", "properties": {"name": "urn:ogc:def:crs:EPSG::32632"}}
    path.write_text(json.dumps(fc))
    with pytest.raises(InputError, match="32632.*lon/lat"):
        bbox_from_geojson(path)
    with pytest.raises(InputError, match="no such file"):
        bbox_from_geojson(tmp_path / "missing.geojson")
    (tmp_path / "bad.geojson").write_text("{not json")
    with pytest.raises(InputError, match="not readable as JSON"):
        bbox_from_geojson(tmp_path / "bad.geojson")


def test_exactly_one_area_is_required(tmp_path):
    with pytest.raises(InputError, match="exactly one of --bbox"):
        resolve_area(None, None)
    with pytest.raises(InputError, match="exactly one of --bbox"):
        resolve_area("6.5,0.2,6.75,0.4", tmp_path / "a.geojson")
    assert resolve_area([6.5, 0.2, 6.75, 0.4], None) == (6.5, 0.2, 6.75, 0.4)
