"""``acquire_worldcover`` against a loopback mirror of the public buckets (synthetic tiles)."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import rasterio

from groundsynth.acquire.tiles import MAP, S2RGBNIR, area_window
from groundsynth.acquire.worldcover import acquire_worldcover
from groundsynth.errors import OutputConflictError
from tests.acquire.mirror import Mirror, serve_mirror
from tests.acquire.tiles import expected, tile_path, write_tiles

#: 240 x 240 pixels around lon 6, lat 3: four map tiles and four composite tiles meet here.
CORNER = (5.99, 2.99, 6.01, 3.01)
#: 600 x 600 pixels inside map tile N00E006 and composite tile N00E006.
INSIDE = (6.1, 0.5, 6.15, 0.55)
FAST = {"retries": 2, "backoff": 0.001, "timeout": 10.0}


@pytest.fixture(scope="module")
def tiles(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A mirror folder with both products around CORNER and INSIDE (read-only: shared)."""
    root = tmp_path_factory.mktemp("mirror")
    for product in (MAP, S2RGBNIR):
        write_tiles(root, product, 2021, [CORNER, INSIDE])
    return root


@pytest.fixture
def mirror(tiles: Path) -> Iterator[Mirror]:
    yield from serve_mirror(tiles)


def _acquire(mirror: Mirror, out: Path, bbox=CORNER, **kw):
    return acquire_worldcover(
        out, bbox=bbox, base_url=mirror.base_url, s2_base_url=mirror.base_url, **{**FAST, **kw}
    )


def _read(path: Path) -> tuple[np.ndarray, dict, tuple]:
    with rasterio.open(path) as ds:
        return ds.read(), ds.profile, ds.descriptions


def test_mosaic_across_four_tiles_equals_the_tiles(mirror, tmp_path):
    out = tmp_path / "out"
    result = _acquire(mirror, out, with_s2=True)
    area = area_window(CORNER)
    lc, profile, _ = _read(result.landcover)
    np.testing.assert_array_equal(lc, expected(MAP, area))
    assert profile["crs"].to_epsg() == 4326 and profile["nodata"] == 0
    assert profile["transform"].almost_equals(area.transform)
    assert profile["tiled"] and profile["compress"] == "deflate" and profile["dtype"] == "uint8"
    img, profile, descriptions = _read(result.imagery)
    np.testing.assert_array_equal(img, expected(S2RGBNIR, area))
    assert descriptions == ("red", "green", "blue", "nir") and profile["dtype"] == "uint16"
    assert result.tiles == {
        "map": ["N03E003", "N03E006", "N00E003", "N00E006"],
        "s2rgbnir": ["N03E005", "N03E006", "N02E005", "N02E006"],
    }
    assert result.missing == {"map": [], "s2rgbnir": []}
    # the byte count is GDAL's, and matches what the server sent; reads are range requests
    # (the fraction of a real tile read is measured in test_worldcover_realdata.py)
    assert result.bytes_fetched == sum(mirror.bytes_served.values())
    assert mirror.gets() and all(r[2] for r in mirror.gets())


def test_manifest_records_provenance_of_every_remote_file(mirror, tmp_path):
    out = tmp_path / "out"
    result = _acquire(mirror, out, with_s2=True)
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest == result.manifest
    files = manifest["remote_files"]
    assert len(files) == 8
    for f in files:
        rel = f["url"].removeprefix(mirror.base_url + "/")
        assert f["status"] == "read"
        assert f["size"] == (mirror.root / rel).stat().st_size
        assert f["etag"] and f["last_modified"]
        assert f["cog"]["block"] == [1024, 1024] and f["cog"]["crs"] == "EPSG:4326"
        assert f["windows"] and sum(w["width"] * w["height"] for w in f["windows"]) == 120 * 120
        assert f["bytes_fetched"] == mirror.served(rel)
    assert manifest["bytes"]["fetched_this_run"] == result.bytes_fetched
    assert manifest["outputs"]["grid"]["width"] == 240
    assert set(manifest["outputs"]["files"]) == {
        "landcover/worldcover_2021_v200_map.tif",
        "imagery/worldcover_2021_v200_s2rgbnir.tif",
    }
    assert (out / "config.yaml").is_file() and (out / "acquire.log").is_file()


