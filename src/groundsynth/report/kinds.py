"""What a run directory is, from the files it holds (see :func:`detect_kind`)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

__all__ = ["KINDS", "detect_kind", "read_manifest"]

#: Kinds of run directory the report knows, in the order they are tried.
KINDS = ("metric-utility", "experiment", "captions", "synthetic", "table", "dataset", "run")


def read_manifest(path: Path) -> dict[str, Any]:
    """``path/manifest.json`` as a dict; empty when missing or unreadable."""
    try:
        doc = json.loads((path / "manifest.json").read_text())
    except (OSError, ValueError):
        return {}
    return doc if isinstance(doc, dict) else {}


def detect_kind(path: Path) -> str:
    """What a run directory is, from the files it holds: one of :data:`KINDS`, or
    ``unknown``."""
    if (path / "metric_utility.json").is_file():
        return "metric-utility"
    if (path / "experiment.json").is_file():
        return "experiment"
    if (path / "caption_metrics.json").is_file():
        return "captions"
    if (path / "summary.json").is_file() and read_manifest(path).get(
        "stage"
    ) == "evaluate_synthetic":
        return "synthetic"
    if (path / "results.csv").is_file():
        return "table"
    if (path / "metadata.parquet").is_file() or any(
        (path / s / "images").is_dir() for s in ("train", "val", "test", "synth")
    ):
        return "dataset"
    if (path / "manifest.json").is_file():
        return "run"
    return "unknown"
