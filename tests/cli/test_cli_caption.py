"""CLI: groundsynth caption and groundsynth evaluate captions."""

from __future__ import annotations

import json

from typer.testing import CliRunner

from groundsynth.cli import app
from tests.caption.chat_server import ChatServer, Reply
from tests.caption.dataset import make_dataset

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
