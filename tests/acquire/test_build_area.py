"""``groundsynth build --bbox``: from an area to a dataset in one command (loopback mirror)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import rasterio
import yaml
from typer.testing import CliRunner

from groundsynth.acquire.area_dataset import area_build_config, build_from_area
from groundsynth.acquire.tiles import MAP, S2RGBNIR
from groundsynth.cli import app
from groundsynth.data.build import BuildConfig, build_dataset
from groundsynth.errors import InputError
from tests.acquire.mirror import Mirror, serve_mirror
from tests.acquire.tiles import write_tiles

runner = CliRunner()
AREA = (6.1, 0.5, 6.14, 0.54)  # 480 x 480 pixels inside tiles N00E006
BBOX = ",".join(map(str, AREA))
FAST = {"retries": 1, "backoff": 0.001, "timeout": 10.0}


@pytest.fixture
def mirror(tmp_path: Path) -> Iterator[Mirror]:
    root = tmp_path / "mirror"
    for product in (MAP, S2RGBNIR):
        write_tiles(root, product, 2021, [AREA])
    yield from serve_mirror(root)


def _cli(mirror: Mirror, out: Path, *extra: str):
    args = ["build", "--bbox", BBOX, "--year", "2021", "-o", str(out), "--size", "64"]
    args += ["--base-url", mirror.base_url, "--s2-base-url", mirror.base_url, "--no-progress"]
    return runner.invoke(app, [*args, *extra], terminal_width=200)


def test_one_command_from_an_area_to_a_dataset_then_resume(mirror, tmp_path):
    out = tmp_path / "ds"
    res = _cli(mirror, out)
    assert res.exit_code == 0, res.output
    assert "acquired map: 1 tile(s), s2rgbnir: 1 tile(s)" in res.output
    md = pd.read_parquet(out / "metadata.parquet")
    assert len(md) > 10 and set(md["split"]) <= {"train", "val", "test"}
    # the dataset was cut from the acquired rasters, which it keeps in OUT/source
    cfg = yaml.safe_load((out / "config.yaml").read_text())
    assert cfg["imagery"] == [str(out / "source/imagery/worldcover_2021_v200_s2rgbnir.tif")]
    assert cfg["landcover"] == [str(out / "source/landcover/worldcover_2021_v200_map.tif")]
    acquired = json.loads((out / "source" / "manifest.json").read_text())
    assert {f["tile"] for f in acquired["remote_files"]} == {"N00E006"}
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["outputs"]["leakage"]["test_patches_touching_train"] == 0
    # a patch's mask is the acquired map, remapped, at that patch's window
    row = md.iloc[0]
    with rasterio.open(cfg["landcover"][0]) as lc:
        codes = lc.read(1)[row["row"] * 64 : row["row"] * 64 + 64, row["col"] * 64 :][:, :64]
    from groundsynth.classes import remap_worldcover
    from groundsynth.data.masks import read_mask

    split = row["split"]
    np.testing.assert_array_equal(
        read_mask(out / split / "masks" / f"{row['id']}.png"), remap_worldcover(codes)
    )
    # the rerun resumes both steps: no window is fetched again, nothing is rebuilt
    gets = len(mirror.gets())
    before = {p: p.stat().st_mtime_ns for p in (out / split / "images").iterdir()}
    res = _cli(mirror, out)
    assert res.exit_code == 0, res.output
    assert len(mirror.gets()) == gets
    assert {p: p.stat().st_mtime_ns for p in (out / split / "images").iterdir()} == before


def test_python_api_gives_the_dataset_of_acquire_then_build(mirror, tmp_path):
    acquired, built = build_from_area(
        tmp_path / "one",
        bbox=AREA,
        base_url=mirror.base_url,
        s2_base_url=mirror.base_url,
        acquire=FAST,
        build={"size": 64},
    )
    direct = build_dataset(
        BuildConfig(
            imagery=(str(acquired.imagery),),
            landcover=(str(acquired.landcover),),
            out=str(tmp_path / "two"),
            size=64,
        )
    )
    assert built.counts == direct.counts and built.class_share == direct.class_share
    a = pd.read_parquet(built.out / "metadata.parquet").drop(columns=["source"], errors="ignore")
    b = pd.read_parquet(direct.out / "metadata.parquet").drop(columns=["source"], errors="ignore")
    pd.testing.assert_frame_equal(a, b)


def _words(output: str) -> str:
    """The output's words, without rich's box drawing and line wrapping."""
    return " ".join(output.replace("│", " ").split())


def test_area_and_files_are_exclusive(mirror, tmp_path):
    res = _cli(mirror, tmp_path / "ds", "-i", str(tmp_path / "x.tif"))
    assert res.exit_code == 2, res.output
    assert "--bbox/--geojson or --imagery/--landcover, not both" in _words(res.output)
    assert not (tmp_path / "ds").exists()
    res = runner.invoke(app, ["build", "-o", str(tmp_path / "ds")], terminal_width=200)
    assert res.exit_code == 2 and "or an area with --bbox W,S,E,N" in _words(res.output)
    with pytest.raises(InputError, match="sets imagery itself"):
        area_build_config(tmp_path / "ds", 2021, imagery=("x.tif",))


def test_build_refuses_a_folder_with_other_content_but_accepts_source(tmp_path):
    from groundsynth.errors import OutputConflictError
    from groundsynth.runs import check_run_dir

    (tmp_path / "ok" / "source").mkdir(parents=True)
    assert check_run_dir(tmp_path / "ok", {"a": 1}, what="build", allow=("source",)) is False
    (tmp_path / "ok" / "other").mkdir()
    with pytest.raises(OutputConflictError, match="holds no build"):
        check_run_dir(tmp_path / "ok", {"a": 1}, what="build", allow=("source",))
