"""Faults of ``acquire_worldcover``: missing tiles, dead servers, 5xx, dropped connections,
files that change, files that are not COGs, bad input. All on loopback."""

from __future__ import annotations

import logging
import socket
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import rasterio
from rasterio.transform import from_origin
from rasterio.windows import Window

from groundsynth.acquire.tiles import MAP, area_window
from groundsynth.acquire.worldcover import acquire_worldcover
from groundsynth.errors import FetchError, InputError
from tests.acquire.mirror import Mirror, serve_mirror
from tests.acquire.tiles import expected, tile_path, write_tiles

#: 240 x 240 pixels in map tile N00E006.
AREA = (6.1, 0.5, 6.12, 0.52)
TILE = "v200/2021/map/ESA_WorldCover_10m_2021_v200_N00E006_Map.tif"
FAST = {"retries": 2, "backoff": 0.001, "timeout": 10.0}


@pytest.fixture
def mirror(tmp_path: Path) -> Iterator[Mirror]:
    root = tmp_path / "mirror"
    write_tiles(root, MAP, 2021, [AREA])
    yield from serve_mirror(root)


def _acquire(mirror: Mirror | str, out: Path, **kw):
    base = mirror if isinstance(mirror, str) else mirror.base_url
    return acquire_worldcover(out, bbox=kw.pop("bbox", AREA), base_url=base, **{**FAST, **kw})


def _landcover_ok(result) -> None:
    with rasterio.open(result.landcover) as ds:
        np.testing.assert_array_equal(ds.read(), expected(MAP, area_window(AREA)))


# ----------------------------------------------------------------------------- no tiles
def test_an_area_without_tiles_names_the_tiles_and_writes_nothing(mirror, tmp_path):
    out = tmp_path / "out"
    with pytest.raises(InputError) as info:
        _acquire(mirror, out, bbox=(-30.0, 0.0, -29.9, 0.1))  # Atlantic Ocean
    message = str(info.value)
    assert "404" in message and "N00W030" in message and "land only" in message
    assert mirror.url("v200/2021/map/ESA_WorldCover_10m_2021_v200_N00W030_Map.tif") in message
    assert not out.exists()


def test_a_dead_server_is_a_fetch_error_naming_the_url(tmp_path):
    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        base = f"http://127.0.0.1:{sock.getsockname()[1]}"
    out = tmp_path / "out"
    with pytest.raises(FetchError, match="unreachable after 3 attempt") as info:
        _acquire(base, out)
    assert f"{base}/{TILE}" in str(info.value) and "--base-url" in str(info.value)
    assert not out.exists()


# ----------------------------------------------------------------------------- transient
def test_transient_503_on_head_is_retried(mirror, tmp_path):
    mirror.fail_next = 2
    _landcover_ok(_acquire(mirror, tmp_path / "out"))
    assert [r[0] for r in mirror.requests[:3]] == ["HEAD", "HEAD", "HEAD"]


def test_transient_503_on_range_reads_is_retried(mirror, tmp_path):
    mirror.fail_next_get = 3
    _landcover_ok(_acquire(mirror, tmp_path / "out", retries=3))
    assert len(mirror.gets()) > 3


def test_a_dropped_connection_is_retried(mirror, tmp_path, caplog):
    mirror.drop_next_get = 2
    with caplog.at_level(logging.WARNING, logger="groundsynth"):
        _landcover_ok(_acquire(mirror, tmp_path / "out"))
    assert "retry 1 of 2" in caplog.text


def test_persistent_5xx_gives_up_with_the_url(mirror, tmp_path):
    mirror.fail_next_get = 1000
    with pytest.raises(FetchError) as info:
        _acquire(mirror, tmp_path / "out", retries=1)
    message = str(info.value)
    assert mirror.url(TILE) in message and "failed 2 time(s)" in message and "503" in message


# ----------------------------------------------------------------------------- changes
def test_a_file_changed_between_runs_is_detected_or_refetched(mirror, tmp_path):
    out = tmp_path / "out"
    _acquire(mirror, out, chunk=256)
    mirror.etags[TILE] = '"a-new-version"'
    mirror.requests.clear()
    with pytest.raises(FetchError, match="changed.*ETag.*a-new-version.*--on-change refetch"):
        _acquire(mirror, out, chunk=256)
    assert mirror.gets() == []  # nothing read from the new version yet
    result = _acquire(mirror, out, chunk=256, on_change="refetch")
    assert result.windows_resumed == 0 and result.bytes_fetched > 0
    _landcover_ok(result)
    record = result.manifest["remote_files"][0]
    assert record["etag"] == '"a-new-version"'


