"""``groundsynth acquire worldcover`` through typer's CliRunner, against a loopback mirror."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from groundsynth.acquire.tiles import MAP, S2RGBNIR
from groundsynth.cli import app
from tests.acquire.mirror import Mirror, serve_mirror
from tests.acquire.tiles import write_tiles

runner = CliRunner()
BBOX = "6.1,0.5,6.12,0.52"
FAST = ["--retries", "1", "--backoff", "0.001", "--no-progress"]


@pytest.fixture
def mirror(tmp_path: Path) -> Iterator[Mirror]:
    root = tmp_path / "mirror"
    for product in (MAP, S2RGBNIR):
        write_tiles(root, product, 2021, [(6.1, 0.5, 6.12, 0.52)])
    yield from serve_mirror(root)


def test_help_teaches_with_examples_and_cost():
    res = runner.invoke(app, ["acquire", "worldcover", "--help"], terminal_width=200)
    assert res.exit_code == 0, res.output
    for words in ("Example", "Cost", "--with-s2", "--dry-run", "groundsynth build", "resume"):
        assert words in res.output
    res = runner.invoke(app, ["acquire", "--help"], terminal_width=200)
    assert res.exit_code == 0 and "worldcover" in res.output


def test_acquire_with_s2_then_build(mirror, tmp_path):
    out = tmp_path / "area"
    args = ["acquire", "worldcover", "--bbox", BBOX, "--with-s2", "--out", str(out)]
    args += ["--base-url", mirror.base_url, "--s2-base-url", mirror.base_url, *FAST]
    res = runner.invoke(app, args, terminal_width=200)
    assert res.exit_code == 0, res.output
    assert "worldcover_2021_v200_map.tif" in res.output and "next: groundsynth build" in res.output
    manifest = json.loads((out / "manifest.json").read_text())
    assert {f["tile"] for f in manifest["remote_files"]} == {"N00E006"}
    res = runner.invoke(
        app,
        [
            "build",
            "-i",
            str(out / "imagery"),
            "-l",
            str(out / "landcover"),
            "-o",
            str(tmp_path / "ds"),
            "--size",
            "64",
            "--no-progress",
        ],
    )
    assert res.exit_code == 0, res.output
    assert list((tmp_path / "ds").rglob("masks/*.png"))


def test_dry_run_fetches_and_writes_nothing(mirror, tmp_path):
    out = tmp_path / "area"
    args = ["acquire", "worldcover", "--bbox", BBOX, "--with-s2", "--out", str(out), "--dry-run"]
    res = runner.invoke(app, [*args, "--base-url", mirror.base_url], terminal_width=300)
    assert res.exit_code == 0, res.output
    assert "240 x 240 pixels" in res.output and "N00E006" in res.output
    assert f"{mirror.base_url}/v200/2021/map/" in res.output
    assert "rgbnir/2021/N00/ESA_WorldCover_10m_2021_v200_N00E006_S2RGBNIR.tif" in res.output
    assert mirror.requests == [] and not out.exists()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--bbox", "-30,0,-29.9,0.1"], "N00W030"),
        (["--bbox", "6.2,0.5,6.1,0.6"], "less than east"),
        (["--bbox", BBOX, "--year", "2019"], "2020, 2021"),
        ([], "exactly one of --bbox"),
    ],
)
def test_errors_are_one_clear_line_and_exit_2(mirror, tmp_path, args, message):
    base = ["acquire", "worldcover", "--out", str(tmp_path / "area"), *FAST]
    res = runner.invoke(app, [*base, "--base-url", mirror.base_url, *args], terminal_width=400)
    assert res.exit_code == 2, res.output
    assert "error:" in res.output and message in res.output
    assert "Traceback" not in res.output
