"""Scatter plots of a metric-utility run: for one domain, every metric against what each
synthetic set adds (the gain of real + set over real alone), one small panel per metric.

The run writes one PNG per domain, named :func:`scatter_name` (``scatter_<domain slug>.png``);
the report finds it by that name. Figures are built on :class:`matplotlib.figure.Figure`
directly (no pyplot, no global backend switch, the Agg canvas) and saved atomically.
"""

from __future__ import annotations

import math
import re
import textwrap
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from groundsynth._optional import lazy_import
from groundsynth.errors import InputError
from groundsynth.io import atomic_path

__all__ = [
    "DPI",
    "GAIN_SCALE",
    "LEGEND_INCHES",
    "MAX_COLUMNS",
    "PANEL_INCHES",
    "domain_slug",
    "format_rho",
    "grid_shape",
    "panel_title",
    "scatter_name",
    "scatter_path",
    "write_scatter",
]

#: Width and height of one panel, in inches.
PANEL_INCHES = (3.2, 2.8)
#: Height of the legend row below the panels, in inches.
LEGEND_INCHES = 0.7
#: Resolution of the PNG: a figure of W x H inches is ``W * DPI`` x ``H * DPI`` pixels.
DPI = 100
#: At most this many panels a row.
MAX_COLUMNS = 4
#: Gains are differences of fractions (IoU 0..1); they are drawn and reported in points.
GAIN_SCALE = 100.0

_GENERATOR_COLOURS = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b",
                      "#e377c2", "#7f7f7f", "#bcbd22", "#17becf"]  # fmt: skip
#: (filtered, targeted) -> (marker, legend text)
_MARKERS = {
    (False, False): ("o", "as generated"),
    (True, False): ("s", "filtered"),
    (False, True): ("^", "targeted"),
    (True, True): ("D", "filtered + targeted"),
}


def domain_slug(domain: str) -> str:
    """``in-domain (A test)`` -> ``in-domain-a-test``: lower-case letters and digits joined by
    ``-`` (``domain`` when nothing is left)."""
    return re.sub(r"[^a-z0-9]+", "-", domain.lower()).strip("-") or "domain"


def scatter_name(domain: str) -> str:
    """File name of the scatter plot of ``domain`` in a run directory:
    ``scatter_<domain slug>.png``."""
    return f"scatter_{domain_slug(domain)}.png"


def scatter_path(out: str | Path, domain: str) -> Path:
    """Path of the scatter plot of ``domain`` in the run directory ``out``."""
    return Path(out) / scatter_name(domain)


def grid_shape(n_panels: int) -> tuple[int, int]:
    """(rows, columns) of the panel grid: at most :data:`MAX_COLUMNS` a row."""
    cols = max(1, min(MAX_COLUMNS, n_panels))
    return max(1, math.ceil(n_panels / cols)), cols


def _num(value: Any) -> float:
    """``value`` as a float; NaN for ``None`` or anything that is not a number."""
    try:
        return float(value) if value is not None else math.nan
    except (TypeError, ValueError):
        return math.nan


def format_rho(value: Any, low: Any = None, high: Any = None) -> str:
    """``0.62 [0.10, 0.90]``: a rank correlation and its 95 % CI (``n/a`` when missing; the
    bare value when the CI is)."""
    v, lo, hi = _num(value), _num(low), _num(high)
    if not math.isfinite(v):
        return "n/a"
    if not (math.isfinite(lo) and math.isfinite(hi)):
        return f"{v:.2f}"
    return f"{v:.2f} [{lo:.2f}, {hi:.2f}]"


def _flag(value: Any) -> bool:
    if isinstance(value, str):
        return value.strip().lower() in {"true", "1", "yes"}
    return isinstance(value, (bool, np.bool_, int, np.integer)) and bool(value)


def panel_title(label: str, row: Mapping[str, Any] | None, *, constant: bool = False) -> str:
    """Title of a metric's panel: its label, then ``ρ = 0.62 [0.10, 0.90]`` (Spearman and its
    95 % CI from the correlations row) or ``constant``."""
    name = textwrap.shorten(label, 44, placeholder="…")
    if constant or (row is not None and _flag(row.get("constant"))):
        return f"{name}\nconstant"
    row = row or {}
    rho = format_rho(
        row.get("spearman"), row.get("spearman_ci95_low"), row.get("spearman_ci95_high")
    )
    return f"{name}\nρ = {rho}" if rho != "n/a" else f"{name}\nρ n/a"


def _need(df: pd.DataFrame, columns: set[str], what: str) -> None:
    missing = sorted(columns - set(df.columns))
    if missing:
        raise InputError(f"{what} lacks the column(s) {missing}; it has {list(df.columns)}")


