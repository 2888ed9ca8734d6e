from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
from scipy import stats

from groundsynth.experiment.stats import (
    MIN_BOOTSTRAP_SEEDS,
    format_difference,
    paired_bootstrap,
    paired_difference,
    sign_flip_p,
)


def test_paired_difference_basic():
    a = {0: 0.70, 1: 0.72, 2: 0.69, 3: 0.71}
    b = {0: 0.65, 1: 0.66, 2: 0.66, 3: 0.64, 9: 0.1}  # seed 9 is unpaired: ignored
    res = paired_difference(a, b, resamples=2000)
    d = np.array([0.05, 0.06, 0.03, 0.07])
    assert res["n"] == 4 and res["wins"] == 4
    assert res["mean"] == pytest.approx(d.mean())
    # few seeds: the reported interval is the paired t-interval, equal to scipy's
    lo, hi = stats.t.interval(0.95, 3, loc=d.mean(), scale=stats.sem(d))
    assert res["ci_method"] == "t"
    assert (res["ci95_low"], res["ci95_high"]) == pytest.approx((lo, hi))
    # the bootstrap interval stays inside [min d, max d] and is reported beside it
    assert 0.03 <= res["boot95_low"] <= res["mean"] <= res["boot95_high"] <= 0.07
    assert res["p_sign_flip"] == pytest.approx(2 / 16)  # all 4 positive: 2 of 16 patterns


def test_many_seeds_use_the_bootstrap():
    rng = np.random.default_rng(1)
    a = {s: 0.6 + 0.02 * rng.standard_normal() for s in range(MIN_BOOTSTRAP_SEEDS)}
    b = {s: 0.5 for s in a}
    res = paired_difference(a, b)
    assert res["ci_method"] == "bootstrap"
    assert (res["ci95_low"], res["ci95_high"]) == (res["boot95_low"], res["boot95_high"])
    assert res["ci95_low"] > 0 and res["p_sign_flip"] < 0.01


def test_small_n_and_determinism():
    a, b = {0: 1.0, 1: 0.0}, {0: 0.0, 1: 1.0}
    assert paired_difference(a, b) == paired_difference(a, b)
    one = paired_difference({0: 0.5}, {0: 0.25})
    assert one["mean"] == 0.25 and one["n"] == 1 and one["wins"] == 1
    assert math.isnan(one["ci95_low"]) and math.isnan(one["boot95_low"])
    assert one["p_sign_flip"] == 1.0  # one seed can never show a difference
    empty = paired_difference({}, {})
    assert math.isnan(empty["mean"]) and empty["n"] == 0
    # two seeds both positive: the smallest p two seeds allow
    assert paired_difference({0: 0.6, 1: 0.7}, {0: 0.5, 1: 0.5})["p_sign_flip"] == 0.5


def test_sign_flip_monte_carlo_agrees_with_exact():
    d = np.random.default_rng(0).normal(0.3, 1.0, size=16)
    exact = sign_flip_p(d)
    d17 = np.append(d, d.mean())  # 17 values: Monte Carlo
    assert sign_flip_p(d17, resamples=200_000) == pytest.approx(exact, abs=0.03)


@pytest.mark.parametrize("n", [2, 3, 5])
def test_reported_interval_covers_95_percent_where_the_bootstrap_does_not(n):
    """Coverage of the true mean by normal differences over 400 simulated experiments."""
    rng = np.random.default_rng(n)
    t_hits = boot_hits = 0
    trials = 400
    for _ in range(trials):
        d = rng.normal(0.0, 1.0, size=n)
        res = paired_difference(dict(enumerate(d)), dict.fromkeys(range(n), 0.0), resamples=1000)
        t_hits += res["ci95_low"] <= 0.0 <= res["ci95_high"]
        lo, hi = paired_bootstrap(d, resamples=1000)
        boot_hits += lo <= 0.0 <= hi
    assert 0.92 <= t_hits / trials <= 0.98
    assert boot_hits / trials < 0.89  # 0.51 / 0.75 / 0.85 at n = 2 / 3 / 5


def _bootstrap(d, resamples, confidence, seed):
    """The percentile bootstrap, spelled out with numpy: resample indices, mean, quantiles."""
    idx = np.random.default_rng(seed).integers(0, len(d), size=(resamples, len(d)))
    alpha = (1 - confidence) / 2
    return tuple(np.quantile(d[idx].mean(axis=1), [alpha, 1 - alpha]))


def _monte_carlo_p(d, resamples, seed):
    signs = np.random.default_rng(seed).choice((1.0, -1.0), size=(resamples, len(d)))
    return float(np.mean(np.abs(signs @ d) / len(d) >= abs(d.mean()) - 1e-9))


