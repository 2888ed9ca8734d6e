"""Figures of the synthetic-data evaluation, written as PNG files (matplotlib, Agg canvas).

Figures are built on :class:`matplotlib.figure.Figure` directly (no pyplot, no global backend
switch) and saved atomically. Each function takes the streaming statistics, never samples.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from groundsynth._optional import lazy_import
from groundsynth.classes import CLASS_NAMES, COLOURS
from groundsynth.evaluate.composition import BINS, CompositionStats
from groundsynth.evaluate.label_fidelity import HISTOGRAM_BINS, LabelFidelity
from groundsynth.io import atomic_path

__all__ = ["composition_figure", "fidelity_figure", "projection_figure"]

_HEX = ["#" + "".join(f"{v:02x}" for v in c) for c in COLOURS.tolist()]
_GROUP_COLOURS = ["#333333", "#d62728", "#1f77b4", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b"]


def _figure(width: float, height: float):  # noqa: ANN202 - matplotlib type
    lazy_import("matplotlib")
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), layout="constrained")


def _save(fig, path: str | os.PathLike[str]) -> Path:  # noqa: ANN001
    path = Path(path)
    with atomic_path(path, suffix=".png") as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    return path


def composition_figure(
    groups: Mapping[str, CompositionStats], path: str | os.PathLike[str]
) -> Path:
    """Per-class pixel share of each group (bars: first group solid, the others hatched) and,
    per class, the distribution of its per-image fraction (one line per group)."""
    from matplotlib.patches import Patch

    fig = _figure(12, 6)
    grid = fig.add_gridspec(2, len(CLASS_NAMES))
    ax = fig.add_subplot(grid[0, :])
    names = list(groups)
    width = 0.8 / max(len(names), 1)
    x = np.arange(len(CLASS_NAMES))
    handles = []
    for g, name in enumerate(names):
        edge = _GROUP_COLOURS[g % len(_GROUP_COLOURS)]
        hatch = None if g == 0 else ["//", "\\\\", "xx", ".."][(g - 1) % 4]
        ax.bar(
            x + (g - (len(names) - 1) / 2) * width,
            groups[name].pixel_share(),
            width * 0.95,
            color=_HEX,
            edgecolor=edge,
            linewidth=1.5,
            alpha=1.0 if g == 0 else 0.6,
            hatch=hatch,
        )
        label = f"{name} ({groups[name].images} images)"
        handles.append(Patch(facecolor="white", edgecolor=edge, hatch=hatch, label=label))
    ax.set_xticks(x, CLASS_NAMES)
    ax.set_ylabel("pixel share")
    ax.legend(
        handles=handles,
        fontsize=8,
        frameon=False,
        ncol=len(handles),
        loc="lower center",
        bbox_to_anchor=(0.5, 1.0),
    )
    edges = np.arange(BINS + 1) / BINS
    for k, cls in enumerate(CLASS_NAMES):
        sub = fig.add_subplot(grid[1, k])
        for g, name in enumerate(names):
            h = groups[name].histogram[k].astype(np.float64)
            if h.sum():
                colour = _GROUP_COLOURS[g % len(_GROUP_COLOURS)]
                sub.stairs(h / h.sum(), edges, color=colour, lw=1, label=name)
        sub.set_title(cls, fontsize=9)
        sub.set_xlabel("fraction of image", fontsize=7)
        sub.set_ylim(0, 1)
        sub.tick_params(labelsize=6)
        if k == 0:
            sub.set_ylabel("share of images", fontsize=7)
            sub.legend(fontsize=6, frameon=False)
    fig.suptitle("composition: pixel share and per-image class-fraction distributions")
    return _save(fig, path)


def fidelity_figure(groups: Mapping[str, LabelFidelity], path: str | os.PathLike[str]) -> Path:
    """Distribution of per-sample mIoU (segmenter vs map) for each group."""
    fig = _figure(7, 4)
    ax = fig.add_subplot()
    edges = np.arange(HISTOGRAM_BINS + 1) / HISTOGRAM_BINS
    for g, (name, fid) in enumerate(groups.items()):
        if not fid.scored:
            continue
        share = fid.histogram / fid.scored
        mean = fid.miou_sum / fid.scored
        ax.stairs(
            share,
            edges,
            color=_GROUP_COLOURS[g % len(_GROUP_COLOURS)],
            label=f"{name}: mean {mean:.3f} ({fid.scored} samples)",
        )
    ax.set_xlabel("per-sample mIoU, segmenter prediction vs map")
    ax.set_ylabel("share of samples")
    ax.set_xlim(0, 1)
    ax.set_title("label fidelity (agreement with the map, not ground truth)")
    ax.legend(fontsize=8, frameon=False)
    return _save(fig, path)


def projection_figure(
    coords: np.ndarray,
    labels: np.ndarray,
    names: Sequence[str],
    path: str | os.PathLike[str],
    title: str,
) -> Path:
    """Scatter of a 2-D projection, one colour per group."""
    fig = _figure(6, 6)
    ax = fig.add_subplot()
    for i, name in enumerate(names):
        pts = coords[labels == i]
        ax.scatter(
            pts[:, 0],
            pts[:, 1],
            s=6,
            alpha=0.6,
            color=_GROUP_COLOURS[i % len(_GROUP_COLOURS)],
            label=f"{name} ({len(pts)})",
            linewidths=0,
        )
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_title(title)
    ax.legend(fontsize=8, markerscale=2, frameon=False)
    return _save(fig, path)
