from __future__ import annotations

import math

import numpy as np
import pytest

from groundsynth.experiment.stats import paired_bootstrap


def test_paired_bootstrap_basic():
    a = {0: 0.70, 1: 0.72, 2: 0.69, 3: 0.71}
    b = {0: 0.65, 1: 0.66, 2: 0.66, 3: 0.64, 9: 0.1}  # seed 9 is unpaired: ignored
    res = paired_bootstrap(a, b, resamples=2000)
    assert res["n"] == 4
    assert res["mean"] == pytest.approx(np.mean([0.05, 0.06, 0.03, 0.07]))
    assert 0.03 <= res["ci95_low"] <= res["mean"] <= res["ci95_high"] <= 0.07
    assert res["p_greater"] == 1.0


def test_paired_bootstrap_is_deterministic_and_handles_small_n():
    a, b = {0: 1.0, 1: 0.0}, {0: 0.0, 1: 1.0}
    assert paired_bootstrap(a, b) == paired_bootstrap(a, b)
    one = paired_bootstrap({0: 0.5}, {0: 0.25})
    assert one["mean"] == 0.25 and math.isnan(one["ci95_low"]) and one["n"] == 1
    assert math.isnan(paired_bootstrap({}, {})["mean"])
