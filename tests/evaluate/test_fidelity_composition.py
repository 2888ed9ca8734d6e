from __future__ import annotations

import numpy as np
import pytest
from scipy.spatial.distance import cdist, jensenshannon

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


def test_feature_stats_small_counts_empty_sample_and_float32_input():
    stats = FeatureStats(max_samples=3)
    empty = stats.sample()
    assert empty.shape == (0, 0) and empty.dtype == np.float32
    stats.update(np.array([[1.0, 2.0]]))
    np.testing.assert_allclose(stats.mean, [1.0, 2.0])  # one vector has a mean
    with pytest.raises(ValueError, match="at least 2"):
        _ = stats.cov
    stats.update(np.array([[3.0, 6.0]]))
    np.testing.assert_allclose(stats.cov, [[2.0, 4.0], [4.0, 8.0]])  # n - 1 = 1
    assert stats.sample().dtype == np.float32
    # float32 input is accumulated in float64: offset 1000, unit noise
    x = 1000 + np.random.default_rng(3).normal(size=(400, 3))
    f32 = FeatureStats()
    f32.update(x.astype(np.float32))
    ref = x.astype(np.float32).astype(np.float64)
    np.testing.assert_allclose(f32.cov, np.cov(ref, rowvar=False), atol=1e-8)


def test_reservoir_is_seeded_and_uniform():
    x = np.arange(30.0).reshape(10, 3)
    a, b = FeatureStats(max_samples=4, seed=5), FeatureStats(max_samples=4, seed=5)
    a.update(x)
    b.update(x[:6])
    b.update(x[6:])
    np.testing.assert_array_equal(a.sample(), b.sample())
    # one slot, three rows: each row ends up there with probability 1/3
    kept = np.zeros(3)
    for seed in range(3000):
        s = FeatureStats(max_samples=1, seed=seed)
        s.update(np.arange(3.0)[:, None])
        kept[int(s.sample()[0, 0])] += 1
    np.testing.assert_allclose(kept / 3000, 1 / 3, atol=0.04)  # about 4 standard errors


def test_frechet_distance_hand_values_and_round_off():
    # sum (mu1 - mu2)^2 = 9 + 16; diagonal covariances: sum (sqrt a - sqrt b)^2 = 0.25 + 0.25
    fd = frechet_distance(
        np.array([1.0, 2.0]), np.diag([0.25, 1.0]), [4.0, 6.0], np.diag([1, 0.25])
    )
    assert fd == pytest.approx(25.0 + 0.5, abs=1e-12)
    # float32 inputs are computed in float64: 4097**2 is not a float32
    mu = np.array([4097.0], np.float32)
    one = np.eye(1, dtype=np.float32)
    assert frechet_distance(mu, one, np.zeros(1, np.float32), one) == 4097.0**2
    # a rank-2 covariance in 10 dimensions: round-off gives tiny negative eigenvalues
    cov = np.cov(np.random.default_rng(0).normal(size=(3, 10)), rowvar=False)
    assert frechet_distance(np.zeros(10), cov, np.zeros(10), cov) == pytest.approx(0, abs=1e-6)


def _direct_mmd2(xs, ys):
    d = xs.shape[1]
    kxx, kyy, kxy = ((a @ b.T / d + 1) ** 3 for a, b in ((xs, xs), (ys, ys), (xs, ys)))
    m, n = len(xs), len(ys)
    off = (kxx.sum() - np.trace(kxx)) / (m * (m - 1)) + (kyy.sum() - np.trace(kyy)) / (n * (n - 1))
    return off - 2 * kxy.mean()


def test_kid_subset_size_is_capped_by_both_sets():
    rng = np.random.default_rng(4)
    x, y = rng.normal(size=(12, 3)), rng.normal(0.3, 1, size=(9, 3))
    for sizes, subset_size in (((12, 9), 5), ((12, 9), 100), ((9, 12), 100)):
        a, b = (x, y) if sizes[0] == 12 else (y, x)
        mean, std = kid(a, b, subsets=3, subset_size=subset_size, seed=1)
        r = np.random.default_rng(1)
        size = min(subset_size, 9)
        vals = []
        for _ in range(3):
            ia = r.choice(len(a), size, replace=False)
            ib = r.choice(len(b), size, replace=False)
            vals.append(_direct_mmd2(a[ia], b[ib]))
        assert mean == pytest.approx(np.mean(vals), abs=1e-12)
        assert std == pytest.approx(np.std(vals), abs=1e-12) and std > 0
    # two samples per set is enough; one is not
    assert np.isfinite(kid(x[:2], y[:2], subsets=1, subset_size=2)[0])
    with pytest.raises(ValueError, match="at least 2"):
        kid(x[:1], y, subsets=1)
    # float32 features are computed in float64
    big = (100 + x).astype(np.float32)
    ref = big.astype(np.float64)
    got = kid(big, ref[::-1], subsets=1, subset_size=12, seed=0)[0]
    r = np.random.default_rng(0)
    ia, ib = r.choice(12, 12, replace=False), r.choice(12, 12, replace=False)
    assert got == pytest.approx(_direct_mmd2(ref[ia], ref[::-1][ib]), rel=1e-9, abs=1e-6)


def _reference_prdc(real, fake, k):
    """Naeem et al. 2020 as in their reference code: Euclidean distances, strict inequalities."""
    d_rr, d_ff, d_rf = cdist(real, real), cdist(fake, fake), cdist(real, fake)
    r_real = np.partition(d_rr, k, axis=1)[:, k]
    r_fake = np.partition(d_ff, k, axis=1)[:, k]
    inside = d_rf < r_real[:, None]
    return {
        "precision": inside.any(axis=0).mean(),
        "recall": (d_rf < r_fake[None, :]).any(axis=1).mean(),
        "density": inside.sum(axis=0).mean() / k,
        "coverage": (d_rf.min(axis=1) < r_real).mean(),
    }


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_prdc_equals_the_reference_on_a_grid_with_ties(seed):
    rng = np.random.default_rng(seed)
    real = rng.integers(0, 6, size=(25, 2)).astype(float)  # integer points: exact ties
    fake = rng.integers(1, 8, size=(17, 2)).astype(float)
    res = prdc(real, fake, k=3)
    ref = _reference_prdc(real, fake, 3)
    for key, value in ref.items():
        assert res[key] == pytest.approx(value, abs=1e-12), key
    assert res["k"] == 3
    # float32 features far from the origin are compared in float64
    far = (1e4 + rng.normal(size=(25, 2))).astype(np.float32)
    near = (1e4 + rng.normal(0.5, 1, size=(17, 2))).astype(np.float32)
    res = prdc(far, near, k=3)
    ref = _reference_prdc(far.astype(np.float64), near.astype(np.float64), 3)
    for key, value in ref.items():
        assert res[key] == pytest.approx(value, abs=1e-12), key


def test_prdc_needs_more_than_k_samples_in_each_set():
    rng = np.random.default_rng(5)
    many, few = rng.normal(size=(10, 2)), rng.normal(size=(3, 2))
    for real, fake in ((many, few), (few, many)):
        with pytest.raises(ValueError, match="more than 3"):
            prdc(real, fake, k=3)
    assert prdc(many[:4], many[4:8], k=3)["k"] == 3
