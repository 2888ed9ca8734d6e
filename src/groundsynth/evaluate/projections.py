"""2-D projections (t-SNE, UMAP) and silhouette scores of feature samples, by group.

Groups are named feature sets: ``real``, ``synthetic`` or one group per generator. The inputs
are the bounded reservoir samples of :class:`~groundsynth.evaluate.fidelity.FeatureStats`, so
these O(n²) methods never see more than ``max_per_group`` rows per group.

- :func:`project`: t-SNE (scikit-learn, always available with it) or UMAP (``umap-learn``,
  optional: :func:`umap_available`) to 2-D, seeded.
- :func:`silhouettes`: scikit-learn's silhouette score (Euclidean, in the feature space, not
  in the projection) over all groups and for the reference group against each other group.
  Near 0 (or below): the groups overlap — synthetic features look like real ones; near 1: a
  classifier could tell them apart at a glance.
"""

from __future__ import annotations

import importlib.util
import logging
from collections.abc import Mapping
from typing import Any, Literal

import numpy as np

from groundsynth._optional import lazy_import
from groundsynth.errors import InputError

__all__ = [
    "METHODS",
    "Method",
    "balanced_sample",
    "project",
    "silhouettes",
    "umap_available",
]

logger = logging.getLogger(__name__)

Method = Literal["tsne", "umap"]
METHODS: tuple[str, ...] = ("tsne", "umap")
#: Up to this many points t-SNE runs its exact gradient: faster than Barnes-Hut at this size
#: (whose OpenMP threads spin badly on busy machines: 18 s vs 0.15 s for 32 points here).
EXACT_TSNE_MAX = 500


def umap_available() -> bool:
    """Whether the optional ``umap-learn`` package is installed (checked without importing)."""
    return importlib.util.find_spec("umap") is not None


def balanced_sample(
    groups: Mapping[str, np.ndarray], max_per_group: int, seed: int = 0
) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Stack at most ``max_per_group`` rows of each group (a seeded subset where larger).

    Returns ``(features (N, D), labels (N,) int, group names)``; empty groups are dropped.
    """
    if max_per_group < 1:
        raise InputError(f"max_per_group must be >= 1, got {max_per_group}")
    rng = np.random.default_rng(seed)
    xs, labels, names = [], [], []
    for name, x in groups.items():
        x = np.asarray(x, dtype=np.float64)
        if x.ndim != 2 or not len(x):
            continue
        if len(x) > max_per_group:
            x = x[np.sort(rng.choice(len(x), max_per_group, replace=False))]
        labels.append(np.full(len(x), len(names)))
        names.append(name)
        xs.append(x)
    if not xs:
        return np.zeros((0, 0)), np.zeros(0, np.int64), []
    dims = {x.shape[1] for x in xs}
    if len(dims) > 1:
        raise InputError(f"feature groups differ in dimension: {sorted(dims)}")
    return np.concatenate(xs), np.concatenate(labels).astype(np.int64), names


def project(features: np.ndarray, method: Method, *, seed: int = 0) -> np.ndarray:
    """2-D embedding ``(N, 2)`` of ``(N, D)`` features by t-SNE or UMAP, seeded.

    Raises:
        InputError: unknown method or fewer than 4 points.
        MissingDependencyError: scikit-learn (t-SNE) or umap-learn (UMAP) is not installed.
    """
    if method not in METHODS:
        raise InputError(f"unknown projection {method!r}; choose one of {', '.join(METHODS)}")
    x = np.asarray(features, dtype=np.float32)
    n = len(x)
    if x.ndim != 2 or n < 4:
        raise InputError(f"a projection needs at least 4 feature vectors (N, D), got {x.shape}")
    if method == "tsne":
        manifold = lazy_import("sklearn.manifold")
        perplexity = float(min(30.0, max(1.0, (n - 1) / 3)))
        tsne = manifold.TSNE(
            n_components=2,
            perplexity=perplexity,
            init="pca",
            learning_rate="auto",
            random_state=seed,
            method="exact" if n <= EXACT_TSNE_MAX else "barnes_hut",
        )
        return np.asarray(tsne.fit_transform(x), dtype=np.float64)
    umap = lazy_import("umap")
    reducer = umap.UMAP(
        n_components=2, n_neighbors=int(min(15, n - 1)), random_state=seed, n_jobs=1
    )
    return np.asarray(reducer.fit_transform(x), dtype=np.float64)


def silhouettes(
    groups: Mapping[str, np.ndarray],
    *,
    reference: str = "real",
    max_per_group: int = 2000,
    seed: int = 0,
) -> dict[str, Any]:
    """Silhouette scores (in [-1, 1]) of the feature groups: overall and pairwise.

    ``overall`` labels every row by its group; ``pairwise[<reference> vs <g>]`` uses only the
    reference group and group ``g``. A score is ``None`` where it is undefined (a group with
    fewer than 2 rows, or a single group).
    """
    metrics = lazy_import("sklearn.metrics")
    x, labels, names = balanced_sample(groups, max_per_group, seed)

    def score(mask: np.ndarray) -> float | None:
        """Silhouette of the rows in ``mask``; None where undefined."""
        lab = labels[mask]
        kinds, counts = np.unique(lab, return_counts=True)
        if len(kinds) < 2 or counts.min() < 2 or mask.sum() <= len(kinds):
            return None
        return round(float(metrics.silhouette_score(x[mask], lab, metric="euclidean")), 6)

    out: dict[str, Any] = {
        "groups": {n: int((labels == i).sum()) for i, n in enumerate(names)},
        "overall": score(np.ones(len(labels), dtype=bool)) if len(names) > 1 else None,
        "pairwise": {},
    }
    if reference in names:
        r = names.index(reference)
        for i, name in enumerate(names):
            if i != r:
                out["pairwise"][f"{reference} vs {name}"] = score((labels == r) | (labels == i))
    return out
