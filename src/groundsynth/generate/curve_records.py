"""``curves.csv`` of a generator run: its columns, reading and appending rows, the plateau
rule of ``--stop-on-plateau``, the manifest's ``learning`` summary and ``curves.png``.

The evaluations themselves are in :mod:`groundsynth.generate.curves`.
"""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from groundsynth.generate.config import MAP_KINDS, TrainConfig
from groundsynth.io import atomic_path, write_text

__all__ = [
    "CURVE_COLUMNS",
    "evaluations_since_best",
    "learning_summary",
    "plateau_step",
    "plot_curves",
    "read_curves",
]

#: neighbours of the k-NN precision / recall of the curves
PRDC_K = 5

#: Columns of ``curves.csv``; empty where a figure does not apply (no map, no segmenter).
CURVE_COLUMNS: tuple[str, ...] = (
    "step",
    "label_fidelity_floor",
    "label_fidelity_segmenter",
    "ceiling_floor",
    "ceiling_segmenter",
    "fd",
    "fd_real_halves",
    "precision",
    "recall",
    "features",
    "seconds",
)


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return "nan" if math.isnan(value) else f"{value:.10g}"
    return str(value)


def _short(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.4g}"


def _append_row(path: Path, row: dict[str, Any]) -> None:
    """Append one row to ``curves.csv`` (the whole file rewritten atomically)."""
    text = path.read_text(encoding="utf-8") if path.is_file() else ",".join(CURVE_COLUMNS) + "\n"
    line = ",".join(_cell(row.get(c)) for c in CURVE_COLUMNS)
    write_text(path, text + line + "\n")


def read_curves(out: str | Path) -> list[dict[str, Any]]:
    """The rows of a run's ``curves.csv`` (``step`` int, ``features`` str, the rest floats;
    ``None`` where a figure does not apply)."""
    path = Path(out) / "curves.csv"
    if not path.is_file():
        return []
    rows = []
    for r in csv.DictReader(io.StringIO(path.read_text(encoding="utf-8"))):
        row: dict[str, Any] = {}
        for k, v in r.items():
            if k == "step":
                row[k] = int(v)
            elif k == "features":
                row[k] = v
            else:
                row[k] = None if v in ("", None) else float(v)
        rows.append(row)
    return rows


# ----------------------------------------------------------------------------- plateau
def evaluations_since_best(
    values: Sequence[float | None], min_delta: float = 0.0, *, higher_is_better: bool = True
) -> int:
    """Evaluations since the main figure last improved on its best by more than
    ``min_delta`` (the first value sets the best; missing or non-finite values never do)."""
    best: float | None = None
    since = 0
    for v in values:
        ok = v is not None and math.isfinite(v)
        if ok and (best is None or (v - best if higher_is_better else best - v) > min_delta):
            best, since = v, 0
        else:
            since += 1
    return since


def _main_column(config: TrainConfig) -> str:
    if config.kind not in MAP_KINDS:
        return "fd"
    return "label_fidelity_segmenter" if config.eval_segmenter else "label_fidelity_floor"


def plateau_step(rows: Sequence[dict[str, Any]], config: TrainConfig) -> int | None:
    """The step of the last row when ``stop_on_plateau`` is on and the main figure has not
    improved by more than ``plateau_min_delta`` in ``plateau_patience`` evaluations; else
    ``None``. FD rows count only in the feature space of the last row."""
    if not config.stop_on_plateau or not rows:
        return None
    column = _main_column(config)
    if column == "fd":
        rows = [r for r in rows if r.get("features") == rows[-1].get("features")]
    since = evaluations_since_best(
        [r.get(column) for r in rows], config.plateau_min_delta, higher_is_better=column != "fd"
    )
    return int(rows[-1]["step"]) if since >= config.plateau_patience else None


def _ratio(a: float | None, b: float | None) -> float | None:
    if a is None or b is None or not (math.isfinite(a) and math.isfinite(b)) or b <= 0:
        return None
    return a / b


def _finite(v: float | None) -> float | None:
    return v if v is not None and math.isfinite(v) else None


def learning_summary(rows: Sequence[dict[str, Any]], config: TrainConfig) -> dict[str, Any] | None:
    """The last evaluation as the run manifest records it (``None`` without one): label
    fidelity (the segmenter's when given, else the floor's), its ceiling and their ratio; FD,
    the real-halves FD and their ratio; precision, recall; reader and features."""
    if not rows:
        return None
    last = rows[-1]
    map_kind = config.kind in MAP_KINDS
    reader = "segmenter" if config.eval_segmenter else "floor"
    lf = _finite(last.get(f"label_fidelity_{reader}")) if map_kind else None
    ceiling = _finite(last.get(f"ceiling_{reader}")) if map_kind else None
    fd, fd_real = _finite(last.get("fd")), _finite(last.get("fd_real_halves"))
    return {
        "step": last["step"],
        "label_fidelity": lf,
        "ceiling": ceiling,
        "ratio": _ratio(lf, ceiling),
        "fd": fd,
        "fd_real_halves": fd_real,
        "fd_ratio": _ratio(fd, fd_real),
        "precision": _finite(last.get("precision")),
        "recall": _finite(last.get("recall")),
        "reader": ("segmenter" if config.eval_segmenter else "pixel-floor") if map_kind else None,
        "features": last.get("features"),
    }


# ----------------------------------------------------------------------------- figure
def plot_curves(rows: Sequence[dict[str, Any]], path: str | Path, title: str = "") -> Path:
    """Label fidelity against its ceiling (precision / recall for kinds without a map) and FD
    against the real-halves FD, over steps, as a PNG."""
    from groundsynth._optional import lazy_import

    lazy_import("matplotlib")
    from matplotlib.figure import Figure

    steps = [r["step"] for r in rows]

    def series(name: str) -> list[float]:
        return [np.nan if r.get(name) is None else r[name] for r in rows]

    fig = Figure(figsize=(10, 3.8), layout="constrained")
    left, right = fig.subplots(1, 2)
    if any(r.get("label_fidelity_floor") is not None for r in rows):
        for reader, colour in (("floor", "#1f77b4"), ("segmenter", "#d62728")):
            if any(r.get(f"label_fidelity_{reader}") is not None for r in rows):
                left.plot(steps, series(f"label_fidelity_{reader}"), "o-", color=colour,
                          label=f"samples ({reader})")  # fmt: skip
                left.plot(steps, series(f"ceiling_{reader}"), "--", color=colour,
                          label=f"real ceiling ({reader})")  # fmt: skip
        left.set_ylabel("label fidelity (macro IoU)")
    else:
        left.plot(steps, series("precision"), "o-", label="precision")
        left.plot(steps, series("recall"), "s-", label="recall")
        left.set_ylabel(f"k-NN precision / recall (k={PRDC_K})")
    right.plot(steps, series("fd"), "o-", color="#2ca02c", label="samples vs real")
    right.plot(steps, series("fd_real_halves"), "--", color="#2ca02c", label="real halves")
    right.set_ylabel(f"FD ({rows[-1].get('features') if rows else ''})")
    for ax in (left, right):
        ax.set_xlabel("step")
        ax.legend(fontsize=8, frameon=False)
        ax.grid(alpha=0.3)
    if title:
        fig.suptitle(title, fontsize=10)
    path = Path(path)
    with atomic_path(path, suffix=".png") as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    return path
