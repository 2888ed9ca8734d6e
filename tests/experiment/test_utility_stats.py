from __future__ import annotations

import math
import warnings

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from groundsynth.experiment.utility_stats import (
    best_predictors,
    combination_scores,
    kendall_tau_b_rows,
    logo_concordance,
    rank_correlations,
    spearman_rows,
    utility_table,
    within_generator_spearman,
)


def _gains(table: np.ndarray, domains=("A",), sets=None) -> pd.DataFrame:
    """Long gains from a (sets x seeds) array, the same in every domain."""
    sets = sets or [f"s{i}" for i in range(table.shape[0])]
    rows = [
        (name, seed, domain, float(table[i, seed]))
        for domain in domains
        for i, name in enumerate(sets)
        for seed in range(table.shape[1])
    ]
    return pd.DataFrame(rows, columns=["set", "seed", "domain", "gain"])


def _metrics(generators=None, **columns) -> pd.DataFrame:
    n = len(next(iter(columns.values())))
    frame = pd.DataFrame({"set": [f"s{i}" for i in range(n)]})
    frame["generator"] = generators if generators is not None else ["g"] * n
    for name, values in columns.items():
        frame[name] = np.asarray(values, dtype=float)
    return frame


def _row(table: pd.DataFrame, metric: str, domain: str = "A") -> pd.Series:
    return table[(table["metric"] == metric) & (table["domain"] == domain)].iloc[0]


def test_point_estimates_equal_scipy_with_ties_and_missing_values():
    rng = np.random.default_rng(3)
    n = 11
    tied = rng.integers(0, 4, size=n).astype(float)  # many ties
    smooth = rng.normal(size=n)
    smooth[[2, 7]] = np.nan  # not computed on two sets
    metrics = _metrics(tied=tied, smooth=smooth)
    table = np.round(rng.normal(size=(n, 3)), 1)  # rounded: ties in the mean gains too
    table[:, 2] += 0.3 * tied
    gains = _gains(table, domains=("A", "B"))
    gains.loc[gains["domain"] == "B", "gain"] *= -1
    res = rank_correlations(metrics, gains, {"tied": 1, "smooth": -1}, resamples=50)
    assert list(res["domain"]) == ["A", "A", "B", "B"]
    for domain, sign in (("A", 1), ("B", -1)):
        mean = sign * table.mean(axis=1)
        for name, direction in (("tied", 1), ("smooth", -1)):
            x = metrics[name].to_numpy()
            keep = ~np.isnan(x)
            rho = stats.spearmanr(x[keep], mean[keep])
            tau = stats.kendalltau(x[keep], mean[keep])
            row = _row(res, name, domain)
            assert row["n_sets"] == keep.sum()
            assert row["spearman"] == pytest.approx(rho.statistic, abs=1e-12)
            assert row["spearman_p"] == pytest.approx(rho.pvalue, rel=1e-9)
            assert row["kendall"] == pytest.approx(tau.statistic, abs=1e-12)
            assert row["kendall_p"] == pytest.approx(tau.pvalue, rel=1e-9)
            assert row["oriented_spearman"] == pytest.approx(direction * rho.statistic)
            assert row["oriented_kendall"] == pytest.approx(direction * tau.statistic)
            assert not row["constant"]


def test_row_statistics_equal_scipy_on_tied_arrays():
    rng = np.random.default_rng(0)
    for n in (3, 5, 12, 40):
        x = rng.integers(0, 4, size=(60, n)).astype(float)
        y = rng.integers(0, 6, size=(60, n)).astype(float)
        x[0] = 2.0  # a constant row: undefined
        tau, rho = kendall_tau_b_rows(x, y), spearman_rows(x, y)
        assert math.isnan(tau[0]) and math.isnan(rho[0])
        for i in range(1, 60):
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", stats.ConstantInputWarning)
                want_tau = stats.kendalltau(x[i], y[i]).statistic
                want_rho = stats.spearmanr(x[i], y[i]).statistic
            assert tau[i] == pytest.approx(want_tau, abs=1e-12, nan_ok=True)
            assert rho[i] == pytest.approx(want_rho, abs=1e-12, nan_ok=True)


def test_bootstrap_of_a_monotone_metric_is_one_and_deterministic():
    # one seed, a metric that orders the sets exactly: every replicate with 2+ distinct sets
    # has rho = tau = 1, and constant replicates are dropped
    metrics = _metrics(q=[1, 2, 3, 4, 5])
    gains = _gains(np.array([[0.1], [0.2], [0.3], [0.5], [0.8]]))
    row = _row(rank_correlations(metrics, gains, {"q": 1}, resamples=500), "q")
    assert row["spearman_ci95_low"] == pytest.approx(1.0)
    assert row["spearman_ci95_high"] == pytest.approx(1.0)
    assert (row["kendall_ci95_low"], row["kendall_ci95_high"]) == pytest.approx((1.0, 1.0))


