"""The real set's yardstick: the Fréchet distance between the halves of random splits."""

from __future__ import annotations

import numpy as np
import pytest

from groundsynth.evaluate.fidelity import HalfSplits, _split_bits, frechet_distance


def _direct(x: np.ndarray, first: np.ndarray) -> float:
    a, b = x[first], x[~first]
    return frechet_distance(a.mean(0), np.cov(a.T), b.mean(0), np.cov(b.T))


def test_each_split_s_distance_equals_a_direct_computation():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(120, 5)) @ rng.normal(size=(5, 5)) + 3.0
    splits = HalfSplits(k=6, seed=7)
    for start in range(0, 120, 17):  # batches of any size
        splits.update(x[start : start + 17])
    bits = _split_bits(np.arange(120), 7, 6)
    expected = [_direct(x, bits[s]) for s in range(6)]
    np.testing.assert_allclose(splits.frechet_distances(), expected, rtol=1e-7)
    assert splits.median() == pytest.approx(float(np.median(expected)), rel=1e-7)
    assert len(set(np.round(expected, 6))) == 6  # six different splits
    one = HalfSplits(k=6, seed=7)
    one.update(x)  # one batch: the same halves
    np.testing.assert_allclose(one.frechet_distances(), expected, rtol=1e-7)
    other = HalfSplits(k=6, seed=8)
    other.update(x)
    assert not np.allclose(other.frechet_distances(), expected)


def test_the_halves_are_random_and_balanced():
    bits = _split_bits(np.arange(20_000), 3, 8)
    assert bits.shape == (8, 20_000)
    np.testing.assert_allclose(bits.mean(1), 0.5, atol=0.015)
    corr = np.corrcoef(bits.astype(float))
    assert np.abs(corr[np.triu_indices(8, 1)]).max() < 0.03  # independent splits
    # neighbouring rows are not in lockstep (as a parity split would be)
    assert abs(np.mean(bits[:, 1:] == bits[:, :-1]) - 0.5) < 0.015


def test_the_median_is_a_steadier_yardstick_than_one_split():
    """Over 30 sets drawn from one distribution, the median of 8 splits varies less than one
    split's value (which is what the learning check compared against before)."""
    rng = np.random.default_rng(1)
    one, median = [], []
    for seed in range(30):
        x = rng.normal(size=(100, 8))
        s = HalfSplits(k=8, seed=seed)
        s.update(x)
        one.append(s.frechet_distances()[0])
        median.append(s.median())
    assert np.std(median) < 0.7 * np.std(one), (np.std(median), np.std(one))


def test_too_few_rows_leave_no_distance():
    s = HalfSplits(k=4)
    assert s.frechet_distances() == [] and np.isnan(s.median())
    s.update(np.ones((2, 3)))
    assert s.frechet_distances() == []  # a half of under 2 rows in every split
    with pytest.raises(ValueError, match="feature size changed from 3 to 4"):
        s.update(np.ones((2, 4)))
