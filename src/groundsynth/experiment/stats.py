"""Statistics of the experiment: paired differences between regimes with bootstrap CIs.

Runs of two regimes that share a seed share everything the seed controls (subsets, weight
initialisation, data order), so the fair comparison is *paired*: the difference per seed,
then a bootstrap over seeds. With few seeds the interval is wide, and with one seed it is
undefined (nan) — that is the honest answer, not a failure.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np

__all__ = ["paired_bootstrap"]


def paired_bootstrap(
    a: Mapping[int, float],
    b: Mapping[int, float],
    *,
    resamples: int = 10_000,
    confidence: float = 0.95,
    seed: int = 0,
) -> dict[str, float | int]:
    """Mean of ``a[s] - b[s]`` over the seeds both have, with a percentile bootstrap CI.

    Returns ``{"mean", "ci95_low", "ci95_high", "n", "p_greater"}`` where ``p_greater`` is the
    bootstrap share of resampled means above zero (how often ``a`` beats ``b``).
    """
    seeds = sorted(set(a) & set(b))
    d = np.array([a[s] - b[s] for s in seeds], dtype=np.float64)
    d = d[~np.isnan(d)]
    n = len(d)
    if n == 0:
        return {
            "mean": math.nan,
            "ci95_low": math.nan,
            "ci95_high": math.nan,
            "n": 0,
            "p_greater": math.nan,
        }
    mean = float(d.mean())
    if n < 2:
        return {
            "mean": mean,
            "ci95_low": math.nan,
            "ci95_high": math.nan,
            "n": 1,
            "p_greater": math.nan,
        }
    rng = np.random.default_rng(seed)
    means = d[rng.integers(0, n, size=(resamples, n))].mean(axis=1)
    alpha = (1 - confidence) / 2
    lo, hi = np.quantile(means, [alpha, 1 - alpha])
    return {
        "mean": mean,
        "ci95_low": float(lo),
        "ci95_high": float(hi),
        "n": n,
        "p_greater": float((means > 0).mean()),
    }
