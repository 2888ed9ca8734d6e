from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import rasterio
from affine import Affine
from rasterio.warp import transform

from groundsynth.classes import CLASS_NAMES, remap_worldcover
from groundsynth.data import chunks as chunks_mod
from groundsynth.data.build import BuildConfig, build_dataset
from groundsynth.data.composition import class_fractions, integer_percentages
from groundsynth.data.contract import METADATA_COLUMNS, PERCENT_COLUMNS
from groundsynth.data.masks import read_mask
from groundsynth.errors import InputError, OutputConflictError
from tests.data.rasters import (
    blocky_codes,
    make_pair,
    random_imagery,
    utm_grid_over,
    write_imagery,
    write_landcover,
)


def _cfg(lc: Path, img: Path, out: Path, **kw) -> BuildConfig:
    kw.setdefault("size", 64)
    return BuildConfig(imagery=(str(img),), landcover=(str(lc),), out=str(out), **kw)


def _tree(root: Path) -> dict[str, bytes]:
    """All dataset files and their bytes, without the run's own records."""
    skip = {"manifest.json", "build.log", "config.yaml"}
    return {
        str(p.relative_to(root)): p.read_bytes()
        for p in sorted(root.rglob("*"))
        if p.is_file() and p.name not in skip and ".build" not in p.parts
    }


@pytest.fixture(scope="module")
def pair(tmp_path_factory) -> tuple[Path, Path]:
    return make_pair(tmp_path_factory.mktemp("pair"))


@pytest.fixture(scope="module")
def built(pair, tmp_path_factory):
    lc, img = pair
    out = tmp_path_factory.mktemp("built") / "ds"
    return build_dataset(_cfg(lc, img, out)), lc, img


def test_masks_equal_independent_point_sampling(built):
    result, lc, _ = built
    md = pd.read_parquet(result.out / "metadata.parquet")
    assert tuple(md.columns) == METADATA_COLUMNS
    assert len(md) == sum(result.counts.values()) > 20
    with rasterio.open(lc) as ds:
        codes = ds.read(1)
        lc_transform = ds.transform
    jj, ii = np.meshgrid(np.arange(64) + 0.5, np.arange(64) + 0.5)
    for _, r in md.sample(8, random_state=0).iterrows():
        xs, ys = Affine(*r["transform"]) * (jj.ravel(), ii.ravel())
        lon, lat = transform(r["crs"], "EPSG:4326", xs, ys)
        fc, fr = ~lc_transform * (np.array(lon), np.array(lat))
        expected = remap_worldcover(codes[np.floor(fr).astype(int), np.floor(fc).astype(int)])
        mask = read_mask(result.out / r["split"] / "masks" / f"{r['id']}.png")
        flat = mask.ravel()
        # GDAL's warper approximates the transform to ~1/100 pixel: pixels whose centre falls
        # that close to a land-cover pixel edge may take the neighbour's class.
        margin = 0.02
        clear = (np.abs(fr - np.rint(fr)) > margin) & (np.abs(fc - np.rint(fc)) > margin)
        np.testing.assert_array_equal(flat[clear], expected[clear])
        assert (flat == expected).mean() > 0.995
        fr = np.array([r[f"frac_{n}"] for n in CLASS_NAMES])
        np.testing.assert_allclose(fr, class_fractions(mask))


def test_tables_agree_with_masks(built):
    result, *_ = built
    for split, n in result.counts.items():
        table = pd.read_csv(result.out / "class_percentages" / f"{split}.csv")
        assert tuple(table.columns) == PERCENT_COLUMNS
        assert len(table) == n
        assert (table[list(CLASS_NAMES)].sum(axis=1) == 100).all()
        for _, row in table.head(5).iterrows():
            mask = read_mask(result.out / split / "masks" / row["filename"])
            expected = integer_percentages(class_fractions(mask))
            assert row[list(CLASS_NAMES)].tolist() == expected.tolist()


def test_run_records(built):
    result, *_ = built
    manifest = json.loads((result.out / "manifest.json").read_text())
    assert manifest["stage"] == "build"
    assert manifest["outputs"]["patches"] == result.counts
    assert "rasterio" in manifest["versions"] and "gdal" in manifest["versions"]
    assert manifest["seeds"] == {"split": 0}
    assert "metadata.parquet" in manifest["outputs"]["files"]
    assert (result.out / "config.yaml").read_text().startswith("imagery:")
    assert (result.out / "build.log").stat().st_size > 0


