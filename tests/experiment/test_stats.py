from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from groundsynth.experiment.stats import (
    MIN_BOOTSTRAP_SEEDS,
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
