"""A window of the real WorldCover tile N00E006 (São Tomé), served by a loopback mirror.

The 36000 x 36000 deflate COG in ../shared/data is symlinked (not copied) into a mirror laid
out like the public bucket; skipped when ../shared/data is absent.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import rasterio
from rasterio.windows import Window

from groundsynth.acquire.tiles import area_window
from groundsynth.acquire.worldcover import acquire_worldcover
from tests.acquire.mirror import Mirror, serve_mirror

pytestmark = pytest.mark.realdata

NAME = "ESA_WorldCover_10m_2020_v100_N00E006_Map.tif"
REL = f"v100/2020/map/{NAME}"
#: 600 x 600 pixels of São Tomé island: forest, grassland, cropland, built-up.
BBOX = (6.6, 0.3, 6.65, 0.35)


@pytest.fixture
def mirror(shared_data: Path, tmp_path: Path) -> Iterator[Mirror]:
    tile = shared_data / "worldcover" / NAME
    if not tile.is_file():
        pytest.skip(f"{tile} is absent")
    link = tmp_path / "mirror" / REL
    link.parent.mkdir(parents=True)
    link.symlink_to(tile)
    yield from serve_mirror(tmp_path / "mirror")


def test_a_small_area_reads_a_small_part_of_the_real_cog(mirror, shared_data, tmp_path):
    tile = shared_data / "worldcover" / NAME
    size = tile.stat().st_size
    t0 = time.perf_counter()
    result = acquire_worldcover(
        tmp_path / "out", bbox=BBOX, year=2020, base_url=mirror.base_url, backoff=0.01
    )
    seconds = time.perf_counter() - t0
    served = mirror.served(REL)
    # only the header and the internal tiles under the area travel: < 5 % of the file
    assert 0 < served < 0.05 * size, f"{served} of {size} bytes"
    assert result.bytes_fetched == served and result.bytes_remote == size
    assert all(r[2] for r in mirror.gets())  # every GET is a range request
    # the mosaic equals a direct local read of the same window
    area = area_window(BBOX)
    with rasterio.open(tile) as ds:
        col = area.col - (186 * 12000)  # the tile starts at longitude 6
        row = area.row - (87 * 12000)  # and latitude 3
        want = ds.read(1, window=Window(col, row, area.width, area.height))
    with rasterio.open(result.landcover) as ds:
        got = ds.read(1)
        assert ds.transform.almost_equals(area.transform) and ds.crs.to_epsg() == 4326
    np.testing.assert_array_equal(got, want)
    assert (got != 0).mean() > 0.99 and (got == 80).mean() < 0.1  # land, as expected
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    (record,) = manifest["remote_files"]
    assert record["size"] == size and record["etag"] and record["last_modified"]
    assert record["cog"]["overviews"] == 6 and record["cog"]["block"] == [1024, 1024]
    print(f"\n{served} of {size} bytes ({served / size:.1%}) in {seconds:.2f} s")
