"""Captioning a dataset: the wide table, the journal, failures, resuming, kill -9."""

from __future__ import annotations

import json
import os
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from groundsynth.caption import TemplateCaptioner, facts_from_mask
from groundsynth.caption.journal import CaptionJournal
from groundsynth.caption.run import (
    CaptionRunConfig,
    StreamSpec,
    caption_dataset,
    model_label,
    rebuild_tables,
)
from groundsynth.classes import CLASS_NAMES
from groundsynth.data.masks import read_mask
from groundsynth.errors import InputError, OutputConflictError
from tests.caption.chat_server import ChatServer, Reply
from tests.caption.dataset import make_dataset

KEY = "sk-run-SECRET-9876543210"


def test_stream_specs_and_column_names() -> None:
    s = StreamSpec.parse("hybrid=openai:gemma3:4b")
    assert (s.stream, s.backend, s.model, s.column) == (
        "hybrid",
        "openai",
        "gemma3:4b",
        "hybrid_gemma3-4b",
    )
    s = StreamSpec.parse("vision=transformers:Qwen/Qwen3-VL-8B@vision_qwen3-vl-8b")
    assert s.model == "Qwen/Qwen3-VL-8B" and s.column == "vision_qwen3-vl-8b"
    assert StreamSpec.parse("text=template").column == "text_template"
    assert model_label("/models/qwen3-4b/") == "qwen3-4b"
    assert model_label("hf.co/org/X:Q4_K_M") == "x-q4_k_m"
    for bad, match in [
        ("text", "STREAM=BACKEND"),
        ("audio=template", "valid streams"),
        ("text=gpt", "valid captioners"),
        ("text=openai", "needs a model"),
        ("text=template:x", "takes no model"),
        ("text=template@Tree", "bad column"),
        ("text=template@text_2", "bad column"),
    ]:
        with pytest.raises(InputError, match=match):
            StreamSpec.parse(bad)
    with pytest.raises(InputError, match="name one with @COLUMN"):
        CaptionRunConfig("d", (StreamSpec.parse("text=template"),) * 2)
    with pytest.raises(InputError, match="temperature > 0"):
        CaptionRunConfig("d", (StreamSpec.parse("text=openai:m"),), n=2)


def test_template_run_writes_the_wide_table_and_resumes(tmp_path: Path) -> None:
    root = make_dataset(tmp_path / "ds")
    streams = (StreamSpec.parse("text=template"), StreamSpec.parse("hybrid=template@a_first"))
    seen = []
    cfg = CaptionRunConfig(str(root), streams, n=2, seed=3, batch_size=4)
    res = caption_dataset(cfg, progress=lambda d, t, i: seen.append((d, t)))
    assert seen[-1] == (9, 9) and res.failed == 0
    assert res.counts["train"]["text_template"] == {
        "captioned": 6,
        "failed": 0,
        "done_before": 0,
        "missing": 0,
    }
    df = pd.read_csv(root / "captions" / "train.csv", dtype={"filename": str})
    assert list(df.columns) == [
        "filename",
        "split",
        *CLASS_NAMES,
        "a_first",
        "a_first_2",
        "text_template",
        "text_template_2",
    ]  # columns sorted by name, as ARAS400k's
    assert len(df) == 6 and df["filename"].is_unique
    cap = TemplateCaptioner()
    for row in df.itertuples(index=False):
        sid = row.filename[:-4]
        facts = facts_from_mask(read_mask(root / "train" / "masks" / f"{sid}.png"), sid)
        assert list(row[2:9]) == list(facts.percentages)
        assert [row.text_template, row.text_template_2] == cap.caption(facts, n=2, seed=3, key=sid)
    # the run directory says how the table was made
    manifest = json.loads((root / "captions" / "run" / "manifest.json").read_text())
    assert manifest["stage"] == "caption" and manifest["seeds"] == {"seed": 3}
    assert "train.csv" in str(manifest["outputs"]["files"])
    before = (root / "captions" / "train.csv").read_bytes()
    again = caption_dataset(cfg)
    assert again.counts["train"]["text_template"]["done_before"] == 6
    assert again.counts["train"]["text_template"]["captioned"] == 0
    assert (root / "captions" / "train.csv").read_bytes() == before
    # the same column with other settings is refused; a new column is added beside
    with pytest.raises(OutputConflictError, match=r"seed: 3 -> 4"):
        caption_dataset(CaptionRunConfig(str(root), streams[:1], n=2, seed=4))
    caption_dataset(
        CaptionRunConfig(str(root), (StreamSpec.parse("text=template@text_b"),), splits=("val",))
    )
    val = pd.read_csv(root / "captions" / "val.csv")
    assert {"text_template", "text_template_2", "text_b"} <= set(val.columns)


