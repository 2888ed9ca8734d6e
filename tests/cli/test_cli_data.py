from __future__ import annotations

import subprocess
import sys

import pytest
from typer.testing import CliRunner

from groundsynth.cli import app
from tests.data.rasters import make_pair

runner = CliRunner()


def _commands(typer_app, prefix=()):
    import typer.main

    group = typer.main.get_command(typer_app)
    stack = [(prefix, group)]
    while stack:
        path, cmd = stack.pop()
        sub = getattr(cmd, "commands", None)
        if sub:
            stack.extend(((*path, name), c) for name, c in sub.items())
        else:
            yield path


def test_python_m_help():
    res = subprocess.run(
        [sys.executable, "-m", "groundsynth", "--help"], capture_output=True, text=True
    )
    assert res.returncode == 0 and "build" in res.stdout


@pytest.mark.parametrize("path", sorted(_commands(app)), ids=lambda p: " ".join(p))
def test_every_command_help_has_an_example(path):
    res = runner.invoke(app, [*path, "--help"], terminal_width=200)
    assert res.exit_code == 0, res.output
    assert "Example" in res.output


def test_build_then_validate(tmp_path):
    lc, img = make_pair(tmp_path)
    out = tmp_path / "ds"
    res = runner.invoke(
        app,
        ["build", "-i", str(img), "-l", str(lc), "-o", str(out), "--size", "64", "--no-progress"],
    )
    assert res.exit_code == 0, res.output
    assert "train" in res.output and "skipped patches" in res.output
    res = runner.invoke(app, ["validate", str(out), "--no-progress"])
    assert res.exit_code == 0, res.output
    assert "no problems" in res.output
    # damage a mask: validate must fail with status 1
    mask = next((out / "train" / "masks").iterdir())
    mask.write_bytes(b"not a png")
    res = runner.invoke(app, ["validate", str(out), "--no-progress"])
    assert res.exit_code == 1
    assert mask.name in res.output


def test_errors_are_one_line_with_status_2(tmp_path):
    lc, _ = make_pair(tmp_path)
    res = runner.invoke(
        app,
        ["build", "-i", str(tmp_path / "missing.tif"), "-l", str(lc), "-o", str(tmp_path / "o")],
    )
    assert res.exit_code == 2
    assert "missing.tif: no such" in res.output
    assert "Traceback" not in res.output


def test_dry_run_prints_resolved_config(tmp_path):
    lc, img = make_pair(tmp_path)
    res = runner.invoke(
        app, ["build", "-i", str(img), "-l", str(lc), "-o", str(tmp_path / "o"), "--dry-run"]
    )
    assert res.exit_code == 0
    assert "stride: 256" in res.output and "png_encoder:" in res.output
    assert "percentiles:\n- 2.0\n- 98.0\n" in res.output  # --scaling percentile's default
    assert not (tmp_path / "o").exists()


def test_demo_runs_end_to_end_at_a_tiny_size(tmp_path):
    out = tmp_path / "demo"
    args = [
        "demo", "--out", str(out), "--size", "1024", "--patch-size", "64", "--workers", "1",
        "--experiment-size", "512", "--preset", "tiny", "--seeds", "2", "--min-label-fidelity", "0", "--no-progress",
    ]  # fmt: skip
    res = runner.invoke(app, args)
    assert res.exit_code == 0, res.output
    assert (out / "dataset" / "metadata.parquet").exists()
    assert "no problems" in res.output and "template captions" in res.output
    assert "cross-region (B)" in res.output and "sign-flip p" in res.output
    assert "retrieval, cross-region (B): " in res.output and "mR points" in res.output
    page = (out / "report.html").read_text()
    for section in (
        "Dataset: dataset",
        "Captions:",
        "Experiment: grounded vs ungrounded",
        "Grounded − ungrounded (paired by seed)",
        "The synthetic sets",
        "Synthetic data:",
        "Image–text retrieval (CLIP-style dual encoder)",
    ):
        assert section in page
    assert "WorldCover" in page and "<script" not in page.lower()
    res = runner.invoke(app, args)  # rerun resumes every step
    assert res.exit_code == 0, res.output
