"""groundsynth.acquire.sentinel2 against loopback servers serving a real Earth Search item.

The item (../shared/data/stac/earth-search-v0/S2A_29RKH_20200219_0_L2A) is served by a
minimal STAC API and its COGs by a static server with HTTP range requests, both on 127.0.0.1.
Further scenes are made here from its files (same CRS and grid, changed values and dates).
"""

from __future__ import annotations

import json
import socket
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import rasterio
from rasterio.enums import Resampling
from rasterio.warp import reproject, transform_bounds
from rasterio.windows import Window

from groundsynth.acquire.s2_grid import Grid
from groundsynth.acquire.sentinel2 import acquire_sentinel2
from groundsynth.errors import FetchError, InputError, OutputConflictError
from tests.acquire import stac_server
from tests.acquire.stac_server import ITEM_ID, StacState, rehost

pytestmark = pytest.mark.realdata

# fixtures: the real item's folder and JSON, and the two loopback servers
item_dir, item, servers = stac_server.item_dir, stac_server.item, stac_server.servers

#: 6 km x 6 km in UTM 29N, inside one 512-pixel COG tile, with some of the scene's clouds
UTM_BOX = (275000.0, 2778000.0, 281000.0, 2784000.0)
BBOX = transform_bounds("EPSG:32629", "EPSG:4326", *UTM_BOX)
DATES = "2020-02-01/2020-03-31"
BAND_FILES = {"B04": "B04.tif", "B03": "B03.tif", "B02": "B02.tif", "B08": "B08.tif"}
FAST = {"resolution": 100.0, "retries": 2, "backoff": 0.01, "timeout": 5.0, "workers": 2}


def _grid_of(path: Path) -> Grid:
    with rasterio.open(path) as ds:
        return Grid(ds.crs.to_string(), tuple(ds.transform)[:6], ds.width, ds.height)


def _on_grid(path: Path, grid: Grid) -> np.ndarray:
    """Independent reference: the whole local file reprojected onto ``grid`` (nearest)."""
    with rasterio.open(path) as ds:
        out = np.zeros((grid.height, grid.width), dtype=ds.dtypes[0])
        reproject(
            rasterio.band(ds, 1),
            out,
            dst_transform=grid.affine,
            dst_crs=grid.crs,
            dst_nodata=0,
            resampling=Resampling.nearest,
        )
    return out


