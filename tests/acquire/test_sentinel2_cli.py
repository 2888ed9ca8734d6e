"""``groundsynth acquire sentinel2`` through typer's CliRunner."""

from __future__ import annotations

import json
import re

import pytest
import typer
from typer.testing import CliRunner

from groundsynth.cli.acquire_sentinel2 import register
from tests.acquire import stac_server
from tests.acquire.stac_server import ITEM_ID, rehost
from tests.acquire.test_sentinel2 import BBOX

runner = CliRunner()
item_dir, item, servers = stac_server.item_dir, stac_server.item, stac_server.servers


def _app() -> typer.Typer:
    """The ``acquire`` group with this command, as groundsynth.cli.acquire builds it."""
    app = typer.Typer(rich_markup_mode="markdown")

    @app.callback()
    def _acquire() -> None:
        """Acquire public imagery."""

    register(app)
    return app


def _plain(text: str) -> str:
    return " ".join(re.sub(r"\x1b\[[0-9;]*m|[│╭╮╰╯─]", " ", text).split())


def test_help_teaches_with_an_example_and_the_cost():
    res = runner.invoke(_app(), ["sentinel2", "--help"], env={"COLUMNS": "200"})
    assert res.exit_code == 0, res.output
    text = _plain(res.output)
    assert "groundsynth acquire sentinel2 --bbox" in text
    assert "What it costs" in text and "range requests" in text
    for option in ("--bbox", "--dates", "--max-cloud", "--stac-url", "--composite", "--bands"):
        assert option in text


def test_bad_arguments_are_one_clear_line(tmp_path):
    args = ["sentinel2", "--bbox", "10,41,11,40", "--dates", "2021-06-01/2021-06-30"]
    res = runner.invoke(_app(), [*args, "--out", str(tmp_path / "o")])
    assert res.exit_code == 2
    assert "error:" in res.output and "S < N" in res.output
    assert not (tmp_path / "o").exists()


def test_dry_run_prints_config_and_grid(tmp_path):
    args = ["sentinel2", "--bbox", "32.8,39.85,32.9,39.95", "--dates", "2021-06-01/2021-08-31"]
    res = runner.invoke(_app(), [*args, "--out", str(tmp_path / "o"), "--dry-run"])
    assert res.exit_code == 0, res.output
    assert "stac_url: https://earth-search.aws.element84.com/v1" in res.output
    assert "crs: EPSG:32636" in res.output
    assert not (tmp_path / "o").exists()


@pytest.mark.realdata
def test_cli_acquires_and_reports(servers, item, item_dir, tmp_path):
    stac, files = servers
    stac.items.append(rehost(item, files, item_dir))
    out = tmp_path / "s2"
    base = ["sentinel2", "--bbox", ",".join(f"{v:.6f}" for v in BBOX), "--out", str(out)]
    base += ["--stac-url", stac.base, "--resolution", "100", "--retries", "1", "--no-progress"]
    res = runner.invoke(_app(), [*base, "--dates", "2020-02-01/2020-02-29"], env={"COLUMNS": "200"})
    assert res.exit_code == 0, res.output
    text = _plain(res.output)
    assert ITEM_ID in text and "without a clear observation" in text
    assert f"groundsynth build -i {out / 'composite.tif'}" in text
    assert json.loads((out / "manifest.json").read_text())["outputs"]["imagery"] == [
        "composite.tif"
    ]
    res = runner.invoke(
        _app(), [*base, "--dates", "2021-02-01/2021-02-28", "-o", str(tmp_path / "x")]
    )
    assert res.exit_code == 2 and "no items found" in _plain(res.output)


def test_groundsynth_acquire_sentinel2_is_wired():
    """Once groundsynth.cli.acquire exists, ``groundsynth acquire sentinel2`` is this command."""
    pytest.importorskip("groundsynth.cli.acquire")
    from groundsynth.cli import app

    res = runner.invoke(app, ["acquire", "sentinel2", "--help"], env={"COLUMNS": "200"})
    assert res.exit_code == 0, res.output
    assert "What it costs" in _plain(res.output)