def write_scatter(
    sets: pd.DataFrame,
    utility: pd.DataFrame,
    correlations: pd.DataFrame,
    metrics: Mapping[str, Mapping[str, Any]],
    domain: str,
    path: str | Path,
    *,
    ylabel: str = "gain in IoU (points)",
) -> Path:
    """One PNG for ``domain``: a grid of panels (:func:`grid_shape`), one per metric of
    ``metrics`` (in its order), each set a point at (its metric value, its mean gain in points,
    error bar: the gain's 95 % CI), a line at 0 gain; colour: generator, marker: filtered /
    targeted. Titles from :func:`panel_title`. Points with a missing value are left out.

    ``sets``: one row per set (``set``, ``generator``, ``filtered``, ``targeted``, a column per
    metric); ``utility``: ``set``, ``domain``, ``gain_mean`` and ``gain_ci95_low`` /
    ``gain_ci95_high`` (fractions); ``correlations``: ``domain``, ``metric``, ``spearman``,
    ``spearman_ci95_low`` / ``_high``, ``constant``. Returns ``path``.
    """
    if not metrics:
        raise InputError("write_scatter: no metric to plot")
    _need(sets, {"set", *metrics}, "sets")
    _need(utility, {"set", "domain", "gain_mean"}, "utility")
    here = utility[utility["domain"] == domain]
    if here.empty:
        domains = sorted(map(str, utility["domain"].dropna().unique()))
        raise InputError(f"no utility recorded for domain {domain!r}; domains: {domains}")
    gains = here.drop_duplicates("set").set_index("set")
    y = GAIN_SCALE * pd.to_numeric(sets["set"].map(gains["gain_mean"]), errors="coerce").to_numpy(
        float
    )
    bounds = []
    for col in ("gain_ci95_low", "gain_ci95_high"):
        vals = sets["set"].map(gains[col]) if col in gains else pd.Series(np.nan, index=sets.index)
        bounds.append(GAIN_SCALE * pd.to_numeric(vals, errors="coerce").to_numpy(float))
    err = np.clip(np.nan_to_num(np.vstack([y - bounds[0], bounds[1] - y])), 0, None)
    corr: dict[str, Mapping[str, Any]] = {}
    if {"domain", "metric"} <= set(correlations.columns):
        rows = correlations[correlations["domain"] == domain]
        corr = {str(r["metric"]): r for r in rows.to_dict("records")}
    generators = [
        "unknown" if g is None or g != g else str(g)
        for g in sets.get("generator", pd.Series("set", index=sets.index))
    ]
    gen_order = list(dict.fromkeys(generators))
    colour = {g: _GENERATOR_COLOURS[i % len(_GENERATOR_COLOURS)] for i, g in enumerate(gen_order)}
    kinds = [
        (_flag(f), _flag(t))
        for f, t in zip(
            sets.get("filtered", [False] * len(sets)), sets.get("targeted", [False] * len(sets))
        )
    ]

    lazy_import("matplotlib")
    from matplotlib.figure import Figure
    from matplotlib.lines import Line2D

    nrows, ncols = grid_shape(len(metrics))
    width, height = PANEL_INCHES
    fig = Figure(figsize=(ncols * width, nrows * height + LEGEND_INCHES), layout="constrained")
    axes = np.atleast_1d(fig.subplots(nrows, ncols, squeeze=False)).ravel()
    for k, (name, meta) in enumerate(metrics.items()):
        ax = axes[k]
        x = pd.to_numeric(sets[name], errors="coerce").to_numpy(float)
        for i in range(len(sets)):
            if not (math.isfinite(x[i]) and math.isfinite(y[i])):
                continue
            ax.errorbar(
                x[i], y[i], yerr=err[:, i : i + 1], fmt=_MARKERS[kinds[i]][0],
                color=colour[generators[i]], markersize=5, elinewidth=0.8, capsize=2, alpha=0.85,
            )  # fmt: skip
        ax.axhline(0, color="black", linewidth=0.8)
        finite = x[np.isfinite(x)]
        label = str(meta.get("label") or name)
        constant = finite.size > 0 and np.unique(finite).size < 2
        ax.set_title(panel_title(label, corr.get(name), constant=constant), fontsize=8)
        direction = _num(meta.get("direction"))
        better = " (↑ better)" if direction > 0 else " (↓ better)" if direction < 0 else ""
        ax.set_xlabel(textwrap.shorten(f"{name}{better}", 40, placeholder="…"), fontsize=7)
        ax.tick_params(labelsize=6)
        ax.grid(alpha=0.3)
        if k % ncols == 0:
            ax.set_ylabel(ylabel, fontsize=7)
    for ax in axes[len(metrics) :]:
        ax.set_axis_off()
    handles = [
        Line2D([], [], color=colour[g], marker="o", linestyle="none", label=g) for g in gen_order
    ]
    handles += [
        Line2D(
            [],
            [],
            color="#555555",
            marker=_MARKERS[key][0],
            linestyle="none",
            label=_MARKERS[key][1],
        )
        for key in _MARKERS
        if key in kinds
    ]
    fig.legend(
        handles=handles,
        loc="outside lower center",
        ncol=min(len(handles), 6),
        fontsize=7,
        frameon=False,
    )
    fig.suptitle(f"{domain}: metric vs gain of real + set over real alone", fontsize=9)
    path = Path(path)
    with atomic_path(path, suffix=".png") as tmp:
        fig.savefig(tmp, format="png", dpi=DPI)
    return path