def _derive(src_dir: Path, dst_dir: Path, change: dict[str, Any]) -> Path:
    """Write COGs of the item's bands and SCL, cut to a window around the test area on the
    item's own grid (real CRS and transform); ``change[name](array) -> array``."""
    dst_dir.mkdir(parents=True, exist_ok=True)
    for name in [*BAND_FILES.values(), "SCL.tif"]:
        with rasterio.open(src_dir / name) as ds:
            f = 1 if ds.res[0] == 100 else 2
            win = Window(700 // f, 100 // f, 200 // f, 200 // f)
            data = ds.read(1, window=win)
            profile = ds.profile | {
                "width": win.width,
                "height": win.height,
                "transform": ds.window_transform(win),
                "blockxsize": 64,
                "blockysize": 64,
            }
        data = change.get(name, lambda a: a)(data)
        with rasterio.open(dst_dir / name, "w", **profile) as dst:
            dst.write(data.astype(profile["dtype"]), 1)
    return dst_dir


def _plus(n: int):
    return lambda a: np.where(a > 0, a.astype(np.int64) + n, 0)


def _acquire(stac: StacState, out: Path, **kw: Any):
    return acquire_sentinel2(BBOX, DATES, out, stac_url=stac.base, **{**FAST, **kw})


# --------------------------------------------------------------------------- per scene
def test_per_scene_equals_local_reprojection_and_reads_only_the_window(
    servers, item, item_dir, tmp_path
):
    stac, files = servers
    stac.items.append(rehost(item, files, item_dir))
    out = tmp_path / "out"
    result = _acquire(stac, out, composite="per-scene")

    assert result.items == [ITEM_ID] and result.scenes_fetched == 1
    scene = out / "scenes" / f"{ITEM_ID}.tif"
    assert result.imagery == [scene]
    grid = result.grid
    assert grid.crs == "EPSG:32629" and grid.transform[0] == 100.0
    assert grid.transform[2] % 100 == 0 and grid.transform[5] % 100 == 0  # snapped edges
    with rasterio.open(scene) as ds:
        got = ds.read()
        assert ds.dtypes[0] == "uint16" and ds.nodata == 0
        assert ds.descriptions == ("red", "green", "blue", "nir")
        assert ds.profile["tiled"] and ds.profile["compress"] == "deflate"
        assert ds.scales == (1e-4,) * 4 and ds.tags()["BOA_ADD_OFFSET"] == "0"
    assert _grid_of(scene) == grid
    for k, name in enumerate(BAND_FILES.values()):
        want = _on_grid(item_dir / name, grid)
        assert want.any()
        np.testing.assert_array_equal(got[k], want)

    # range reads: each band costs its header and the one tile under the area
    sizes = {n: (item_dir / n).stat().st_size for n in BAND_FILES.values()}
    served = {n: files.served[f"{ITEM_ID}/{n}"] for n in BAND_FILES.values()}
    assert sum(served.values()) < 0.25 * sum(sizes.values()), (served, sizes)
    assert not any(p.endswith("SCL.tif") for _, p, _ in files.requests)  # per-scene: no SCL

    # provenance
    rec = json.loads((out / "scenes" / f"{ITEM_ID}.json").read_text())
    red = rec["assets"]["B04"]
    assert red["key"] == "red" and red["href"] == files.url(f"{ITEM_ID}/B04.tif")
    assert red["bytes"] == sizes["B04.tif"] and red["etag"].startswith('"')
    assert red["cog"]["block"] == [512, 512]
    assert rec["cloud_cover"] == pytest.approx(4.051854)
    assert rec["processing_baseline"] == "02.14" and rec["offset_subtracted_dn"] == 0
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["stage"] == "acquire-sentinel2"
    assert manifest["scenes"][0]["item"] == ITEM_ID
    assert manifest["search"]["query"] == {"eo:cloud_cover": {"lt": 20.0}}
    assert json.loads((out / "items.json").read_text())["features"][0]["id"] == ITEM_ID
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]  # nothing outside --out
    assert not list(out.rglob(".*"))  # no temporaries left


def test_rerun_reuses_scenes_and_refuses_other_options(servers, item, item_dir, tmp_path):
    stac, files = servers
    stac.items.append(rehost(item, files, item_dir))
    out = tmp_path / "out"
    _acquire(stac, out, composite="per-scene")
    before = sum(files.served.values())
    again = _acquire(stac, out, composite="per-scene", workers=1)  # workers: not identity
    assert (again.scenes_fetched, again.scenes_reused) == (0, 1)
    assert sum(files.served.values()) == before  # no COG byte read again
    with pytest.raises(OutputConflictError, match="resolution"):
        _acquire(stac, out, composite="per-scene", resolution=50.0)


def test_rerun_fetches_a_scene_again_when_a_remote_file_changed(servers, item, item_dir, tmp_path):
    stac, files = servers
    stac.items.append(rehost(item, files, item_dir))
    out = tmp_path / "out"
    _acquire(stac, out, composite="per-scene")
    record = out / "scenes" / f"{ITEM_ID}.json"
    old_etag = json.loads(record.read_text())["assets"]["B04"]["etag"]
    # the red band's file changes on the server (new content, so a new ETag)
    changed = tmp_path / "B04.tif"
    with rasterio.open(item_dir / "B04.tif") as src:
        profile, data = src.profile, src.read()
    with rasterio.open(changed, "w", **profile) as dst:
        dst.write(np.where(data > 0, data + 7, 0).astype(data.dtype))
    path = f"{ITEM_ID}/B04.tif"
    files.files[path] = changed
    files._cache.pop(path, None)
    again = _acquire(stac, out, composite="per-scene")
    assert (again.scenes_fetched, again.scenes_reused) == (1, 0)
    assert json.loads(record.read_text())["assets"]["B04"]["etag"] not in (None, old_etag)
    with rasterio.open(again.imagery[0]) as ds:
        np.testing.assert_array_equal(ds.read(1), _on_grid(changed, again.grid))