def test_skip_reasons_are_counted(tmp_path):
    codes = np.full((600, 600), 30, dtype=np.uint8)
    codes[:, :120] = 0  # nodata strip on the west
    codes[300:, 300:] = 80  # a water quadrant
    lc = write_landcover(tmp_path / "lc.tif", codes)
    tr, w, h = utm_grid_over(lc)
    data = random_imagery(4, h, w)
    data[:, :64, :] = 0  # first patch row of imagery is empty
    img = write_imagery(tmp_path / "s2.tif", data, tr)
    result = build_dataset(_cfg(lc, img, tmp_path / "out"))
    sk = result.skipped
    assert sk["imagery_empty"] == w // 64
    assert sk["label_nodata"] >= 1 and sk["water"] >= 1
    total = sum(result.counts.values()) + sum(sk.values())
    assert total == (h // 64) * (w // 64)
    md = pd.read_parquet(tmp_path / "out" / "metadata.parquet")
    assert (md["frac_Water"] <= 0.9).all()


def test_resume_after_interruption_gives_the_same_dataset(pair, tmp_path, monkeypatch):
    lc, img = pair
    full = build_dataset(_cfg(lc, img, tmp_path / "full"))
    calls = {"n": 0}
    real = chunks_mod.process_chunk

    def flaky(plan, chunk, **kw):
        calls["n"] += 1
        if calls["n"] == 4:
            raise KeyboardInterrupt
        return real(plan, chunk, **kw)

    monkeypatch.setattr("groundsynth.data.build.process_chunk", flaky)
    with pytest.raises(KeyboardInterrupt):
        build_dataset(_cfg(lc, img, tmp_path / "resumed"))
    assert not (tmp_path / "resumed" / "metadata.parquet").exists()
    monkeypatch.setattr("groundsynth.data.build.process_chunk", real)
    resumed = build_dataset(_cfg(lc, img, tmp_path / "resumed"))
    assert resumed.chunks_resumed == 3
    assert _tree(tmp_path / "full") == _tree(tmp_path / "resumed")
    assert resumed.counts == full.counts


def test_failed_file_write_leaves_its_chunk_unrecorded_and_resume_repairs_it(
    pair, tmp_path, monkeypatch, built
):
    """File writes run on a thread and records are queued behind them: a failed write
    stops the build with its error, its chunk gets no record, and a rerun redoes it."""
    lc, img = pair
    real = chunks_mod.write_bytes
    failed = []

    def disk_full_once(path, data):
        if not failed and "/masks/" in str(path):
            failed.append(path)
            raise OSError(28, "No space left on device")
        return real(path, data)

    monkeypatch.setattr(chunks_mod, "write_bytes", disk_full_once)
    out = tmp_path / "ds"
    with pytest.raises(OSError, match="No space left"):
        build_dataset(_cfg(lc, img, out))
    assert failed and not (out / "metadata.parquet").exists()
    monkeypatch.setattr(chunks_mod, "write_bytes", real)
    resumed = build_dataset(_cfg(lc, img, out))
    assert resumed.chunks_resumed < resumed.chunks_total  # the failed chunk was redone
    assert _tree(out) == _tree(built[0].out)  # (had it been recorded, its mask would lack)


def test_two_workers_give_the_same_dataset(pair, tmp_path, built):
    lc, img = pair
    build_dataset(_cfg(lc, img, tmp_path / "w2", workers=2))
    assert _tree(tmp_path / "w2") == _tree(built[0].out)


def test_this_process_works_beside_its_children(pair, tmp_path, monkeypatch):
    """With N workers this process processes chunks too (its children start slower)."""
    lc, img = pair
    import groundsynth.data.build as build_mod

    calls = []
    real = build_mod.process_chunk

    def counting(plan, chunk, **kw):
        calls.append(chunk.key)
        return real(plan, chunk, **kw)

    monkeypatch.setattr(build_mod, "process_chunk", counting)  # not seen by spawned children
    seen = []
    one = build_dataset(_cfg(lc, img, tmp_path / "w1", chunk_patches=1))
    calls.clear()
    three = build_dataset(
        _cfg(lc, img, tmp_path / "w3", chunk_patches=1, workers=3),
        progress=lambda done, total, written: seen.append((done, total)),
    )
    assert 1 <= len(calls) <= three.chunks_total and len(set(calls)) == len(calls)
    assert seen[-1] == (three.chunks_total, three.chunks_total)
    assert _tree(tmp_path / "w3") == _tree(tmp_path / "w1")
    assert three.counts == one.counts


def test_output_conflicts_are_refused_without_damage(pair, tmp_path):
    lc, img = pair
    out = tmp_path / "ds"
    build_dataset(_cfg(lc, img, out))
    before = _tree(out)
    with pytest.raises(OutputConflictError, match="options differ: .*size"):
        build_dataset(_cfg(lc, img, out, size=32))
    assert _tree(out) == before
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine")
    with pytest.raises(OutputConflictError, match="holds no groundsynth build"):
        build_dataset(_cfg(lc, img, foreign))
    assert sorted(p.name for p in foreign.iterdir()) == ["notes.txt"]


def test_bad_inputs_name_the_file(pair, tmp_path):
    lc, img = pair
    # no CRS
    nocrs = tmp_path / "nocrs.tif"
    with rasterio.open(
        nocrs, "w", driver="GTiff", width=64, height=64, count=4, dtype="uint16"
    ) as dst:
        dst.write(random_imagery(4, 64, 64))
    with pytest.raises(InputError, match="nocrs.tif.*no CRS"):
        build_dataset(_cfg(lc, nocrs, tmp_path / "o1"))
    # no overlap: imagery far away
    far = write_imagery(
        tmp_path / "far.tif", random_imagery(4, 128, 128), Affine(10, 0, 200000, 0, -10, 1000000)
    )
    with pytest.raises(InputError, match="far.tif: no overlap"):
        build_dataset(_cfg(lc, far, tmp_path / "o2"))
    # unsupported band count and dtype
    tr, *_ = utm_grid_over(lc)
    two = write_imagery(tmp_path / "two.tif", random_imagery(2, 128, 128), tr)
    with pytest.raises(InputError, match="two.tif: unsupported band count 2"):
        build_dataset(_cfg(lc, two, tmp_path / "o3"))
    i8 = write_imagery(tmp_path / "i8.tif", np.ones((4, 128, 128), np.int8), tr)
    with pytest.raises(InputError, match="i8.tif: unsupported data type int8"):
        build_dataset(_cfg(lc, i8, tmp_path / "o4"))
    # corrupt and truncated files
    junk = tmp_path / "junk.tif"
    junk.write_bytes(b"II*\x00" + b"\x00garbage" * 50)
    with pytest.raises(InputError, match="junk.tif"):
        build_dataset(_cfg(lc, junk, tmp_path / "o5"))
    cut = tmp_path / "cut.tif"
    data = img.read_bytes()
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(InputError, match="cut.tif.*(corrupt|truncated)"):
        build_dataset(_cfg(lc, cut, tmp_path / "o6"))
    for o in ("o1", "o2", "o3", "o4", "o5", "o6"):
        assert not (tmp_path / o).exists()


def _write_product(folder: Path, lc: Path, *, offset_tag: bool = False) -> dict[str, np.ndarray]:
    """A one-file-per-band product: 10 m B02/B03/B04/B08, 20 m B8A."""
    folder.mkdir()
    tr, w, h = utm_grid_over(lc)
    w, h = w - w % 2, h - h % 2
    bands = {}
    for k, b in enumerate(("B02", "B03", "B04", "B08")):
        data = np.full((1, h, w), 2000 + 100 * k, dtype=np.uint16)
        bands[b] = data
        write_imagery(folder / f"T36_20230101_{b}.tif", data, tr)
    coarse = np.full((1, h // 2, w // 2), 3000, dtype=np.uint16)
    write_imagery(folder / "T36_20230101_B8A.tif", coarse, tr * Affine.scale(2))
    if offset_tag:
        for b in ("B02", "B03", "B04", "B08"):
            with rasterio.open(folder / f"T36_20230101_{b}.tif", "r+") as ds:
                ds.update_tags(BOA_ADD_OFFSET="-1000", BOA_QUANTIFICATION_VALUE="10000")
    return bands


def test_band_per_file_product_with_coarse_band(pair, tmp_path):
    lc, _ = pair
    _write_product(tmp_path / "prod", lc)
    cfg = _cfg(
        lc, tmp_path / "prod", tmp_path / "out", bands=("B04", "B03", "B02", "B8A"), keep_nir=True
    )
    result = build_dataset(cfg)
    md = pd.read_parquet(result.out / "metadata.parquet")
    assert (md["source"] == "T36_20230101").all()
    r = md.iloc[0]
    with rasterio.open(result.out / r["split"] / "images_nir" / f"{r['id']}.tif") as ds:
        assert ds.crs.to_epsg() == 32636
        assert tuple(ds.transform)[:6] == pytest.approx(tuple(r["transform"]))
        refl = ds.read()
    assert refl[0].mean() == 2200 and refl[2].mean() == 2000  # red = B04, blue = B02
    assert refl[3].mean() == pytest.approx(3000, abs=1)  # 20 m B8A resampled to 10 m


def test_boa_add_offset_is_applied(pair, tmp_path):
    lc, _ = pair
    _write_product(tmp_path / "prod", lc, offset_tag=True)
    result = build_dataset(_cfg(lc, tmp_path / "prod", tmp_path / "out", keep_nir=True))
    r = pd.read_parquet(result.out / "metadata.parquet").iloc[0]
    with rasterio.open(result.out / r["split"] / "images_nir" / f"{r['id']}.tif") as ds:
        refl = ds.read()
    # (DN - 1000) / 10000 stored x 10000: B04 = 2200 -> 1200, B08 = 2300 -> 1300
    assert refl[0].mean() == 1200 and refl[3].mean() == 1300


@pytest.mark.parametrize("scaling", ["reflectance", "percentile", "patch-max"])
def test_scalings_are_recorded(pair, tmp_path, scaling):
    lc, img = pair
    result = build_dataset(_cfg(lc, img, tmp_path / "out", scaling=scaling))
    md = pd.read_parquet(result.out / "metadata.parquet")
    info = json.loads(md["scaling"].iloc[0])
    assert info["method"] == scaling
    r = md.iloc[0]
    from PIL import Image

    image = np.asarray(Image.open(result.out / r["split"] / "images" / f"{r['id']}.png"))
    assert image.shape == (64, 64, 3) and image.dtype == np.uint8
    if scaling == "patch-max":
        assert image.max() == 255
    if scaling == "percentile":  # the default percentiles, 2 and 98, of the source's bands
        with rasterio.open(img) as ds:
            refl = ds.read([1, 2, 3]).astype(np.float64) * 1e-4  # no nodata pixel here
        assert info["lo"] == pytest.approx(np.percentile(refl, 2, axis=(1, 2)).tolist(), abs=1e-6)
        assert info["hi"] == pytest.approx(np.percentile(refl, 98, axis=(1, 2)).tolist(), abs=1e-6)


def test_split_by_source_holds_out_regions(tmp_path):
    lc = write_landcover(tmp_path / "lc.tif", blocky_codes(600))
    tr, w, h = utm_grid_over(lc)
    west = write_imagery(tmp_path / "west.tif", random_imagery(4, h, w // 2), tr)
    east_tr = tr * Affine.translation(w // 2, 0)
    east = write_imagery(tmp_path / "east.tif", random_imagery(4, h, w // 2, 1), east_tr)
    cfg = BuildConfig(
        imagery=(str(west), str(east)),
        landcover=(str(lc),),
        out=str(tmp_path / "out"),
        size=64,
        split_by="source",
        assign=(("east", "test"),),
    )
    result = build_dataset(cfg)
    md = pd.read_parquet(result.out / "metadata.parquet")
    assert set(md.loc[md.source == "east", "split"]) == {"test"}
    assert set(md.loc[md.source == "west", "split"]) == {"train"}
    assert result.leakage["train_test_touching_pairs"] == 0


def test_blocked_splits_are_deterministic_and_spatial(tmp_path):
    lc = write_landcover(tmp_path / "lc.tif", np.full((1500, 1500), 30, np.uint8))
    tr, w, h = utm_grid_over(lc)
    img = write_imagery(tmp_path / "s2.tif", random_imagery(4, h, w), tr)
    result = build_dataset(_cfg(lc, img, tmp_path / "out", size=32, block_size=4))
    md = pd.read_parquet(result.out / "metadata.parquet")
    assert set(md["split"]) == {"train", "val", "test"}
    # every 4x4 block of patches is in one split
    blocks = md.groupby([md["row"] // 4, md["col"] // 4])["split"].nunique()
    assert (blocks == 1).all()
    share = md["split"].value_counts(normalize=True)
    assert 0.6 < share["train"] < 0.95
    assert result.leakage["test_patches"] == (md["split"] == "test").sum()


def test_leakage_counts_test_patches_touching_train_on_a_hand_layout():
    """Source ``a`` (t: train, v: val, T: test)::

        row 0:  t t T .
        row 1:  t v T T
        row 2:  . . t .
        row 3:  T . . .        row 5: t (two rows below: does not touch)

    (0,2) touches train (0,1); (1,2) touches (0,1) by a corner and (2,2) by an edge; (1,3)
    touches (2,2) by a corner; (3,0) touches nothing; val never counts. Source ``b``'s train
    patch at (0,3) is in another grid: it does not touch ``a``'s tests."""
    from groundsynth.data.splits import leakage

    layout = {
        (0, 0): "train", (0, 1): "train", (0, 2): "test",
        (1, 0): "train", (1, 1): "val", (1, 2): "test", (1, 3): "test",
        (2, 2): "train", (3, 0): "test", (5, 0): "train",
    }  # fmt: skip
    patches = [("a", r, c, s) for (r, c), s in layout.items()]
    patches += [("b", 0, 3, "train"), ("b", 5, 5, "test")]
    assert leakage(patches) == {
        "train_test_touching_pairs": 1 + 2 + 1,
        "test_patches_touching_train": 3,
        "test_patches": 5,
        "test_touching_fraction": 0.6,
    }
    assert leakage(iter(patches[::-1])) == leakage(patches)  # order does not matter
    assert leakage([("a", 0, 0, "train")])["test_touching_fraction"] == 0.0  # no test patch


def test_sentinel2_13_band_stack_defaults_to_b4_b3_b2_b8(pair, tmp_path):
    lc, _ = pair
    tr, w, h = utm_grid_over(lc)
    data = np.stack([np.full((h, w), 100 * (b + 1), np.uint16) for b in range(13)])
    img = write_imagery(tmp_path / "l1c.tif", data, tr)
    result = build_dataset(_cfg(lc, img, tmp_path / "out", keep_nir=True))
    r = pd.read_parquet(result.out / "metadata.parquet").iloc[0]
    with rasterio.open(result.out / r["split"] / "images_nir" / f"{r['id']}.tif") as ds:
        refl = ds.read()
    # 13-band order B01..B08, B8A, B09..B12: red = 4th band, green 3rd, blue 2nd, NIR 8th
    assert [int(refl[k].mean()) for k in range(4)] == [400, 300, 200, 800]


def test_kill_9_then_rerun_gives_the_same_dataset(tmp_path):
    import os
    import signal
    import subprocess
    import sys
    import time

    lc = write_landcover(tmp_path / "lc.tif", blocky_codes(1000))
    tr, w, h = utm_grid_over(lc)
    img = write_imagery(tmp_path / "s2.tif", random_imagery(4, h, w), tr)
    args = ["build", "-i", str(img), "-l", str(lc), "--size", "32", "--no-progress"]
    cmd = [sys.executable, "-m", "groundsynth", *args]
    subprocess.run([*cmd, "-o", str(tmp_path / "full")], check=True, capture_output=True)
    proc = subprocess.Popen([*cmd, "-o", str(tmp_path / "killed")], stdout=subprocess.DEVNULL)
    records = tmp_path / "killed" / ".build" / "chunks"
    deadline = time.time() + 60
    while time.time() < deadline and proc.poll() is None:
        if records.is_dir() and len(list(records.iterdir())) >= 3:
            os.kill(proc.pid, signal.SIGKILL)
            break
        time.sleep(0.005)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL, "the build finished before it could be killed"
    assert not (tmp_path / "killed" / "metadata.parquet").exists()
    subprocess.run([*cmd, "-o", str(tmp_path / "killed")], check=True, capture_output=True)
    assert _tree(tmp_path / "full") == _tree(tmp_path / "killed")
    leftovers = [p for p in (tmp_path / "killed").rglob(".*") if p.is_file()]
    assert leftovers == []  # temporaries of the killed run were removed on resume


def test_land_cover_tiles_are_mosaicked_across_borders(pair, tmp_path, built):
    lc, img = pair
    with rasterio.open(lc) as ds:
        codes, t = ds.read(1), ds.transform
    half = codes.shape[1] // 2
    tiles = tmp_path / "tiles"
    tiles.mkdir()
    # two tiles that meet in the middle of the imagery: east is named first on purpose
    write_landcover(tiles / "b_west.tif", np.ascontiguousarray(codes[:, :half]), lon=t.c, lat=t.f)
    write_landcover(
        tiles / "a_east.tif", np.ascontiguousarray(codes[:, half:]), lon=t.c + half * t.a, lat=t.f
    )
    result = build_dataset(
        BuildConfig(imagery=(str(img),), landcover=(str(tiles),), out=str(tmp_path / "o"), size=64)
    )
    ref = _tree(built[0].out)
    got = _tree(result.out)
    assert set(got) == set(ref)
    same = total = 0
    for k in (k for k in ref if "/masks/" in k):
        a = read_mask(built[0].out / k)
        b = read_mask(result.out / k)
        same += (a == b).sum()
        total += a.size
    # identical labels across the tile border, up to GDAL's ~1/100-pixel warp approximation
    # (a pixel centre within that distance of a land-cover pixel edge may take the neighbour)
    assert same / total > 0.9999
    md = pd.read_parquet(result.out / "metadata.parquet")
    assert (md["landcover"].str.contains(";")).any()  # some patches straddle both tiles
