from __future__ import annotations

import numpy as np
import pytest
from scipy.spatial.distance import jensenshannon

from groundsynth.evaluate.composition import CompositionStats, compare, jensen_shannon
from groundsynth.evaluate.fidelity import FeatureStats, frechet_distance, kid, prdc


def test_streaming_feature_stats_equal_numpy():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(500, 6)) @ rng.normal(size=(6, 6)) + 3
    stats = FeatureStats(max_samples=100)
    for chunk in np.array_split(x, 7):
        stats.update(chunk)
    np.testing.assert_allclose(stats.mean, x.mean(axis=0))
    np.testing.assert_allclose(stats.cov, np.cov(x, rowvar=False), atol=1e-9)
    assert stats.sample().shape == (100, 6) and stats.n == 500


def test_frechet_distance_of_gaussians():
    m = np.array([1.0, 2.0, 0.0])
    assert frechet_distance(np.zeros(3), np.eye(3), m, np.eye(3)) == pytest.approx(5.0)
    # tr(S1 + S2 - 2 sqrt(S1 S2)) for diagonal covariances = sum (sqrt(a) - sqrt(b))^2
    s1, s2 = np.diag([1.0, 4.0]), np.diag([9.0, 1.0])
    assert frechet_distance(np.zeros(2), s1, np.zeros(2), s2) == pytest.approx(4.0 + 1.0)


def test_kid_matches_a_direct_unbiased_mmd():
    rng = np.random.default_rng(1)
    x, y = rng.normal(size=(40, 5)), rng.normal(0.5, 1, size=(30, 5))
    mean, std = kid(x, y, subsets=1, subset_size=30, seed=0)
    r = np.random.default_rng(0)
    xs, ys = x[r.choice(40, 30, replace=False)], y[r.choice(30, 30, replace=False)]

    def k(a, b):
        return (a @ b.T / 5 + 1) ** 3

    n = 30
    direct = sum(
        k(xs[i : i + 1], xs[j : j + 1])[0, 0] for i in range(n) for j in range(n) if i != j
    ) / (n * (n - 1))
    direct += sum(
        k(ys[i : i + 1], ys[j : j + 1])[0, 0] for i in range(n) for j in range(n) if i != j
    ) / (n * (n - 1))
    direct -= 2 * k(xs, ys).mean()
    assert mean == pytest.approx(direct) and std == 0
    same, _ = kid(x, rng.normal(size=(40, 5)), subsets=20, subset_size=30)
    far, _ = kid(x, rng.normal(2, 1, size=(40, 5)), subsets=20, subset_size=30)
    assert abs(same) < far / 5


def test_prdc_extremes():
    rng = np.random.default_rng(2)
    real = rng.normal(size=(200, 4))
    fake_same = real + 1e-6
    res = prdc(real, fake_same, k=5)
    assert res["precision"] == 1 and res["recall"] == 1 and res["coverage"] == 1
    assert res["density"] == pytest.approx(1.0, abs=0.25)  # boundary points may count twice
    far = prdc(real, real + 100, k=5)
    assert far["precision"] == far["recall"] == far["coverage"] == far["density"] == 0


def test_jensen_shannon_equals_scipy():
    p, q = np.array([1, 2, 3, 0.0]), np.array([0, 1, 1, 2.0])
    assert jensen_shannon(p, q) == pytest.approx(jensenshannon(p, q, base=2) ** 2)
    assert jensen_shannon(p, p) == 0


def test_composition_stats_and_comparison():
    a, b = CompositionStats(), CompositionStats()
    m1 = np.zeros((4, 4), np.uint8)  # all tree
    m2 = np.array([[0, 0, 6, 6]] * 4, np.uint8)  # half tree, half water
    a.update_mask(m1)
    a.update_mask(m2)
    b.update_fractions(np.array([[0.5, 0, 0, 0, 0, 0, 0.5]] * 2), pixels_per_image=16)
    np.testing.assert_allclose(a.pixel_share(), [0.75, 0, 0, 0, 0, 0, 0.25])
    np.testing.assert_allclose(a.cooccurrence()[0, 6], 0.5)
    res = compare(a, b)
    assert res["images"] == {"real": 2, "synthetic": 2}
    assert res["jsd_per_class"]["Shrub"] == 0  # absent in both: identical histograms
    assert 0 < res["jsd_pixel_share"] < 1 and res["jsd_per_class"]["Tree"] > 0
