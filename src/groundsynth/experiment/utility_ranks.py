"""Rank correlations for :mod:`.utility_stats`: Spearman's rho and Kendall's tau-b of many
rows at once (the bootstrap replicates), scipy's point values and p-values, and the bootstrap
over sets and seeds (see :mod:`.utility_stats` for why the seeds are drawn jointly)."""

from __future__ import annotations

import math
import warnings

import numpy as np

__all__ = ["kendall_tau_b_rows", "spearman_rows"]

#: Kendall's sign matrices are built this many elements at a time (bounds memory at ~100 sets).
_CHUNK_ELEMENTS = 2_000_000


def spearman_rows(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Spearman's rho of each row of ``x`` with the same row of ``y`` (2-D, same shape):
    Pearson's correlation of average ranks, nan where a row is constant."""
    from scipy.stats import rankdata

    x, y = np.atleast_2d(np.asarray(x, float)), np.atleast_2d(np.asarray(y, float))
    rx, ry = rankdata(x, axis=1), rankdata(y, axis=1)
    rx -= rx.mean(axis=1, keepdims=True)
    ry -= ry.mean(axis=1, keepdims=True)
    num = (rx * ry).sum(axis=1)
    den = np.sqrt((rx * rx).sum(axis=1) * (ry * ry).sum(axis=1))
    ok = (np.ptp(x, axis=1) > 0) & (np.ptp(y, axis=1) > 0)
    out = np.full(len(x), math.nan)
    out[ok] = np.clip(num[ok] / den[ok], -1.0, 1.0)
    return out


def kendall_tau_b_rows(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Kendall's tau-b of each row of ``x`` with the same row of ``y`` (2-D, same shape).

    With pairwise signs ``sx[i, j] = sign(x_i - x_j)`` (likewise ``sy``), tau-b is
    ``sum(sx * sy) / sqrt(#(sx != 0) * #(sy != 0))``: concordant minus discordant pairs
    over the geometric mean of the pairs untied in x and untied in y (both sums run over
    the full matrix, which counts every pair twice on top and bottom alike). nan where a
    row is constant, as scipy's ``kendalltau``.
    """
    x, y = np.atleast_2d(np.asarray(x, float)), np.atleast_2d(np.asarray(y, float))
    rows, n = x.shape
    out = np.full(rows, math.nan)
    step = max(1, _CHUNK_ELEMENTS // max(n * n, 1))
    for start in range(0, rows, step):
        xs, ys = x[start : start + step], y[start : start + step]
        sx = np.sign(xs[:, :, None] - xs[:, None, :])
        sy = np.sign(ys[:, :, None] - ys[:, None, :])
        num = (sx * sy).sum(axis=(1, 2))
        den = np.sqrt(
            np.count_nonzero(sx, axis=(1, 2)).astype(float) * np.count_nonzero(sy, axis=(1, 2))
        )
        chunk = out[start : start + step]
        ok = den > 0
        chunk[ok] = np.clip(num[ok] / den[ok], -1.0, 1.0)
    return out


def _spearman(x: np.ndarray, y: np.ndarray) -> float:
    """Spearman's rho over the entries where both are finite; nan below 3 or if constant."""
    keep = ~np.isnan(x) & ~np.isnan(y)
    if keep.sum() < 3:
        return math.nan
    return float(spearman_rows(x[keep][None], y[keep][None])[0])


def _scipy_point(x: np.ndarray, y: np.ndarray) -> tuple[float, float, float, float]:
    """Spearman's rho, its p, Kendall's tau-b, its p: scipy's values."""
    from scipy import stats

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", stats.ConstantInputWarning)
        rho = stats.spearmanr(x, y)
        tau = stats.kendalltau(x, y)
    return float(rho.statistic), float(rho.pvalue), float(tau.statistic), float(tau.pvalue)


def _row_means(matrix: np.ndarray) -> np.ndarray:
    """Mean over the last axis ignoring nan; nan where nothing is left (and no warning)."""
    present = ~np.isnan(matrix)
    counts = present.sum(axis=-1)
    sums = np.where(present, matrix, 0.0).sum(axis=-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return sums / counts


def _bootstrap(
    x: np.ndarray, g: np.ndarray, *, resamples: int, confidence: float, seed: int
) -> tuple[tuple[float, float], tuple[float, float]]:
    """Percentile intervals of Spearman and Kendall between ``x`` (n sets) and the mean over
    seeds of ``g`` (n sets x s seeds), drawing sets and (jointly for all sets) seeds."""
    rng = np.random.default_rng(seed)
    n, s = g.shape
    seed_draw = rng.integers(0, s, size=(resamples, s))
    set_draw = rng.integers(0, n, size=(resamples, n))
    means = _row_means(g[:, seed_draw]).T  # (resamples, n): every set's mean over the drawn seeds
    yb = np.take_along_axis(means, set_draw, axis=1)
    xb = x[set_draw]
    keep = ~np.isnan(yb).any(axis=1)  # a drawn set with none of the drawn seeds
    xb, yb = xb[keep], yb[keep]
    alpha = (1 - confidence) / 2
    intervals = []
    for stat in (spearman_rows(xb, yb), kendall_tau_b_rows(xb, yb)):
        stat = stat[~np.isnan(stat)]
        if len(stat) == 0:
            intervals.append((math.nan, math.nan))
        else:
            lo, hi = np.quantile(stat, [alpha, 1 - alpha])
            intervals.append((float(lo), float(hi)))
    return intervals[0], intervals[1]