def test_refetch_reads_the_new_content_not_a_cached_copy(mirror, tmp_path):
    out = tmp_path / "out"
    _landcover_ok(_acquire(mirror, out))
    area = area_window(AREA)
    tile = area.col - 186 * 12000, area.row - 87 * 12000  # N00E006 starts at 6 E, 3 N
    path = tile_path(mirror.root, MAP, 2021, "N00E006")
    with rasterio.open(path, "r+") as ds:  # the server now has new pixels (and a new ETag)
        ds.write(
            np.full((1, area.height, area.width), 50, "uint8"),
            window=Window(*tile, area.width, area.height),
        )
    with pytest.raises(FetchError, match="changed"):
        _acquire(mirror, out)
    result = _acquire(mirror, out, on_change="refetch")
    with rasterio.open(result.landcover) as ds:
        assert (ds.read() == 50).all()


def test_a_truncated_file_is_detected_by_its_size(mirror, tmp_path):
    out = tmp_path / "out"
    _acquire(mirror, out)
    path = mirror.root / TILE
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    mirror.etags[TILE] = '"same-etag-as-before"'  # a careless mirror: only the size differs
    with pytest.raises(FetchError, match=f"size {len(data)} -> {len(data) // 2} bytes"):
        _acquire(mirror, out)


def test_a_file_changing_during_the_run_is_detected(mirror, tmp_path):
    def replace_after_first_read(m: Mirror, method: str, path: str) -> None:
        if method == "HEAD" and m.gets():
            m.etags[TILE] = '"replaced"'

    mirror.hook = replace_after_first_read
    with pytest.raises(FetchError, match="changed on the server while it was being read"):
        _acquire(mirror, tmp_path / "out")


# ----------------------------------------------------------------------------- not a COG
def test_a_striped_geotiff_is_refused_before_reading_pixels(mirror, tmp_path):
    path = mirror.root / TILE
    with rasterio.open(
        path,
        "w",
        driver="GTiff",
        width=36000,
        height=36000,
        count=1,
        dtype="uint8",
        crs="EPSG:4326",
        transform=from_origin(6, 3, 1 / 12000, 1 / 12000),
        nodata=0,
        sparse_ok=True,
        compress="deflate",
    ) as ds:
        assert not ds.profile.get("tiled")
    with pytest.raises(FetchError, match="not a cloud-optimized GeoTIFF.*strips") as info:
        _acquire(mirror, tmp_path / "out")
    assert mirror.url(TILE) in str(info.value)


def test_an_html_body_is_not_a_geotiff(mirror, tmp_path):
    (mirror.root / TILE).write_text("<html><body>Access denied</body></html>")
    mirror.content_types[TILE] = "text/html"
    with pytest.raises(FetchError, match="not a GeoTIFF.*text/html.*<html>") as info:
        _acquire(mirror, tmp_path / "out")
    assert mirror.url(TILE) in str(info.value)


def test_a_tile_on_another_grid_is_refused(mirror, tmp_path):
    path = tile_path(mirror.root, MAP, 2021, "N00E006")
    with rasterio.open(
        path,
        "w",
        driver="GTiff",
        width=512,
        height=512,
        count=1,
        dtype="uint8",
        crs="EPSG:3857",
        transform=from_origin(0, 0, 10, 10),
        tiled=True,
        blockxsize=256,
        blockysize=256,
    ) as ds:
        ds.write(np.ones((1, 512, 512), dtype="uint8"))
    with pytest.raises(FetchError, match="not a WorldCover land-cover map tile") as info:
        _acquire(mirror, tmp_path / "out")
    assert "EPSG:4326" in str(info.value) and "36000 x 36000" in str(info.value)


# ----------------------------------------------------------------------------- input
@pytest.mark.parametrize(
    ("kw", "error", "message"),
    [
        ({"bbox": (6.2, 0.5, 6.1, 0.6)}, InputError, "west .* less than east"),
        ({"bbox": "6.1,95,6.2,96"}, InputError, "latitudes"),
        ({"year": 2019}, InputError, "2020, 2021"),
        ({"chunk": 300}, InputError, "multiple of 256"),
        ({"on_change": "ignore"}, InputError, "--on-change"),
        ({"bbox": (0.0, 0.0, 10.0, 10.0)}, InputError, "--max-pixels"),
    ],
)
def test_bad_requests_are_input_errors_before_any_request(mirror, tmp_path, kw, error, message):
    with pytest.raises(error, match=message):
        _acquire(mirror, tmp_path / "out", **kw)
    assert mirror.requests == [] and not (tmp_path / "out").exists()


def test_a_base_url_that_is_not_http_is_refused(tmp_path):
    with pytest.raises(InputError, match="not an http"):
        _acquire("ftp://example.org", tmp_path / "out")