def test_v0_asset_keys_give_the_same_scene(servers, item, item_dir, tmp_path):
    """Earth Search v0 items key assets by band (B04, SCL) with eo:bands names B04..."""
    stac, files = servers
    v0 = json.loads(json.dumps(item))
    keys = {"red": "B04", "green": "B03", "blue": "B02", "nir": "B08", "scl": "SCL"}
    v0["assets"] = {keys.get(k, k): a for k, a in item["assets"].items() if not k.endswith("jp2")}
    for band in keys.values():
        for eo in v0["assets"][band].get("eo:bands", []):
            eo["name"] = band
    v0["collection"] = "sentinel-s2-l2a-cogs"
    stac.items.append(rehost(v0, files, item_dir))
    r = _acquire(stac, tmp_path / "v0", composite="per-scene", collection="sentinel-s2-l2a-cogs")
    rec = json.loads((tmp_path / "v0" / "scenes" / f"{ITEM_ID}.json").read_text())
    assert rec["assets"]["B04"]["key"] == "B04"
    with rasterio.open(r.imagery[0]) as ds:
        np.testing.assert_array_equal(ds.read(1), _on_grid(item_dir / "B04.tif", r.grid))


# --------------------------------------------------------------------------- radiometry
def test_baseline_04_offset_is_removed_unless_already_applied(servers, item, item_dir, tmp_path):
    stac, files = servers
    shifted = _derive(item_dir, tmp_path / "shifted", {n: _plus(1000) for n in BAND_FILES.values()})
    same = _derive(item_dir, tmp_path / "same", {})

    def b4(day: int, applied: bool = False) -> dict[str, Any]:
        return {
            "s2:processing_baseline": "04.00",
            "earthsearch:boa_offset_applied": applied,
            "datetime": f"2022-03-0{day}T11:00:00Z",
        }

    stac.items += [
        # baseline 04.00, DNs carry +1000, raster:bands says nothing: offset from the baseline
        rehost(item, files, shifted, id="S2B_29RKH_20220301_0_L2A", props=b4(1)),
        # the same, and raster:bands carries the -0.1 offset as Earth Search v1 writes it
        rehost(item, files, shifted, id="S2B_29RKH_20220302_0_L2A", props=b4(2)),
        # baseline 04.00 but Earth Search already removed the offset: no shift
        rehost(item, files, same, id="S2B_29RKH_20220303_0_L2A", props=b4(3, applied=True)),
    ]
    for a in stac.items[1]["assets"].values():
        for rb in a.get("raster:bands", []):
            rb["offset"] = -0.1
    r = acquire_sentinel2(
        BBOX, "2022-01-01/2022-12-31", tmp_path / "out", stac_url=stac.base,
        composite="per-scene", **FAST,
    )  # fmt: skip
    want = _on_grid(item_dir / "B04.tif", r.grid)
    recs = {x["item"]: x for x in r.manifest["scenes"]}
    for it in stac.items:
        with rasterio.open(tmp_path / "out" / "scenes" / f"{it['id']}.tif") as ds:
            np.testing.assert_array_equal(ds.read(1), want, err_msg=it["id"])
    assert recs["S2B_29RKH_20220301_0_L2A"]["offset_subtracted_dn"] == 1000
    assert recs["S2B_29RKH_20220301_0_L2A"]["assets"]["B04"]["offset_source"] == (
        "processing baseline"
    )
    assert recs["S2B_29RKH_20220302_0_L2A"]["assets"]["B04"]["offset_source"] == "raster:bands"
    assert recs["S2B_29RKH_20220303_0_L2A"]["offset_subtracted_dn"] == 0