def test_bootstrap_of_two_values_by_hand():
    # resampled means are 0, 0.5, 1 with chances 1/4, 1/2, 1/4: the 2.5 % and 97.5 %
    # quantiles are 0 and 1
    assert paired_bootstrap(np.array([0.0, 1.0])) == (0.0, 1.0)
    assert all(math.isnan(x) for x in paired_bootstrap(np.array([0.3])))


def test_bootstrap_defaults_are_10000_resamples_seed_0_and_95_percent():
    # 12 irregular values: resampled means hardly repeat, so other draws move the quantiles
    d = np.random.default_rng(3).normal(0.03, 0.05, size=12)
    want = _bootstrap(d, 10_000, 0.95, 0)
    assert paired_bootstrap(d) == pytest.approx(want, rel=1e-12)
    res = paired_difference(dict(enumerate(d)), dict.fromkeys(range(12), 0.0))
    assert (res["boot95_low"], res["boot95_high"]) == pytest.approx(want, rel=1e-12)


def test_paired_difference_passes_its_options_on():
    d = np.random.default_rng(5).normal(0.02, 0.05, size=17)  # 17 seeds: Monte Carlo sign flip
    res = paired_difference(
        dict(enumerate(d)), dict.fromkeys(range(17), 0.0), resamples=500, confidence=0.8, seed=7
    )
    assert (res["boot95_low"], res["boot95_high"]) == pytest.approx(
        _bootstrap(d, 500, 0.8, 7), rel=1e-12
    )
    lo, hi = stats.t.interval(0.8, 16, loc=d.mean(), scale=stats.sem(d))
    assert (res["ci95_low"], res["ci95_high"]) == pytest.approx((lo, hi), rel=1e-9)
    assert res["p_sign_flip"] == _monte_carlo_p(d, 100_000, 7)
    assert sign_flip_p(d) == _monte_carlo_p(d, 100_000, 0)  # defaults: 100,000 draws, seed 0


def test_float32_scores_are_differenced_in_float64():
    a = {s: np.float32(v) for s, v in enumerate([0.71, 0.69, 0.735, 0.702])}
    b = {s: np.float32(v) for s, v in enumerate([0.65, 0.661, 0.6, 0.68])}
    d = np.array([float(a[s] - b[s]) for s in a])
    res = paired_difference(a, b, resamples=100)
    assert res["mean"] == pytest.approx(d.mean(), rel=1e-15, abs=0)
    lo, hi = stats.t.interval(0.95, 3, loc=d.mean(), scale=stats.sem(d))
    assert (res["ci95_low"], res["ci95_high"]) == pytest.approx((lo, hi), rel=1e-13, abs=0)


def test_ties_are_not_wins_and_no_seeds_warn_nothing():
    res = paired_difference({0: 0.5, 1: 0.6, 2: 0.4}, {0: 0.5, 1: 0.5, 2: 0.5})
    assert res["wins"] == 1 and res["n"] == 3
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert math.isnan(paired_difference({0: 0.5}, {1: 0.5})["mean"])


def test_sign_flip_is_exact_up_to_16_seeds():
    # 16 equal positive differences: only "all +" and "all -" are as extreme
    assert sign_flip_p(np.full(16, 0.1)) == 2 / 2**16


def test_sign_flip_counts_rounding_ties_but_not_real_differences():
    # 12345.6 + (+-0.7 +-0.3 +-0.4): the sign patterns whose small part sums to >= 0 (5 of 8)
    # reach |mean|, as do their mirror images: 10 of 16, two of them ties only up to rounding
    assert sign_flip_p(np.array([12345.6, 0.7, -0.3, -0.4])) == 10 / 16
    # 1 +- 1.5e-12 is a real (if tiny) difference: only the pattern and its mirror count
    assert sign_flip_p(np.array([1.0, 1.5e-12])) == 0.5


def test_format_difference_by_hand():
    d = {"mean": 0.0475, "ci95_low": -0.0174, "ci95_high": 0.1125, "ci_method": "t",
         "wins": 2, "n": 3, "p_sign_flip": 0.5}  # fmt: skip
    assert format_difference(d) == (
        "+4.75 points [95 % CI -1.74, +11.25 (t)], better in 2 of 3 seeds, sign-flip p = 0.50"
    )
    one = {**d, "mean": -0.25, "ci95_low": math.nan, "ci95_high": math.nan, "wins": 0, "n": 1,
           "p_sign_flip": 1.0}  # fmt: skip
    assert format_difference(one, "pp") == (
        "-25.00 pp [no CI: one seed], better in 0 of 1 seeds, sign-flip p = 1.00"
    )
    assert format_difference({**d, "mean": math.nan}) == "n/a (no paired seeds)"
