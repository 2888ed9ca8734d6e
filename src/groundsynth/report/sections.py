"""Report sections: one renderer per kind of run directory, chosen by what the folder holds.

Kinds (see :func:`detect_kind`): ``dataset`` (a dataset directory: ours or ARAS400k),
``captions`` (an ``evaluate captions`` output), ``table`` (any run with a ``results.csv``,
e.g. a segmentation benchmark or an experiment), ``run`` (any other run directory with a
``manifest.json``), ``experiment`` (:mod:`.experiment`), ``metric-utility``
(:mod:`.metric_utility`) and ``synthetic`` (:mod:`.synthetic`). Renderers stream what they read: tables are read column-wise and only
the few samples a grid shows are read (:mod:`.samples`).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from groundsynth.classes import CLASS_NAMES
from groundsynth.report import plots
from groundsynth.report.experiment import experiment_section
from groundsynth.report.html import Page
from groundsynth.report.kinds import detect_kind, read_manifest
from groundsynth.report.metric_utility import metric_utility_section
from groundsynth.report.samples import sample_grid
from groundsynth.report.synthetic import synthetic_section

__all__ = ["SECTIONS", "detect_kind", "render"]

log = logging.getLogger(__name__)

#: At most this many rows of per-image fractions feed the distribution plots.
MAX_PLOT_ROWS = 20_000


# ----------------------------------------------------------------------------- dataset
def _fractions(reader: Any, split: str) -> np.ndarray | None:
    """(N, 7) per-image class fractions of a split, from metadata or percentage tables."""
    md = (
        reader.metadata(split, columns=[f"frac_{n}" for n in CLASS_NAMES])
        if reader.layout == "groundsynth"
        else None
    )
    if md is not None and len(md):
        return md.to_numpy(dtype=np.float64)
    pct = reader.percentages(split)
    if pct is not None and len(pct):
        return pct[list(CLASS_NAMES)].to_numpy(dtype=np.float64) / 100.0
    return None


def dataset_section(page: Page, path: Path) -> None:
    from groundsynth.data.reader import open_dataset

    reader = open_dataset(path)
    page.heading(f"Dataset: {path.name}")
    manifest = read_manifest(path)
    splits = reader.splits()
    counts = {s: reader.len(s) for s in splits}
    page.paragraph(
        f"{path} ({reader.layout} layout): "
        + ", ".join(f"{s} {n}" for s, n in counts.items())
        + " images."
    )
    outputs = manifest.get("outputs", {})
    if outputs.get("skipped"):
        page.paragraph(
            "Patches skipped while building: "
            + ", ".join(f"{k} {v}" for k, v in sorted(outputs["skipped"].items()))
            + "."
        )
    leak = outputs.get("leakage")
    if leak:
        page.paragraph(
            f"Spatial split leakage: {leak['test_patches_touching_train']} of {leak['test_patches']} test patches "
            "touch a training patch."
        )
    fractions = {s: f for s in splits if (f := _fractions(reader, s)) is not None}
    if fractions:
        shares = {s: f.mean(axis=0) for s, f in fractions.items()}
        page.table(
            [[s, counts[s], *(100 * v for v in shares[s])] for s in fractions],
            ["split", "images", *(f"{c} %" for c in CLASS_NAMES)], digits=1,
        )  # fmt: skip
        page.figure(
            plots.composition_bars(shares),
            "Mean class share per split (mean of per-image fractions).",
        )
        sampled = {s: f[:: max(1, len(f) // MAX_PLOT_ROWS)] for s, f in fractions.items()}
        page.figure(
            plots.composition_boxes(sampled),
            "Per-image class fractions (boxes: quartiles, whiskers: 1.5 IQR).",
        )
    sample_grid(page, reader)


# ----------------------------------------------------------------------------- captions
def captions_section(page: Page, path: Path) -> None:
    summary = json.loads((path / "caption_metrics.json").read_text())
    page.heading(f"Captions: {Path(summary.get('source', path)).name}")
    div = summary["diversity"]
    rows = []
    for name, d in [("pooled", div["pooled"]), *sorted(div.get("per_stream", {}).items())]:
        rows.append(
            [
                name,
                d["captions"],
                100 * d["redundancy"],
                d["distinct_1"],
                d["distinct_2"],
                d["distinct_4"],
                d["vocabulary"],
                d["mean_length"],
            ]
        )
    page.table(
        rows,
        [
            "stream",
            "captions",
            "redundancy %",
            "distinct-1",
            "distinct-2",
            "distinct-4",
            "vocabulary",
            "mean words",
        ],
        digits=3,
    )
    page.paragraph(
        "Redundancy = 1 − distinct/total exact caption strings. Published figures: UCM 80.88 %, "
        "RSICD 67.02 %, NWPU 72.65 %, ARAS400k 12.85 %.", cls="muted",
    )  # fmt: skip
    cons = summary.get("consistency")
    if cons:
        keys = [
            "mention_precision",
            "mention_recall",
            "hallucination_rate",
            "dominant_agreement",
            "quantity_agreement",
            "consistent_rate",
        ]
        rows = [[name, c["captions"], *((100 * c[k]) if c.get(k) is not None else float("nan") for k in keys)]
                for name, c in [("pooled", cons["pooled"]), *sorted(cons["per_stream"].items())]]  # fmt: skip
        page.heading("Caption ↔ map consistency", level=3)
        page.table(
            rows, ["stream", "captions", *(k.replace("_", " ") + " %" for k in keys)], digits=1
        )
    clip = summary.get("clipscore")
    if clip:
        page.paragraph(f"CLIPScore: {json.dumps(clip)[:400]}", cls="muted")


# ----------------------------------------------------------------------------- tables
def table_section(page: Page, path: Path, max_rows: int = 60) -> None:
    import pandas as pd

    manifest = read_manifest(path)
    page.heading(f"{manifest.get('stage', 'Results').replace('-', ' ').capitalize()}: {path.name}")
    summary = path / "summary.csv"
    df = pd.read_csv(summary if summary.is_file() else path / "results.csv")
    if len(df) > max_rows:
        page.paragraph(
            f"First {max_rows} of {len(df)} rows; all rows are in {path / 'results.csv'}.",
            cls="muted",
        )
        df = df.head(max_rows)
    page.table(
        df.itertuples(index=False),
        [str(c) for c in df.columns],
        digits=3,
        left=max(1, sum(not pd.api.types.is_numeric_dtype(t) for t in df.dtypes)),
    )
    notes = path / "notes.txt"
    if notes.is_file():
        page.paragraph(notes.read_text()[:2000], cls="muted")


def run_section(page: Page, path: Path) -> None:
    manifest = read_manifest(path)
    page.heading(f"Run: {path.name} ({manifest.get('stage', 'unknown stage')})")
    outputs = manifest.get("outputs", {})
    page.bullets(f"{k}: {json.dumps(v)[:300]}" for k, v in outputs.items() if k != "files")


SECTIONS: dict[str, Callable[[Page, Path], None]] = {
    "metric-utility": metric_utility_section,
    "experiment": experiment_section,
    "synthetic": synthetic_section,
    "dataset": dataset_section,
    "captions": captions_section,
    "table": table_section,
    "run": run_section,
}


def render(page: Page, path: Path) -> str:
    """Add the section of ``path`` to ``page``; return its kind."""
    kind = detect_kind(path)
    if kind == "unknown":
        page.heading(f"Not recognised: {path.name}")
        page.paragraph(f"{path} holds no dataset, metrics or manifest that the report can read.")
        return kind
    SECTIONS[kind](page, path)
    return kind