def test_bootstrap_is_deterministic_and_covers_the_estimate():
    rng = np.random.default_rng(5)
    quality = rng.normal(size=12)
    metrics = _metrics(m=quality + rng.normal(size=12))
    gains = _gains(quality[:, None] + rng.normal(size=(12, 4)))
    first = rank_correlations(metrics, gains, {"m": 1}, resamples=400, seed=1)
    again = rank_correlations(metrics, gains, {"m": 1}, resamples=400, seed=1)
    other = rank_correlations(metrics, gains, {"m": 1}, resamples=400, seed=2)
    pd.testing.assert_frame_equal(first, again)
    assert first.at[0, "spearman_ci95_low"] != other.at[0, "spearman_ci95_low"]
    row = first.iloc[0]
    for stat in ("spearman", "kendall"):
        assert row[f"{stat}_ci95_low"] < row[stat] < row[f"{stat}_ci95_high"]
        assert row[f"{stat}_ci95_high"] - row[f"{stat}_ci95_low"] > 0.2  # noisy: a real width


def test_seeds_are_drawn_jointly_for_all_sets():
    # a seed shifts every set's gain by the same huge amount (its real-only baseline): the
    # sets' order never changes under a joint seed draw, so the interval stays [1, 1]; drawing
    # seeds independently per set would let the +-100 shifts swamp the 0.1 steps
    base = np.arange(8) * 0.1
    offsets = np.array([100.0, -100.0, 0.0, 50.0])
    metrics = _metrics(q=np.arange(8))
    gains = _gains(base[:, None] + offsets[None, :])
    row = _row(rank_correlations(metrics, gains, {"q": 1}, resamples=500), "q")
    for stat in ("spearman", "kendall"):
        assert row[stat] == pytest.approx(1.0)
        assert row[f"{stat}_ci95_low"] == pytest.approx(1.0)
        assert row[f"{stat}_ci95_high"] == pytest.approx(1.0)


def test_seeds_are_resampled():
    # seed 0 orders the sets like the metric, seed 1 reverses them, the mean follows seed 0.
    # A quarter of the replicates draw seed 1 twice: rho = -1 there (whenever 2+ distinct
    # sets are drawn, 8/9 of the time), so the 2.5 % quantile is -1. Without seed
    # resampling every replicate would be +1.
    metrics = _metrics(q=[1, 2, 3])
    gains = _gains(np.array([[0.0, 0.5], [1.0, 0.4], [2.0, 0.3]]))
    row = _row(rank_correlations(metrics, gains, {"q": 1}, resamples=1000), "q")
    assert row["spearman"] == pytest.approx(1.0)
    assert row["spearman_ci95_low"] == pytest.approx(-1.0)
    assert row["spearman_ci95_high"] == pytest.approx(1.0)


def test_lower_is_better_metric_is_oriented():
    quality = np.array([0.1, 0.5, 0.2, 0.9, 0.4, 0.7])
    metrics = _metrics(fd=100 - 50 * quality, generators=["a", "a", "b", "b", "c", "c"])
    gains = _gains(np.column_stack([quality, quality + 0.01]))
    row = _row(rank_correlations(metrics, gains, {"fd": -1}, resamples=200), "fd")
    assert row["spearman"] == pytest.approx(-1.0) and row["kendall"] == pytest.approx(-1.0)
    assert row["oriented_spearman"] == pytest.approx(1.0)
    assert row["oriented_kendall"] == pytest.approx(1.0)
    assert row["direction"] == -1
    assert row["logo_concordance"] == pytest.approx(1.0)  # oriented before the pairs are scored


def test_constant_or_too_few_sets_give_nan_without_warnings():
    metrics = _metrics(flat=[2.0] * 5, sparse=[1.0, np.nan, 3.0, np.nan, np.nan])
    metrics["generator"] = ["a", "b", "a", "b", "a"]
    gains = _gains(np.arange(10.0).reshape(5, 2))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        res = rank_correlations(metrics, gains, {"flat": 1, "sparse": 1}, resamples=100)
    flat, sparse = _row(res, "flat"), _row(res, "sparse")
    assert flat["constant"] and flat["n_sets"] == 5
    assert not sparse["constant"] and sparse["n_sets"] == 2
    for row in (flat, sparse):
        for col in ("spearman", "spearman_p", "kendall", "spearman_ci95_low", "kendall_ci95_high"):
            assert math.isnan(row[col]), col
    assert math.isnan(flat["logo_concordance"]) and flat["logo_generators"] == 0


