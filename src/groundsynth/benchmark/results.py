"""Result tables of the segmentation benchmark: runs, mean / std / 95 % CI across seeds.

One *run row* per (architecture, regime, seed, test set) holds that run's scores (fractions in
0..1), the pixel floor's macro IoU on that test set (``floor_iou``) and whether the run beat
its floor (``learned``, see :mod:`.learning`). The *summary* groups rows by (architecture, regime, test set) and gives, for every
score, the mean, the sample standard deviation (ddof 1) and a two-sided 95 % Student-t
confidence interval of the mean across seeds: ``mean +- t(0.975, n-1) * std / sqrt(n)``. With
one seed the standard deviation and the interval are undefined: they are ``nan`` (empty in
CSV, ``null`` in JSON) and the Markdown notes say so. Rows with ``arch = "mean"`` average the
architectures seed by seed first (as the ARAS400k paper averages its six architectures), using
the seeds every architecture finished.

:func:`write_results` writes ``results.csv`` (runs), ``summary.csv``, ``results.md`` and
``results.json``, each atomically.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats

from groundsynth.benchmark.metrics import MACRO_METRICS
from groundsynth.classes import CLASS_NAMES
from groundsynth.io import atomic_open, write_json, write_text

__all__ = [
    "KEY_COLUMNS",
    "MEAN_ARCH",
    "WORLDCOVER_NOTE",
    "json_safe",
    "mean_std_ci",
    "score_columns",
    "summarise",
    "to_markdown",
    "write_results",
    "write_table_files",
]

#: Columns identifying a run row.
KEY_COLUMNS: tuple[str, ...] = ("arch", "regime", "seed", "test_set")
#: ``arch`` value of the rows averaged over architectures.
MEAN_ARCH = "mean"
#: Reminder printed under every table scored against WorldCover-derived labels.
WORLDCOVER_NOTE = (
    "Scores against WorldCover-derived masks measure agreement with ESA WorldCover 2021 "
    "(about 77 % overall accuracy), not agreement with ground truth."
)
_MACRO = ("f1", "iou", "precision", "recall", "accuracy")


def score_columns(columns: Sequence[str]) -> list[str]:
    """The score columns among ``columns``: macro scores, then per-class scores (no support)."""
    per_class = [f"{m}/{c}" for m in MACRO_METRICS for c in CLASS_NAMES]
    return [c for c in (*_MACRO, *per_class) if c in columns]


def mean_std_ci(
    values: Sequence[float], confidence: float = 0.95
) -> tuple[float, float, float, float]:
    """``(mean, std, ci_low, ci_high)`` of ``values`` (nan-free); std/CI nan when n < 2."""
    x = np.asarray([v for v in values if v is not None and not math.isnan(v)], dtype=np.float64)
    n = len(x)
    if n == 0:
        return (math.nan,) * 4
    mean = float(x.mean())
    if n < 2:
        return mean, math.nan, math.nan, math.nan
    std = float(x.std(ddof=1))
    half = float(stats.t.ppf(0.5 + confidence / 2, n - 1)) * std / math.sqrt(n)
    return mean, std, mean - half, mean + half


def _stats_row(keys: dict[str, Any], frame: pd.DataFrame, scores: list[str]) -> dict[str, Any]:
    row = {
        **keys,
        "n_seeds": int(frame["seed"].nunique()),
        "seeds": sorted(frame["seed"].unique().tolist()),
    }
    for col in scores:
        mean, std, lo, hi = mean_std_ci(frame[col].tolist())
        row.update(
            {f"{col}_mean": mean, f"{col}_std": std, f"{col}_ci95_low": lo, f"{col}_ci95_high": hi}
        )
    return row


def summarise(rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Summary rows (see the module docstring), in the order groups first appear."""
    if not rows:
        return []
    df = pd.DataFrame(list(rows))
    scores = score_columns(df.columns)
    out = []
    for (arch, regime, test), g in df.groupby(["arch", "regime", "test_set"], sort=False):
        out.append(_stats_row({"arch": arch, "regime": regime, "test_set": test}, g, scores))
    if df["arch"].nunique() > 1:
        for (regime, test), g in df.groupby(["regime", "test_set"], sort=False):
            archs = g["arch"].unique()
            per_seed = g.groupby("seed")
            complete = [s for s, sg in per_seed if set(sg["arch"]) == set(archs)]
            if not complete:
                continue
            means = (
                g[g["seed"].isin(complete)].groupby("seed", sort=True)[scores].mean().reset_index()
            )
            keys = {"arch": MEAN_ARCH, "regime": regime, "test_set": test}
            out.append(_stats_row(keys, means, scores))
    return out


def _pct(mean: float | None, std: float, lo: float, hi: float) -> str:
    if mean is None or math.isnan(mean):
        return "n/a"
    text = f"{100 * mean:.2f}"
    if not math.isnan(std):
        text += f" ± {100 * std:.2f} [{100 * lo:.2f}, {100 * hi:.2f}]"
    return text


