"""Which metric of a synthetic set predicts its downstream utility? Rank statistics over sets.

A family of synthetic sets (a dozen or more, from a few generator runs) differs in quality.
Each set has interpretable metrics (label fidelity, FD, KID, precision/recall, ...) and a
*utility*: the gain in segmentation IoU of training on real + set over real alone, per seed
and per domain. The unit of analysis is the set; the question is whether ordering the sets
by a metric orders them by utility, so everything here is a rank statistic:

- :func:`utility_table`: per set and domain, the mean gain over seeds with a Student-t
  interval (the seeds are few; see :mod:`.stats` for why not the bootstrap there).
- :func:`rank_correlations`: per domain and metric, Spearman's rho and Kendall's tau-b
  between the metric and the set's mean gain (values and p-values are scipy's), with a
  bootstrap interval that resamples *both* sources of noise (below), and a
  leave-one-generator-out concordance (below). ``oriented_*`` multiply by the metric's
  direction (+1: higher is better, -1: lower is better), so for every metric "+1 = the
  metric orders the sets exactly as their utility".
- :func:`combination_scores` and :func:`best_predictors`: the best single metric and the
  best pair of metrics (mean of their oriented ranks).

The row-wise rank correlations and the bootstrap live in :mod:`.utility_ranks`, the
checks across generators in :mod:`.utility_generators`; their public names are importable
from here too.

**Bootstrap over sets and seeds.** A replicate draws the sets with replacement (which sets
happened to be in the family) and the seeds with replacement (which seeds happened to be
run), recomputes each drawn set's mean gain over the drawn seeds and then the correlation;
the interval is the percentile interval of the replicates. The drawn seed list is the *same
for every set*: a seed fixes the real-only baseline and the data order for all sets, so a
lucky seed lifts every set's gain together. Redrawing seeds independently per set would add
that shared noise to the differences between sets and widen the interval spuriously.
Replicates whose correlation is undefined (metric or gains constant over the drawn sets,
e.g. all draws of one set) are dropped. For a fixed ``seed`` the draws depend only on the
number of usable sets and of seeds, so metrics with the same usable sets share their draws
(common random numbers: their intervals differ by the metrics, not by the luck of the draw).

**Leave-one-generator-out concordance** (``logo_concordance``). Sets from one generator
run share a style, and a metric can order the sets *within* the generators it has been
looked at on while failing on a new one. The check asks: does the metric place the sets of
a generator held out relative to each other and to the rest correctly? For each generator
``g`` (with at least 2 generators among the usable sets), take every pair of sets with at
least one set from ``g`` (pairs across ``g`` and the rest, and pairs within ``g``); a pair
scores 1 when its order by the oriented metric agrees with its order by mean gain, 0 when
it disagrees, 0.5 when either is tied. The concordance is the mean score over the pairs of
all held-out generators pooled (the per-generator shares weighted by their number of
pairs; a pair across two generators counts once for each). 0.5 is chance, 1 perfect,
nan with fewer than 2 generators. A single metric with a fixed direction has nothing fitted,
so for it the check is a per-generator view of Kendall's concordance; it matters where a
choice is made from the data: :func:`best_predictors` also reports it with the choice
redone without the held-out generator's sets (``logo_concordance_reselected``).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd

from groundsynth.experiment.utility_generators import (
    _reselected_logo,
    logo_concordance,
    within_generator_spearman,
)
from groundsynth.experiment.utility_ranks import (
    _bootstrap,
    _row_means,
    _scipy_point,
    _spearman,
    kendall_tau_b_rows,
    spearman_rows,
)

__all__ = [
    "best_predictors",
    "combination_scores",
    "kendall_tau_b_rows",
    "logo_concordance",
    "rank_correlations",
    "spearman_rows",
    "utility_table",
    "within_generator_spearman",
]

_GAIN_COLUMNS = ("set", "seed", "domain", "gain")
_CORRELATION_COLUMNS = [
    "domain",
    "metric",
    "direction",
    "n_sets",
    "spearman",
    "spearman_p",
    "spearman_ci95_low",
    "spearman_ci95_high",
    "kendall",
    "kendall_p",
    "kendall_ci95_low",
    "kendall_ci95_high",
    "oriented_spearman",
    "oriented_kendall",
    "logo_concordance",
    "logo_generators",
    "constant",
    "within_generator",
]


# --------------------------------------------------------------------------- validation


def _check_columns(frame: pd.DataFrame, required: Sequence[str], what: str) -> None:
    missing = [c for c in required if c not in frame.columns]
    if missing:
        raise ValueError(f"{what} lacks column(s) {missing}; it has {list(frame.columns)}")


def _check_gains(gains: pd.DataFrame) -> None:
    _check_columns(gains, _GAIN_COLUMNS, "gains")
    dup = gains.duplicated(["set", "seed", "domain"])
    if dup.any():
        first = gains.loc[dup, ["set", "seed", "domain"]].iloc[0].tolist()
        raise ValueError(f"gains has several rows for (set, seed, domain) = {first}; keep one")


def _check_metrics(metrics: pd.DataFrame, directions: Mapping[str, int]) -> None:
    _check_columns(metrics, ("set", "generator"), "metrics")
    if metrics["set"].duplicated().any():
        dups = sorted(metrics.loc[metrics["set"].duplicated(), "set"].astype(str).unique())
        raise ValueError(f"metrics must have one row per set; repeated: {dups}")
    _check_columns(metrics, list(directions), "metrics (for the metrics named in directions)")
    bad = {m: d for m, d in directions.items() if d not in (1, -1)}
    if bad:
        raise ValueError(f"directions must be +1 (higher is better) or -1 (lower is better): {bad}")


# --------------------------------------------------------------------------- gains


def utility_table(gains: pd.DataFrame, *, confidence: float = 0.95) -> pd.DataFrame:
    """Per (set, domain): ``gain_mean``, ``gain_std`` (ddof 1), ``gain_ci95_low/high`` (the
    Student-t interval of the mean over seeds; nan with one seed) and ``n_seeds`` (seeds with
    a finite gain). Rows in the order the (set, domain) pairs first appear in ``gains``."""
    from scipy import stats

    _check_gains(gains)
    rows = []
    for (name, domain), group in gains.groupby(["set", "domain"], sort=False):
        g = group["gain"].to_numpy(float)
        g = g[~np.isnan(g)]
        n = len(g)
        mean = float(g.mean()) if n else math.nan
        std = float(g.std(ddof=1)) if n > 1 else math.nan
        half = (
            float(stats.t.ppf(0.5 + confidence / 2, n - 1)) * std / math.sqrt(n)
            if n > 1
            else math.nan
        )
        rows.append((name, domain, mean, std, mean - half, mean + half, n))
    columns = [
        "set",
        "domain",
        "gain_mean",
        "gain_std",
        "gain_ci95_low",
        "gain_ci95_high",
        "n_seeds",
    ]
    return pd.DataFrame(rows, columns=columns)


def _gain_matrix(gains: pd.DataFrame, domain: str, sets: Sequence[str]) -> np.ndarray:
    """Gains of ``sets`` (rows, in that order) by seed (columns); nan where a set lacks a seed."""
    part = gains[gains["domain"] == domain]
    return (
        part.pivot(index="set", columns="seed", values="gain")
        .reindex(index=list(sets))
        .to_numpy(dtype=float)
    )


# --------------------------------------------------------------------------- public analysis


def rank_correlations(
    metrics: pd.DataFrame,
    gains: pd.DataFrame,
    directions: Mapping[str, int],
    *,
    resamples: int = 2000,
    confidence: float = 0.95,
    seed: int = 0,
) -> pd.DataFrame:
    """Rank correlation of each metric with the sets' mean gain, per domain.

    ``metrics``: one row per set (``set``, ``generator``, one float column per metric, nan
    where not computed); ``gains``: long (``set``, ``seed``, ``domain``, ``gain``);
    ``directions``: metric -> +1 (higher is better) or -1; only these metrics are analysed.

    One row per (domain, metric), domains in the order they first appear in ``gains``,
    metrics in the order of ``directions``. The usable sets are those with the metric and at
    least one finite gain in the domain (``n_sets``); a set's mean gain is over the seeds it
    has. ``spearman``/``kendall`` (tau-b) and their p-values are scipy's; the
    ``*_ci95_low/high`` are the set-and-seed bootstrap percentile interval at ``confidence``
    (see the module docstring); ``oriented_*`` = ``direction`` x the correlation;
    ``logo_concordance``/``logo_generators`` the leave-one-generator-out concordance (nan for
    a constant metric); ``within_generator``: :func:`within_generator_spearman` of the
    oriented metric. ``constant``: the metric takes fewer than 2 distinct values over the
    usable sets. A constant metric, fewer than 3 usable sets or constant mean gains give nan
    correlations and intervals, without warnings.
    """
    _check_metrics(metrics, directions)
    _check_gains(gains)
    sets = metrics["set"].tolist()
    generators = metrics["generator"].to_numpy()
    rows = []
    for domain in pd.unique(gains["domain"]):
        g_all = _gain_matrix(gains, domain, sets)
        mean_all = _row_means(g_all)
        for name, direction in directions.items():
            x_all = metrics[name].to_numpy(float)
            use = ~np.isnan(x_all) & ~np.isnan(mean_all)
            x, g, y = x_all[use], g_all[use], mean_all[use]
            g = g[:, ~np.isnan(g).all(axis=0)]  # seeds none of the usable sets has
            n = int(use.sum())
            constant = len(np.unique(x)) < 2
            nan2 = (math.nan, math.nan)
            if constant or n < 3 or np.ptp(y) == 0:
                rho, rho_p, tau, tau_p = (math.nan,) * 4
                ci_rho, ci_tau = nan2, nan2
            else:
                rho, rho_p, tau, tau_p = _scipy_point(x, y)
                ci_rho, ci_tau = _bootstrap(
                    x, g, resamples=resamples, confidence=confidence, seed=seed
                )
            logo, n_gen = (
                (math.nan, 0)
                if constant
                else logo_concordance(direction * x_all, mean_all, generators)
            )
            within = (
                math.nan
                if constant
                else within_generator_spearman(direction * x_all, mean_all, generators)
            )
            rows.append(
                (domain, name, int(direction), n, rho, rho_p, *ci_rho, tau, tau_p, *ci_tau)
                + (direction * rho, direction * tau, logo, n_gen, bool(constant), within)
            )
    return pd.DataFrame(rows, columns=_CORRELATION_COLUMNS)


def combination_scores(
    metrics: pd.DataFrame, directions: Mapping[str, int], names: Sequence[str]
) -> pd.Series:
    """Combined score of ``names`` per set (Series indexed by ``set``): the mean over the
    metrics of the set's oriented rank, ``(rank - 1) / (n - 1)`` in 0..1 (1 = best), where
    ``rank`` is the average rank of ``direction * value`` among the ``n`` sets that have all
    of ``names`` (0.5 if ``n`` is 1). A set lacking any of them gets nan."""
    names = list(names)
    unknown = [m for m in names if m not in directions]
    if unknown:
        raise ValueError(f"no direction for {unknown}; directions has {list(directions)}")
    _check_metrics(metrics, {m: directions[m] for m in names})
    frame = metrics.set_index("set")[names].astype(float)
    common = frame.notna().all(axis=1)
    out = pd.Series(math.nan, index=frame.index, name="+".join(names))
    n = int(common.sum())
    if n == 0:
        return out
    oriented = frame[common] * np.array([directions[m] for m in names], dtype=float)
    ranks = oriented.rank(method="average")
    scaled = (ranks - 1) / (n - 1) if n > 1 else ranks * 0 + 0.5
    out[common] = scaled.mean(axis=1)
    return out


def best_predictors(
    metrics: pd.DataFrame,
    gains: pd.DataFrame,
    directions: Mapping[str, int],
    correlations: pd.DataFrame,
    *,
    resamples: int = 2000,
    seed: int = 0,
    confidence: float = 0.95,
) -> dict[str, dict]:
    """The best single metric and the best pair of metrics at predicting utility, per domain.

    ``correlations`` is :func:`rank_correlations` of the same inputs. Per domain:

    - ``single``: the metric with the highest ``oriented_spearman`` (``metric`` None if all
      are nan), its ``oriented_spearman``, ``ci95_low/high`` (its oriented bootstrap
      interval), ``logo_concordance`` and ``logo_concordance_reselected``;
    - ``combination``: the pair of non-constant metrics whose :func:`combination_scores` has
      the highest Spearman with the mean gain (``metrics``: the pair), with the same fields,
      its interval from the same set-and-seed bootstrap (None with fewer than 2 non-constant
      metrics);
    - ``ranking``: the metrics by ``oriented_spearman``, best first, nan last.

    Picking the best of many metrics or pairs on the same sets is optimistic: the winner's
    correlation (and its interval, which does not redo the choice) is biased upward by the
    selection, more so with many candidates and few sets. The held-out figures are reported
    beside it for this reason: ``logo_concordance`` scores the chosen predictor on each
    generator's pairs, and ``logo_concordance_reselected`` redoes the choice without the
    held-out generator's sets before scoring it there, so it carries no selection bias from
    that generator (0.5 = chance). Ties in the choice go to the first in ``directions``
    order.
    """
    _check_metrics(metrics, directions)
    _check_gains(gains)
    sets = metrics["set"].tolist()
    generators = metrics["generator"].to_numpy()
    result: dict[str, dict] = {}
    for domain, table in correlations.groupby("domain", sort=False):
        table = table.set_index("metric").loc[[m for m in directions if m in set(table["metric"])]]
        ranking = list(
            table["oriented_spearman"]
            .sort_values(ascending=False, na_position="last", kind="stable")
            .index
        )
        mean_gain = _row_means(_gain_matrix(gains, domain, sets))
        usable = [m for m in table.index if not table.at[m, "constant"]]

        singles = {m: directions[m] * metrics[m].to_numpy(float) for m in usable}
        best = (
            ranking[0]
            if ranking and not math.isnan(table.at[ranking[0], "oriented_spearman"])
            else None
        )
        single: dict[str, object] = {"metric": best}
        if best is None:
            single |= dict.fromkeys(("oriented_spearman", "ci95_low", "ci95_high"), math.nan)
            single["logo_concordance"] = math.nan
        else:
            row = table.loc[best]
            lo, hi = row["spearman_ci95_low"], row["spearman_ci95_high"]
            if directions[best] < 0:  # the oriented interval of -rho is (-high, -low)
                lo, hi = -hi, -lo
            single |= {
                "oriented_spearman": float(row["oriented_spearman"]),
                "ci95_low": float(lo),
                "ci95_high": float(hi),
                "logo_concordance": float(row["logo_concordance"]),
            }
        single["logo_concordance_reselected"] = _reselected_logo(singles, mean_gain, generators)

        pairs = {
            pair: combination_scores(metrics, directions, pair).reindex(sets).to_numpy(float)
            for pair in itertools.combinations(usable, 2)
        }
        fits = {pair: _spearman(score, mean_gain) for pair, score in pairs.items()}
        fits = {pair: r for pair, r in fits.items() if not math.isnan(r)}
        combination = None
        if fits:
            chosen = max(fits, key=fits.__getitem__)
            frame = metrics[["set", "generator"]].assign(combination=pairs[chosen])
            row = rank_correlations(
                frame,
                gains[gains["domain"] == domain],
                {"combination": 1},
                resamples=resamples,
                confidence=confidence,
                seed=seed,
            ).iloc[0]
            combination = {
                "metrics": list(chosen),
                "oriented_spearman": float(row["spearman"]),
                "ci95_low": float(row["spearman_ci95_low"]),
                "ci95_high": float(row["spearman_ci95_high"]),
                "logo_concordance": float(row["logo_concordance"]),
                "logo_concordance_reselected": _reselected_logo(pairs, mean_gain, generators),
            }
        result[domain] = {"single": single, "combination": combination, "ranking": ranking}
    return result