def test_logo_concordance_by_hand():
    # generators a (s0, s1), b (s2, s3), c (s4, s5); the metric ties s2/s3 and reverses s4/s5.
    # Pairs touching a: 1 within + 4 across, + the other 4 across = 9, all agree -> 9.
    # b: within tied (0.5) + 8 across agree -> 8.5 of 9; c: within wrong (0) + 8 -> 8 of 9.
    # Pooled: (9 + 8.5 + 8) / 27.
    values = np.array([1.0, 2.0, 3.0, 3.0, 5.0, 4.0])
    gain = np.array([0.1, 0.2, 0.4, 0.3, 0.5, 0.6])
    gens = np.array(["a", "a", "b", "b", "c", "c"])
    conc, used = logo_concordance(values, gain, gens)
    assert conc == pytest.approx(25.5 / 27) and used == 3
    # through rank_correlations, as a lower-is-better metric
    metrics = _metrics(m=-values, generators=list(gens))
    row = _row(rank_correlations(metrics, _gains(gain[:, None]), {"m": -1}, resamples=10), "m")
    assert row["logo_concordance"] == pytest.approx(25.5 / 27) and row["logo_generators"] == 3
    # one generator: nothing to hold out
    assert logo_concordance(values, gain, np.array(["a"] * 6))[1] == 0
    assert math.isnan(logo_concordance(values, gain, np.array(["a"] * 6))[0])
    # a set without the metric drops out: c's within pair goes, s4 vs a and b (4 pairs) stays
    holed = values.copy()
    holed[5] = np.nan
    conc, used = logo_concordance(holed, gain, gens)
    assert conc == pytest.approx((7 + 6.5 + 4) / 18) and used == 3


def test_combination_scores_by_hand():
    metrics = _metrics(a=[10, 20, 20, 40, np.nan], b=[4, 3, 2, 1, 2.5])
    score = combination_scores(metrics, {"a": 1, "b": -1}, ["a", "b"])
    # over s0..s3 only (s4 lacks a, and its b, between s1 and s2, must not count): a ranks 1, 2.5, 2.5, 4 -> 0, .5, .5, 1;
    # -b ranks 1, 2, 3, 4 -> 0, 1/3, 2/3, 1; mean -> 0, 5/12, 7/12, 1
    assert list(score.index) == ["s0", "s1", "s2", "s3", "s4"]
    assert score.iloc[:4].to_numpy() == pytest.approx([0, 5 / 12, 7 / 12, 1])
    assert math.isnan(score["s4"])
    only_b = combination_scores(metrics, {"a": 1, "b": -1}, ["b"])
    assert only_b.to_numpy() == pytest.approx([0, 0.25, 0.75, 1, 0.5])  # all 5 sets


def test_best_predictors_finds_the_pair_behind_the_gain():
    ra = np.arange(1, 9)  # rank of a, lower-is-better metric
    rb = np.array([1, 2, 5, 8, 4, 7, 3, 6])
    gain = (ra + rb).astype(float)  # utility is exactly the sum of the two ranks
    metrics = _metrics(
        a=90 - 10 * ra,
        b=rb,
        c=[3, 1, 4, 1, 5, 9, 2, 6],
        flat=[1.0] * 8,
        generators=["x", "x", "y", "y", "z", "z", "x", "y"],
    )
    directions = {"c": 1, "a": -1, "b": 1, "flat": 1}
    gains = _gains(gain[:, None] + np.array([[0.0, 3.0, -2.0]]), domains=("A", "B"))
    corr = rank_correlations(metrics, gains, directions, resamples=300)
    best = best_predictors(metrics, gains, directions, corr, resamples=300)
    assert set(best) == {"A", "B"}
    want = {
        m: d * stats.spearmanr(metrics[m], gain).statistic
        for m, d in directions.items()
        if m != "flat"
    }
    assert want["a"] > want["b"] > want["c"]  # a is the best single, but not perfect
    single, pair = best["A"]["single"], best["A"]["combination"]
    assert single["metric"] == "a"
    assert single["oriented_spearman"] == pytest.approx(want["a"]) and want["a"] < 0.9
    row = _row(corr, "a")  # the oriented interval of a lower-is-better metric is flipped
    assert (single["ci95_low"], single["ci95_high"]) == pytest.approx(
        (-row["spearman_ci95_high"], -row["spearman_ci95_low"])
    )
    assert single["ci95_low"] <= single["oriented_spearman"] <= single["ci95_high"]
    assert sorted(pair["metrics"]) == ["a", "b"]
    assert pair["oriented_spearman"] == pytest.approx(1.0)
    assert pair["ci95_low"] == pytest.approx(1.0) and pair["ci95_high"] == pytest.approx(1.0)
    # the pair orders every generator's sets right, even when chosen without them
    assert pair["logo_concordance"] == pytest.approx(1.0)
    assert pair["logo_concordance_reselected"] == pytest.approx(1.0)
    assert best["A"]["ranking"] == ["a", "b", "c", "flat"]  # the constant metric (nan) last


