"""CLI: groundsynth caption and groundsynth evaluate captions."""

from __future__ import annotations

import json

from typer.testing import CliRunner

from groundsynth.cli import app
from tests.caption.chat_server import ChatServer, Reply, closed_port
from tests.caption.dataset import make_dataset, write_dataset_tables

runner = CliRunner()


def test_caption_then_evaluate(tmp_path) -> None:
    root = make_dataset(tmp_path / "ds", {"train": 4, "val": 2})
    res = runner.invoke(
        app, ["caption", str(root), "--no-progress", "-s", "text=template", "--n", "2"]
    )
    assert res.exit_code == 0, res.output
    assert "text_template" in res.output and "captioned" in res.output
    header = (root / "captions" / "train.csv").read_text().splitlines()[0]
    assert header.endswith("Water,text_template,text_template_2")
    out = tmp_path / "eval"
    res = runner.invoke(
        app, ["evaluate", "captions", str(root), "--out", str(out), "--no-progress"]
    )
    assert res.exit_code == 0, res.output
    summary = json.loads((out / "caption_metrics.json").read_text())
    assert summary["captions"] == 12 and summary["streams"] == ["text_template"]
    assert summary["consistency"]["pooled"]["consistent_rate"] == 1.0
    assert "text_template" in res.output and "redund" in res.output and "100.0" in res.output


def test_caption_exit_status_dry_run_and_errors(tmp_path) -> None:
    root = make_dataset(tmp_path / "ds", {"train": 2})
    res = runner.invoke(app, ["caption", str(root), "-s", "hybrid=openai:m", "--dry-run"])
    assert res.exit_code == 0 and "hybrid=openai:m@hybrid_m" in res.output
    res = runner.invoke(app, ["caption", str(root), "-s", "hybrid=gpt:m"])
    assert res.exit_code == 2 and "valid captioners" in res.output
    with ChatServer(lifetime=60) as srv:
        srv.plan = [Reply(500, "down")]
        args = ["caption", str(root), "--no-progress", "-s", "text=openai:m"]
        args += ["--base-url", srv.base_url, "--retries", "0", "--concurrency", "1"]
        res = runner.invoke(app, args)
        assert res.exit_code == 1 and "1 captions failed" in res.output
        res = runner.invoke(app, args)
        assert res.exit_code == 0, res.output


def test_evaluate_captions_of_an_uncaptioned_dataset(tmp_path) -> None:
    root = write_dataset_tables(make_dataset(tmp_path / "ds", {"train": 1}))
    res = runner.invoke(app, ["evaluate", "captions", str(root), "--out", str(tmp_path / "o")])
    assert res.exit_code != 0 and res.exception is not None
    assert isinstance(res.exception, SystemExit), repr(res.exception)
    assert "no captions tables" in res.output and "groundsynth caption" in res.output


def test_caption_with_an_unreachable_base_url_stops_at_once(tmp_path) -> None:
    import time

    root = make_dataset(tmp_path / "ds", {"train": 6, "val": 3})
    url = f"http://127.0.0.1:{closed_port()}/v1"
    args = ["caption", str(root), "--no-progress", "-s", "text=openai:m", "--base-url"]
    start = time.monotonic()
    res = runner.invoke(app, [*args, url, "--retries", "1"])
    assert time.monotonic() - start < 10.0
    assert res.exit_code == 2, res.output
    assert f"{url}: cannot reach the server" in " ".join(res.output.split())
    assert not (root / "captions" / "train.csv").exists()
    with ChatServer(lifetime=60) as srv:  # nothing was recorded: the next run does them all
        res = runner.invoke(app, [*args, srv.base_url])
        assert res.exit_code == 0, res.output
        assert len(srv.requests) == 9