def test_ctrl_c_writes_the_tables_of_what_was_captioned(tmp_path: Path) -> None:
    root = make_dataset(tmp_path / "ds")
    streams = (StreamSpec.parse("text=template"),)
    cfg = CaptionRunConfig(str(root), streams, n=1, seed=0, batch_size=2, splits=("train",))

    def stop_after_first_batch(done: int, total: int, info: str) -> None:
        if done >= 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        caption_dataset(cfg, progress=stop_after_first_batch)
    table = pd.read_csv(root / "captions" / "train.csv", dtype={"filename": str})
    assert len(table) == 6  # every image has a row ...
    assert 2 <= table["text_template"].notna().sum() < 6  # ... captioned so far, others empty
    resumed = caption_dataset(cfg)
    assert resumed.counts["train"]["text_template"]["done_before"] >= 2
    fresh = make_dataset(tmp_path / "fresh")
    caption_dataset(CaptionRunConfig(str(fresh), streams, n=1, seed=0, splits=("train",)))
    assert (root / "captions" / "train.csv").read_bytes() == (
        fresh / "captions" / "train.csv"
    ).read_bytes()


def test_foreign_table_and_concurrent_runs_are_refused(tmp_path: Path) -> None:
    root = make_dataset(tmp_path / "ds", {"test": 2})
    (root / "captions").mkdir()
    (root / "captions" / "test.csv").write_text("filename,split,x\n")
    with pytest.raises(OutputConflictError, match="not written by `groundsynth caption`"):
        caption_dataset(CaptionRunConfig(str(root)))
    (root / "captions" / "test.csv").unlink()
    journal = CaptionJournal(root / "captions" / ".journal")
    with journal.lock(), pytest.raises(OutputConflictError, match="another caption run"):
        caption_dataset(CaptionRunConfig(str(root)))
    with pytest.raises(InputError, match="splits here: test"):
        caption_dataset(CaptionRunConfig(str(root), splits=("train",)))


def test_failures_are_recorded_left_empty_and_retried(tmp_path: Path, monkeypatch, caplog) -> None:
    root = make_dataset(tmp_path / "ds", {"train": 4})
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    with ChatServer(lifetime=60) as srv:
        srv.plan = [Reply(500, "down")] * 2  # the first two requests fail for good
        specs = (StreamSpec.parse("hybrid=openai:qwen3-vl-8b"), StreamSpec.parse("text=template"))
        cfg = CaptionRunConfig(
            str(root), specs, base_url=srv.base_url, retries=0, concurrency=1, batch_size=2
        )
        res = caption_dataset(cfg)
        assert res.counts["train"]["hybrid_qwen3-vl-8b"] == {
            "captioned": 2,
            "failed": 2,
            "done_before": 0,
            "missing": 2,
        }
        assert res.failures[0]["error"].startswith("HTTP 500")
        df = pd.read_csv(root / "captions" / "train.csv", keep_default_na=False)
        assert (df["hybrid_qwen3-vl-8b"] == "").sum() == 2 and (df["text_template"] != "").all()
        lines = [
            json.loads(ln)
            for f in (root / "captions" / ".journal" / "train" / "hybrid_qwen3-vl-8b").iterdir()
            for ln in f.read_text().splitlines()
        ]
        failed = [r for r in lines if r["status"] == "failed"]
        assert len(failed) == 2 and all(r["error"] and "captions" not in r for r in failed)
        n_requests = len(srv.requests)
        res = caption_dataset(cfg)  # retries the failed pairs only
        assert len(srv.requests) == n_requests + 2
        assert res.counts["train"]["hybrid_qwen3-vl-8b"]["captioned"] == 2
        assert res.counts["train"]["hybrid_qwen3-vl-8b"]["missing"] == 0
        assert all(r["headers"]["Authorization"] == f"Bearer {KEY}" for r in srv.requests)
    df = pd.read_csv(root / "captions" / "train.csv", keep_default_na=False)
    assert (df["hybrid_qwen3-vl-8b"] != "").all()
    # no file of the output holds the key: run config, manifest, log, journal, tables
    scanned = [f for f in sorted(root.rglob("*")) if f.is_file()]
    names = {f.relative_to(root / "captions").as_posix() for f in scanned if "captions" in f.parts}
    assert {"run/config.yaml", "run/manifest.json", "train.csv", ".journal/columns.json"} <= names
    assert any(n.startswith(".journal/train/hybrid_qwen3-vl-8b/") for n in names)
    for f in scanned:
        data = f.read_bytes()
        assert KEY.encode() not in data and KEY.encode("utf-16-le") not in data, f
    assert KEY not in caplog.text
    assert "api_key_env: OPENAI_API_KEY" in (root / "captions" / "run" / "config.yaml").read_text()


def test_a_torn_journal_line_is_ignored_then_cut(tmp_path: Path) -> None:
    root = make_dataset(tmp_path / "ds", {"train": 5})
    cfg = CaptionRunConfig(str(root), batch_size=2)
    caption_dataset(cfg)
    table = (root / "captions" / "train.csv").read_bytes()
    journal = root / "captions" / ".journal" / "train" / "text_template" / "00000.jsonl"
    lines = journal.read_bytes().splitlines(keepends=True)
    journal.write_bytes(b"".join(lines[:3]) + lines[3][:17])  # killed mid-write
    assert len(CaptionJournal(journal.parents[2]).read("train", "text_template", 0)) == 3
    res = caption_dataset(cfg)
    assert res.counts["train"]["text_template"]["captioned"] == 2
    assert (root / "captions" / "train.csv").read_bytes() == table
    assert all(json.loads(ln) for ln in journal.read_text().splitlines())
    assert rebuild_tables(root)["train"].read_bytes() == table


