"""Matplotlib figures of the report (Agg backend, no display needed).

Every figure is drawn from aggregates (shares, quartiles, differences), never one mark per
sample, so its size does not grow with the dataset.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from groundsynth._optional import lazy_import
from groundsynth.classes import CLASS_NAMES, COLOURS

__all__ = ["composition_bars", "composition_boxes", "difference_bars"]

_HEX = ["#" + "".join(f"{v:02x}" for v in c) for c in COLOURS.tolist()]


def _plt() -> Any:
    mpl = lazy_import("matplotlib")
    mpl.use("Agg", force=True)
    return lazy_import("matplotlib.pyplot")


def composition_bars(shares: Mapping[str, Sequence[float]], title: str = "") -> Any:
    """Stacked horizontal bars: per-class pixel share (0..1) of each named group."""
    plt = _plt()
    names = list(shares)
    fig, ax = plt.subplots(figsize=(8, 0.5 + 0.45 * len(names)))
    left = np.zeros(len(names))
    for k, cls in enumerate(CLASS_NAMES):
        vals = np.array([float(shares[n][k]) for n in names])
        ax.barh(names, vals, left=left, color=_HEX[k], edgecolor="white", linewidth=0.5, label=cls)
        left += vals
    ax.set_xlim(0, 1)
    ax.set_xlabel("pixel share")
    ax.invert_yaxis()
    ax.legend(ncol=7, fontsize=7, loc="lower center", bbox_to_anchor=(0.5, 1.0), frameon=False)
    if title:
        ax.set_title(title, pad=22)
    return fig


def composition_boxes(fractions: Mapping[str, np.ndarray], title: str = "") -> Any:
    """Per-class distribution of per-image class fractions, one box per (class, group)."""
    plt = _plt()
    groups = list(fractions)
    fig, ax = plt.subplots(figsize=(9, 3.2))
    width = 0.8 / max(len(groups), 1)
    for g, name in enumerate(groups):
        data = np.asarray(fractions[name])
        pos = np.arange(len(CLASS_NAMES)) + (g - (len(groups) - 1) / 2) * width
        bp = ax.boxplot(
            [data[:, k] for k in range(len(CLASS_NAMES))], positions=pos, widths=width * 0.9,
            patch_artist=True, showfliers=False,
        )  # fmt: skip
        for k, box in enumerate(bp["boxes"]):
            box.set_facecolor(_HEX[k])
            box.set_alpha(1.0 if g == 0 else 0.55)
        ax.plot([], [], " ", label=f"{'solid' if g == 0 else 'light'}: {name}")
    ax.set_xticks(range(len(CLASS_NAMES)), CLASS_NAMES)
    ax.set_ylabel("fraction of image")
    ax.set_ylim(0, 1)
    if len(groups) > 1:
        ax.legend(fontsize=8, frameon=False)
    if title:
        ax.set_title(title)
    return fig


def difference_bars(
    diffs: Sequence[Mapping[str, Any]], metric: str = "f1", scale: float = 100.0,
    label: str | None = None,
) -> Any:  # fmt: skip
    """Horizontal bars of paired differences (in points: fractions times ``scale``) with their
    CIs, one per comparison."""
    plt = _plt()
    rows = [d for d in diffs if d["metric"] == metric]
    labels = [f"{d['comparison'].split('  ')[0]}\n{d['domain']}" for d in rows]
    mean = np.array([scale * d["mean"] for d in rows], dtype=float)
    lo = np.array([scale * d["ci95_low"] for d in rows], dtype=float)
    hi = np.array([scale * d["ci95_high"] for d in rows], dtype=float)
    err = np.vstack([np.nan_to_num(mean - lo), np.nan_to_num(hi - mean)])
    fig, ax = plt.subplots(figsize=(8, 0.6 + 0.55 * max(len(rows), 1)))
    colours = ["#2e7d32" if m > 0 else "#c62828" for m in mean]
    ax.barh(range(len(rows)), mean, xerr=err, color=colours, capsize=3)
    ax.axvline(0, color="black", linewidth=0.8)
    ax.set_yticks(range(len(rows)), labels, fontsize=7)
    ax.invert_yaxis()
    ax.set_xlabel(label or f"grounded − ungrounded, macro {metric.upper()} (points)")
    return fig