# --------------------------------------------------------------------------- median
def test_median_composite_masks_scl_and_counts_empty_pixels(servers, item, item_dir, tmp_path):
    stac, files = servers

    def cloud_left(a):  # SCL 9 (cloud, high probability) on the left half, else 4
        out = np.full_like(a, 4)
        out[:, : a.shape[1] // 2] = 9
        return out

    def shadow_top(a):  # SCL 3 (cloud shadow) on the top half, 10 (cirrus) in one corner
        out = np.full_like(a, 5)
        out[: a.shape[0] // 2] = 3
        out[-10:, -10:] = 10
        return out

    bands = BAND_FILES.values()
    b_dir = _derive(
        item_dir, tmp_path / "b", {"SCL.tif": cloud_left, **{n: _plus(100) for n in bands}}
    )
    c_dir = _derive(
        item_dir, tmp_path / "c", {"SCL.tif": shadow_top, **{n: _plus(300) for n in bands}}
    )
    stac.items += [
        rehost(item, files, item_dir),
        rehost(item, files, b_dir, id="S2A_29RKH_20200224_0_L2A",
               props={"datetime": "2020-02-24T11:34:25Z", "eo:cloud_cover": 9.0}),
        rehost(item, files, c_dir, id="S2A_29RKH_20200229_0_L2A",
               props={"datetime": "2020-02-29T11:34:25Z", "eo:cloud_cover": 12.0}),
        rehost(item, files, c_dir, id="S2A_29RKH_20200301_0_L2A",  # too cloudy: not searched
               props={"datetime": "2020-03-01T11:34:25Z", "eo:cloud_cover": 35.0}),
    ]  # fmt: skip
    r = _acquire(stac, tmp_path / "out", max_cloud=20)
    assert r.search["dropped_cloud"] == 0  # the server applied the query
    assert len(r.items) == 3 and r.composite == tmp_path / "out" / "composite.tif"
    grid = r.grid

    # independent reference: per-pixel median of the clear observations
    dirs = [item_dir, b_dir, c_dir]
    data = np.stack([np.stack([_on_grid(d / n, grid) for n in bands]) for d in dirs])
    scl = np.stack([_on_grid(d / "SCL.tif", grid) for d in dirs])
    clear = ~np.isin(scl, [0, 1, 3, 8, 9, 10]) & (data > 0).all(axis=1)
    want = np.zeros(data.shape[1:], dtype=np.uint16)
    for y in range(grid.height):
        for x in range(grid.width):
            obs = data[clear[:, y, x], :, y, x]
            if len(obs):
                want[:, y, x] = np.rint(np.median(obs.astype(np.float64), axis=0))
    with rasterio.open(r.composite) as ds:
        got = ds.read()
        assert ds.descriptions == ("red", "green", "blue", "nir")
    np.testing.assert_array_equal(got, want)

    # by hand: with A, A+100, A+300 all clear the median is A+100; with B masked A+150; ...
    a = data[0]
    both = clear[0] & clear[2] & ~clear[1]
    assert both.any() and (got[:, both] == a[:, both] + 150).all()
    every = clear.all(axis=0)
    assert every.any() and (got[:, every] == a[:, every] + 100).all()
    none = ~clear.any(axis=0)
    assert none.any() and (got[:, none] == 0).all()
    assert r.stats.pixels_without_clear == int(none.sum())
    assert r.stats.clear_per_scene[ITEM_ID] == int(clear[0].sum())
    assert r.manifest["outputs"]["composite"]["pixels_without_clear"] == int(none.sum())


# --------------------------------------------------------------------------- build
def test_build_accepts_the_composite(servers, item, item_dir, tmp_path):
    from groundsynth.data.build import BuildConfig, build_dataset
    from groundsynth.data.rasters import discover_imagery
    from tests.data.rasters import write_landcover

    stac, files = servers
    stac.items.append(rehost(item, files, item_dir))
    r = _acquire(stac, tmp_path / "s2")
    (src,) = discover_imagery([r.composite])
    assert [b.name for b in src.bands] == ["red", "green", "blue", "nir"]
    assert all((b.scale, b.offset, b.nodata) == (1e-4, 0.0, 0) for b in src.bands)
    # a WorldCover-like map over the area: bare (60) with a block of grass (30)
    w, s, e, n = transform_bounds(r.grid.crs, "EPSG:4326", *src.bounds)
    res = 1 / 1200
    codes = np.full((int((n - s) / res) + 4, int((e - w) / res) + 4), 60, dtype=np.uint8)
    codes[: codes.shape[0] // 2, : codes.shape[1] // 2] = 30
    lc = write_landcover(tmp_path / "lc.tif", codes, lon=w - 2 * res, lat=n + 2 * res)
    with rasterio.open(lc, "r+") as ds:
        ds.transform = rasterio.transform.from_origin(w - 2 * res, n + 2 * res, res, res)
    built = build_dataset(
        BuildConfig(
            imagery=(str(r.composite),), landcover=(str(lc),), out=str(tmp_path / "ds"),
            size=16, keep_nir=True, max_image_nodata=1.0, split_fractions=(1.0, 0.0, 0.0),
        )
    )  # fmt: skip
    assert sum(built.counts.values()) > 0
    patches = sorted((tmp_path / "ds").rglob("images_nir/*.tif"))
    with rasterio.open(patches[0]) as p, rasterio.open(r.composite) as c:
        win = rasterio.windows.from_bounds(*p.bounds, transform=c.transform).round_offsets()
        np.testing.assert_array_equal(
            p.read(), c.read(window=Window(win.col_off, win.row_off, 16, 16))
        )


# --------------------------------------------------------------------------- faults
def test_no_items_names_the_search(servers, item, item_dir, tmp_path):
    stac, files = servers
    stac.items.append(rehost(item, files, item_dir))
    with pytest.raises(InputError, match=r"no items found at http://127\.0\.0\.1.*max-cloud"):
        _acquire(stac, tmp_path / "out", max_cloud=2)
    with pytest.raises(InputError, match="no items found"):
        acquire_sentinel2(BBOX, "2019-01-01/2019-02-01", tmp_path / "out", stac_url=stac.base)
    assert not (tmp_path / "out").exists()  # a failed search writes nothing


def test_dead_stac_url(tmp_path):
    with socket.socket() as s:  # a loopback port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"http://127.0.0.1:{port}/v1"
    with pytest.raises(FetchError, match=rf"STAC API {url}: cannot be opened"):
        acquire_sentinel2(BBOX, DATES, tmp_path / "out", stac_url=url, retries=1, backoff=0.01)
    assert not (tmp_path / "out").exists()


def test_dead_asset_names_the_url(servers, item, item_dir, tmp_path):
    stac, files = servers
    it = rehost(item, files, item_dir)
    del files.files[f"{ITEM_ID}/B03.tif"]
    stac.items.append(it)
    with pytest.raises(FetchError, match=r"asset 'green'.*/B03\.tif: HTTP 404"):
        _acquire(stac, tmp_path / "out", composite="per-scene")
    assert not (tmp_path / "out" / "scenes" / f"{ITEM_ID}.tif").exists()


def test_503_and_dropped_connections_are_retried(servers, item, item_dir, tmp_path):
    stac, files = servers
    stac.items.append(rehost(item, files, item_dir))
    stac.search_faults.append(503)
    # a HEAD (ours: retried here) and a GET (GDAL's: retried by GDAL) answered 503
    files.faults[f"{ITEM_ID}/B04.tif"] = [("HEAD", 503), ("GET", 503), ("TILE", 503)]
    # a tile read cut off four times: GDAL retries it twice (retries=2), then fails the read,
    # which is retried here after reopening the file
    files.faults[f"{ITEM_ID}/B08.tif"] = [("TILE", "drop")] * 4
    r = _acquire(stac, tmp_path / "out", composite="per-scene")
    with rasterio.open(r.imagery[0]) as ds:
        np.testing.assert_array_equal(ds.read(1), _on_grid(item_dir / "B04.tif", r.grid))
        np.testing.assert_array_equal(ds.read(4), _on_grid(item_dir / "B08.tif", r.grid))
    assert [m for m, p, _ in stac.requests if p == "/search"] == ["POST", "POST"]
    assert not files.faults[f"{ITEM_ID}/B04.tif"] and not files.faults[f"{ITEM_ID}/B08.tif"]
    tiles = [r for m, p, r in files.requests if p.endswith("B08.tif") and r and r[6:8] != "0-"]
    assert len(tiles) == 5


def test_non_cog_asset_is_refused(servers, item, item_dir, tmp_path):
    stac, files = servers
    striped = tmp_path / "striped"
    striped.mkdir()
    for name in BAND_FILES.values():
        with rasterio.open(item_dir / name) as ds:
            profile = ds.profile | {"tiled": False, "blockysize": 8}
            profile.pop("blockxsize")
            with rasterio.open(striped / name, "w", **profile) as dst:
                dst.write(ds.read())
    stac.items.append(rehost(item, files, striped))
    with pytest.raises(FetchError, match=r"B0\d\.tif: is not a cloud-optimized GeoTIFF"):
        _acquire(stac, tmp_path / "out", composite="per-scene")
    html = tmp_path / "html"
    html.mkdir()
    for name in BAND_FILES.values():
        (html / name).write_bytes(b"<html><body>Access denied</body></html>" * 100)
    # (another item id, so other URLs: GDAL caches what it read per URL within a process)
    stac.items[:] = [rehost(item, files, html, id="S2A_29RKH_20200220_0_L2A")]
    with pytest.raises(FetchError, match="not a GeoTIFF"):
        _acquire(stac, tmp_path / "out2", composite="per-scene")