def test_a_tile_missing_on_the_server_is_nodata_and_recorded(tmp_path):
    root = tmp_path / "mirror"
    write_tiles(root, MAP, 2021, [CORNER], skip=["N03E003"])
    gen = serve_mirror(root)
    mirror = next(gen)
    try:
        result = _acquire(mirror, tmp_path / "out")
    finally:
        gen.close()
    lc, _, _ = _read(result.landcover)
    want = expected(MAP, area_window(CORNER))
    assert (lc[:, :120, :120] == 0).all()  # the north-west quarter: N03E003
    np.testing.assert_array_equal(lc[:, 120:, :], want[:, 120:, :])
    assert result.missing == {"map": ["N03E003"]}
    files = {f["tile"]: f for f in result.manifest["remote_files"]}
    assert files["N03E003"]["status"] == "missing (404)"


def test_interrupted_run_resumes_from_its_journal(mirror, tmp_path):
    out = tmp_path / "out"

    def stop_after_three(done: int, total: int, fetched: int) -> None:
        if done == 3:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        _acquire(mirror, out, bbox=INSIDE, with_s2=True, chunk=256, progress=stop_after_three)
    first = sum(mirror.bytes_served.values())
    assert first > 0 and not (out / "landcover").exists()
    mirror.bytes_served.clear()
    result = _acquire(mirror, out, bbox=INSIDE, with_s2=True, chunk=256)
    assert result.windows_resumed == 3 and result.windows_total > 3
    area = area_window(INSIDE)
    np.testing.assert_array_equal(_read(result.landcover)[0], expected(MAP, area))
    np.testing.assert_array_equal(_read(result.imagery)[0], expected(S2RGBNIR, area))
    # a clean rerun of a finished acquisition fetches no pixel, only asks HEADs
    mirror.requests.clear()
    again = _acquire(mirror, out, bbox=INSIDE, with_s2=True, chunk=256)
    assert again.bytes_fetched == 0 and again.windows_resumed == again.windows_total
    assert mirror.gets() == []
    for record in again.manifest["remote_files"]:  # provenance survives the resume
        assert record["cog"]["block"] == [1024, 1024] and record["bytes_fetched"] > 0
        assert record["bytes_fetched_this_run"] == 0


def test_another_request_into_the_same_out_is_refused(mirror, tmp_path):
    out = tmp_path / "out"
    _acquire(mirror, out)
    with pytest.raises(OutputConflictError, match="bbox"):
        _acquire(mirror, out, bbox=INSIDE)
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes.txt").write_text("mine")
    with pytest.raises(OutputConflictError, match="not empty"):
        _acquire(mirror, tmp_path / "other")


def test_geojson_area_equals_the_bbox(mirror, tmp_path):
    w, s, e, n = CORNER
    geo = tmp_path / "area.geojson"
    ring = [[w, s], [e, s], [e, n], [w, n], [w, s]]
    geo.write_text(json.dumps({"type": "Polygon", "coordinates": [ring]}))
    result = acquire_worldcover(tmp_path / "out", geojson=geo, base_url=mirror.base_url, **FAST)
    np.testing.assert_array_equal(_read(result.landcover)[0], expected(MAP, area_window(CORNER)))


def test_nothing_is_written_outside_out(mirror, tmp_path, monkeypatch):
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    before = set(tmp_path.rglob("*"))
    _acquire(mirror, tmp_path / "out", with_s2=True)
    after = set(tmp_path.rglob("*"))
    assert all(tmp_path / "out" in p.parents or p == tmp_path / "out" for p in after - before)
    assert list(cwd.iterdir()) == []
    leftovers = [p for p in (tmp_path / "out").rglob(".*") if p.is_file()]
    assert leftovers == []  # no temporary file left behind


def test_build_accepts_the_acquired_pair(mirror, tmp_path):
    from groundsynth.data.build import BuildConfig, build_dataset

    out = tmp_path / "out"
    result = _acquire(mirror, out, with_s2=True)
    ds = build_dataset(
        BuildConfig(
            imagery=(str(result.imagery.parent),),
            landcover=(str(result.landcover.parent),),
            out=str(tmp_path / "dataset"),
            size=64,
            split_fractions=(1.0, 0.0, 0.0),
        )
    )
    assert sum(ds.counts.values()) == 9  # 240 x 240 pixels: 3 x 3 patches of 64
    assert ds.skipped.get("label_nodata", 0) == 0
    masks = sorted((tmp_path / "dataset" / "train" / "masks").glob("*.png"))
    assert len(masks) == 9


def test_tile_path_matches_the_layout(tmp_path):
    path = tile_path(tmp_path, MAP, 2021, "N00E006")
    assert path.relative_to(tmp_path).as_posix() == (
        "v200/2021/map/ESA_WorldCover_10m_2021_v200_N00E006_Map.tif"
    )
    assert os.sep not in path.name