def to_markdown(
    rows: Sequence[dict[str, Any]], summary: Sequence[dict[str, Any]], notes: Sequence[str] = ()
) -> str:
    """A Markdown report: summary (percent, mean ± std [95 % CI]), per-class F1, runs, notes."""
    lines = ["# Segmentation benchmark", ""]
    lines += [
        "## Summary across seeds",
        "",
        "Percent; mean ± std [95 % CI] across seeds (macro over classes present).",
        "",
        "| arch | regime | test set | seeds | F1 | IoU | precision | recall | accuracy |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in summary:
        cells = [
            _pct(*(r.get(f"{m}_{s}", math.nan) for s in ("mean", "std", "ci95_low", "ci95_high")))
            for m in _MACRO
        ]
        lines.append(
            f"| {r['arch']} | `{r['regime']}` | {r['test_set']} | {r['n_seeds']} | "
            + " | ".join(cells)
            + " |"
        )
    per_class = [r for r in summary if r["arch"] == MEAN_ARCH] or list(summary)
    if per_class and f"f1/{CLASS_NAMES[0]}_mean" in per_class[0]:
        lines += ["", "## Per-class F1 (percent, mean across seeds)", ""]
        lines.append("| arch | regime | test set | " + " | ".join(CLASS_NAMES) + " |")
        lines.append("|---|---|---|" + "---|" * len(CLASS_NAMES))
        for r in per_class:
            vals = [r.get(f"f1/{c}_mean", math.nan) for c in CLASS_NAMES]
            cells = ["n/a" if math.isnan(v) else f"{100 * v:.2f}" for v in vals]
            lines.append(
                f"| {r['arch']} | `{r['regime']}` | {r['test_set']} | " + " | ".join(cells) + " |"
            )
    lines += [
        "",
        "## Runs",
        "",
        "| arch | regime | seed | test set | F1 | IoU | precision | recall | accuracy | epochs "
        "| best val F1 | floor IoU | learned |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        cells = [_pct(r.get(m, math.nan), math.nan, math.nan, math.nan) for m in _MACRO]
        best = r.get("best_val_f1", math.nan)
        floor = r.get("floor_iou", math.nan)
        learned = {True: "yes", False: "**no**"}.get(r.get("learned"), "n/a")
        lines.append(
            f"| {r['arch']} | `{r['regime']}` | {r['seed']} | {r['test_set']} | "
            + " | ".join(cells)
            + f" | {r.get('epochs', '')} | {_pct(best, math.nan, math.nan, math.nan)}"
            + f" | {_pct(floor, math.nan, math.nan, math.nan)} | {learned} |"
        )
    if notes:
        lines += ["", "## Notes", ""] + [f"- {n}" for n in notes]
    return "\n".join(lines) + "\n"


def json_safe(obj: Any) -> Any:
    """``obj`` with nan/inf floats as ``None`` and numpy scalars as Python values (strict JSON)."""
    if isinstance(obj, float) and (math.isnan(obj) or math.isinf(obj)):
        return None
    if isinstance(obj, dict):
        return {k: json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_safe(v) for v in obj]
    if isinstance(obj, np.generic):
        return json_safe(obj.item())
    return obj


def write_results(
    directory: str | os.PathLike[str],
    rows: Sequence[dict[str, Any]],
    notes: Sequence[str] = (),
) -> dict[str, Any]:
    """Write ``results.csv``, ``summary.csv``, ``results.md`` and ``results.json``.

    Returns ``{"summary": [...], "files": {name: path}}``.
    """
    directory = Path(directory)
    summary = summarise(rows)
    notes = list(notes)
    if any(r["n_seeds"] < 2 for r in summary):
        notes.append(
            "Groups with a single seed have no standard deviation or confidence interval "
            "(nan / null / empty): run more seeds (--seeds 3) for an interval."
        )
    files = {
        "runs_csv": directory / "results.csv",
        "summary_csv": directory / "summary.csv",
        "markdown": directory / "results.md",
        "json": directory / "results.json",
    }
    for key, table in (("runs_csv", rows), ("summary_csv", summary)):
        frame = pd.DataFrame(list(table))
        if "seeds" in frame.columns:
            frame["seeds"] = [";".join(map(str, s)) for s in frame["seeds"]]
        with atomic_open(files[key], "w", encoding="utf-8", newline="") as fh:
            frame.to_csv(fh, index=False)
    write_text(files["markdown"], to_markdown(rows, summary, notes))
    write_json(files["json"], json_safe({"runs": list(rows), "summary": summary, "notes": notes}))
    return {"summary": summary, "files": {k: str(v) for k, v in files.items()}, "notes": notes}


def write_table_files(
    directory: Path,
    rows: Sequence[dict[str, Any]],
    summary: Sequence[dict[str, Any]],
    markdown: str,
) -> dict[str, str]:
    """Write ``results.csv`` (``rows``), ``summary.csv``, ``results.md`` (``markdown``) and
    ``results.json`` atomically, as the retrieval and captioning benchmarks lay them out;
    return their paths by file name."""
    files = {}
    for name, table in (("results.csv", rows), ("summary.csv", summary)):
        with atomic_open(directory / name, "w", newline="") as fh:
            pd.DataFrame(list(table)).to_csv(fh, index=False)
        files[name] = str(directory / name)
    write_text(directory / "results.md", markdown)
    write_json(
        directory / "results.json", json_safe({"runs": list(rows), "summary": list(summary)})
    )
    files.update({n: str(directory / n) for n in ("results.md", "results.json")})
    return files