def test_utility_table_equals_t_interval():
    gains = _gains(np.array([[0.1, 0.3, 0.2, 0.6], [0.0, -0.1, 0.05, 0.02]]), domains=("A", "B"))
    gains = pd.concat([gains, pd.DataFrame([("solo", 0, "A", 0.4)], columns=gains.columns)])
    table = utility_table(gains).set_index(["set", "domain"])
    for name, values in (("s0", [0.1, 0.3, 0.2, 0.6]), ("s1", [0.0, -0.1, 0.05, 0.02])):
        d = np.array(values)
        lo, hi = stats.t.interval(0.95, len(d) - 1, loc=d.mean(), scale=stats.sem(d))
        row = table.loc[(name, "B")]
        assert row["gain_mean"] == pytest.approx(d.mean())
        assert row["gain_std"] == pytest.approx(d.std(ddof=1))
        assert (row["gain_ci95_low"], row["gain_ci95_high"]) == pytest.approx((lo, hi))
        assert row["n_seeds"] == 4
    solo = table.loc[("solo", "A")]
    assert solo["gain_mean"] == 0.4 and solo["n_seeds"] == 1
    assert math.isnan(solo["gain_ci95_low"]) and math.isnan(solo["gain_std"])


def test_invalid_inputs_name_the_problem():
    metrics = _metrics(a=[1, 2, 3])
    gains = _gains(np.ones((3, 1)))
    with pytest.raises(ValueError, match="missing_metric"):
        rank_correlations(metrics, gains, {"missing_metric": 1})
    with pytest.raises(ValueError, match=r"\+1"):
        rank_correlations(metrics, gains, {"a": 2})
    with pytest.raises(ValueError, match="several rows"):
        utility_table(pd.concat([gains, gains]))


def test_reselected_logo_redoes_the_choice_without_the_held_out_generator():
    # p swaps the two sets of generator c, q those of a; over all sets they tie and p (first)
    # is chosen: fixed LOGO = (9 + 9 + 8) / 27. Redoing the choice: without a, q is perfect
    # on b, c and is chosen, then swaps a's pair (8/9); without b they tie, p wins and is
    # right on b's pairs (9/9); without c, p is perfect and swaps c's pair (8/9): 25 / 27.
    gain = np.arange(1.0, 7.0)
    metrics = _metrics(
        p=[1, 2, 3, 4, 6, 5], q=[2, 1, 3, 4, 5, 6], generators=["a", "a", "b", "b", "c", "c"]
    )
    directions = {"p": 1, "q": 1}
    gains = _gains(gain[:, None])
    corr = rank_correlations(metrics, gains, directions, resamples=50)
    single = best_predictors(metrics, gains, directions, corr, resamples=50)["A"]["single"]
    assert single["metric"] == "p"
    assert single["logo_concordance"] == pytest.approx(26 / 27)
    assert single["logo_concordance_reselected"] == pytest.approx(25 / 27)


def test_within_generator_spearman_averages_each_generators_own_correlation():
    # across generators the metric separates g1 (high values, high gains) from g2; inside
    # each generator it orders the sets one way in g1 and the other way in g2
    x = np.array([10.0, 11, 12, 13, 1, 2, 3, 4])
    gain = np.array([5.0, 6, 8, 7, 4, 3, 1, 2])
    gens = np.array(["g1"] * 4 + ["g2"] * 4)
    want = np.mean(
        [stats.spearmanr(x[:4], gain[:4]).statistic, stats.spearmanr(x[4:], gain[4:]).statistic]
    )
    assert within_generator_spearman(x, gain, gens) == pytest.approx(want)
    assert want == pytest.approx((0.8 - 0.8) / 2)  # 0.8 in g1, -0.8 in g2
    assert stats.spearmanr(x, gain).statistic > 0.5  # the pooled figure hides it
    # generators with fewer than 3 usable sets, or constant, are left out; none left: nan
    x2 = x.copy()
    x2[5:] = np.nan
    assert within_generator_spearman(x2, gain, gens) == pytest.approx(0.8)
    assert math.isnan(within_generator_spearman(x2[4:], gain[4:], gens[4:]))
    table = rank_correlations(
        _metrics(generators=list(gens), m=x, fd=-x), _gains(gain[:, None]), {"m": 1, "fd": -1},
        resamples=100,
    )  # fmt: skip
    assert _row(table, "m")["within_generator"] == pytest.approx(want)
    assert _row(table, "fd")["within_generator"] == pytest.approx(want)  # oriented