def test_every_journal_batch_is_fsynced_once_written(tmp_path: Path, monkeypatch) -> None:
    """Each batch is one write then an fsync of that journal file's descriptor (and of its
    folder when the file is new): durable on return, whatever happens next."""
    synced: list[tuple[int, int, bool]] = []  # (inode, size at fsync, is a folder)
    real_fsync = os.fsync

    def spy(fd: int) -> None:
        st = os.fstat(fd)
        synced.append((st.st_ino, st.st_size, stat.S_ISDIR(st.st_mode)))
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", spy)
    journal = CaptionJournal(tmp_path / ".journal")
    rec = {"id": "a", "status": "ok", "captions": ["x"], "pct": [100, 0, 0, 0, 0, 0, 0]}
    journal.append("train", "text_t", 0, [rec, {**rec, "id": "b"}])
    path = tmp_path / ".journal" / "train" / "text_t" / "00000.jsonl"
    size = path.stat().st_size
    folder = path.parent.stat().st_ino
    assert synced[0] == (path.stat().st_ino, size, False)  # the file, holding the whole batch
    assert [s[0] for s in synced[1:]] == [folder]  # then its new folder entry
    synced.clear()
    journal.append("train", "text_t", 0, [{**rec, "id": "c"}])
    assert synced == [(path.stat().st_ino, path.stat().st_size, False)]
    assert path.stat().st_size > size
    synced.clear()
    journal.append("train", "text_t", 0, [])  # nothing to write: nothing to sync
    assert synced == []

    # a run: one fsync of a journal file per batch (3 images in batches of 2, 2 columns)
    root = make_dataset(tmp_path / "ds", {"train": 3})
    synced.clear()
    specs = (StreamSpec.parse("text=template"), StreamSpec.parse("hybrid=template@hybrid_t"))
    caption_dataset(CaptionRunConfig(str(root), specs, batch_size=2))
    files = {f.stat().st_ino for f in (root / "captions" / ".journal").rglob("*.jsonl")}
    assert len(files) == 2
    assert sum(ino in files for ino, _, _ in synced) == 2 * 2


def _ok_lines(root: Path) -> int:
    folder = root / "captions" / ".journal"
    return sum(f.read_bytes().count(b'"status":"ok"') for f in folder.glob("*/hybrid_fake/*.jsonl"))


def _run_until(cmd: list[str], env: dict, root: Path, lines: int) -> int:
    """Start the caption command, SIGKILL it once ``lines`` ok records are journalled."""
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 60
    try:
        while proc.poll() is None and time.monotonic() < deadline:
            if _ok_lines(root) >= lines:
                os.kill(proc.pid, signal.SIGKILL)
                break
            time.sleep(0.005)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    return proc.returncode


def test_kill_9_at_any_moment_then_resume_equals_an_uninterrupted_run(tmp_path: Path) -> None:
    sizes = {"train": 24, "val": 8}
    root = make_dataset(tmp_path / "ds", sizes)
    with ChatServer(delay=0.03, lifetime=120) as srv:
        cmd = [
            sys.executable, "-m", "groundsynth", "caption", str(root), "--no-progress",
            "-s", "text=template", "-s", "hybrid=openai:fake", "--base-url", srv.base_url,
            "--batch-size", "4", "--concurrency", "2", "--seed", "5",
        ]  # fmt: skip
        env = {**os.environ, "OPENAI_API_KEY": KEY}
        assert _run_until(cmd, env, root, 3) == -signal.SIGKILL
        assert _run_until(cmd, env, root, 17) == -signal.SIGKILL
        assert not (root / "captions" / "train.csv").exists()  # tables come at the end
        done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stderr
        srv.delay = 0.0
        fresh = make_dataset(tmp_path / "fresh", sizes)
        caption_dataset(
            CaptionRunConfig(
                str(fresh),
                (StreamSpec.parse("text=template"), StreamSpec.parse("hybrid=openai:fake")),
                base_url=srv.base_url,
                seed=5,
            )
        )
    for split, count in sizes.items():
        got = (root / "captions" / f"{split}.csv").read_text()
        assert got == (fresh / "captions" / f"{split}.csv").read_text()
        df = pd.read_csv(root / "captions" / f"{split}.csv", keep_default_na=False)
        assert len(df) == count and df["filename"].is_unique
        assert (df["hybrid_fake"] != "").all() and (df["text_template"] != "").all()
        # the journal holds each (image, column) once: nothing was captioned twice
        for column in ("hybrid_fake", "text_template"):
            ids = [
                json.loads(ln)["id"]
                for f in (root / "captions" / ".journal" / split / column).glob("*.jsonl")
                for ln in f.read_text().splitlines()
            ]
            assert sorted(ids) == sorted(df["filename"].str[:-4])
