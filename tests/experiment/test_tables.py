"""The experiment's result tables, on fabricated results (no training)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from groundsynth.experiment.tables import results_tables


def _expected_differences(long: pd.DataFrame, metrics=("f1", "iou")) -> pd.DataFrame:
    """grounded - ungrounded per domain and metric, recomputed from the long results: the
    architecture mean per seed, its difference per seed, the mean, t-interval and wins."""
    domains = {"real/test": "in-domain (A test)", "synthetic/target": "cross-region (B)"}
    long = long.assign(domain=long["test_set"].map(domains))
    rows = []
    for regime in sorted(r for r in long["regime"].unique() if "synthetic/grounded:" in r):
        other = regime.replace("synthetic/grounded:", "synthetic/ungrounded:")
        for domain in domains.values():
            for m in metrics:
                g = long[long["domain"] == domain]
                a = g[g["regime"] == regime].groupby("seed")[m].mean()
                b = g[g["regime"] == other].groupby("seed")[m].mean()
                d = (a - b).dropna().to_numpy()
                lo, hi = stats.t.interval(0.95, len(d) - 1, loc=d.mean(), scale=stats.sem(d))
                if np.ptp(d) == 0:  # no spread: the interval is the point (scipy says nan)
                    lo = hi = d.mean()
                rows.append(
                    {"comparison": f"{regime}  −  {other}", "domain": domain, "metric": m,
                     "mean": d.mean(), "ci95_low": lo, "ci95_high": hi, "wins": int((d > 0).sum()),
                     "n": len(d)}
                )  # fmt: skip
    return pd.DataFrame(rows)


def assert_same_differences(got: pd.DataFrame, long: pd.DataFrame, metrics=("f1", "iou")) -> None:
    want = _expected_differences(long, metrics)
    key = ["comparison", "domain", "metric"]
    got = got.sort_values(key).reset_index(drop=True)
    want = want.sort_values(key).reset_index(drop=True)
    assert got[key].equals(want[key])
    for col in ("mean", "ci95_low", "ci95_high"):
        np.testing.assert_allclose(got[col], want[col], rtol=1e-9, atol=1e-12, err_msg=col)
    assert got["wins"].tolist() == want["wins"].tolist()
    assert got["n"].tolist() == want["n"].tolist()


def test_table_differences_are_grounded_minus_ungrounded_paired_by_seed():
    """Fabricated long results (no training): 2 architectures x 3 seeds; grounded beats
    ungrounded in-domain by 0.10, 0.12, 0.08 (seeds 0, 1, 2) and loses across regions."""
    rows = []
    in_domain = {0: 0.10, 1: 0.12, 2: 0.08}
    cross_region = {0: -0.02, 1: -0.05, 2: -0.02}
    for arch, offset in (("unet", 0.0), ("fpn", 0.04)):
        for seed in (0, 1, 2):
            base = 0.5 + 0.01 * seed + offset
            for test_set, gap in (
                ("real/test", in_domain[seed]),
                ("synthetic/target", cross_region[seed]),
            ):
                for regime, value in (
                    ("real", base + 0.2),
                    ("synthetic/grounded:0.5", base + gap),
                    ("synthetic/ungrounded:0.5", base),
                ):
                    rows.append(
                        {"arch": arch, "regime": regime, "seed": seed, "test_set": test_set,
                         "f1": value, "iou": value / 2}
                    )  # fmt: skip
    summary, diffs = results_tables(rows)
    diffs = pd.DataFrame(diffs)
    assert_same_differences(diffs, pd.DataFrame(rows))
    by = diffs.set_index(["domain", "metric"])
    # by hand: d = (0.10, 0.12, 0.08): mean 0.10, sd 0.02, half-width t(0.975, 2) * 0.02 / sqrt 3
    half = 4.302652729911275 * 0.02 / np.sqrt(3)
    ind = by.loc[("in-domain (A test)", "f1")]
    assert ind["comparison"] == "synthetic/grounded:0.5  −  synthetic/ungrounded:0.5"
    assert ind["mean"] == pytest.approx(0.10)
    assert (ind["ci95_low"], ind["ci95_high"]) == pytest.approx((0.10 - half, 0.10 + half))
    assert ind["wins"] == 3 and ind["n"] == 3
    assert by.loc[("in-domain (A test)", "iou"), "mean"] == pytest.approx(0.05)
    cross = by.loc[("cross-region (B)", "f1")]  # grounded worse on every seed: negative
    assert cross["mean"] == pytest.approx(-0.03) and cross["wins"] == 0
    real = summary.set_index(["regime", "domain"]).loc[("real", "in-domain (A test)")]
    assert real["f1_mean"] == pytest.approx(0.5 + 0.01 + 0.02 + 0.2)  # seeds and archs averaged
    assert real["n_seeds"] == 3


def test_table_order_unknown_test_sets_and_bootstrap():
    """Rows keep the order the results came in; a test set outside DOMAINS keeps its own
    name; the bootstrap interval is the seed-0, 10,000-resample one of the paired differences."""
    rows = []
    # 10 seeds of irregular gaps: resampled means hardly repeat, so the draws show
    gaps = dict(enumerate(np.round(np.random.default_rng(4).normal(0.1, 0.02, size=10), 4)))
    for seed in gaps:
        for test_set in ("real/test", "synthetic/target", "real/val"):
            for regime, gap in (("real", 0.2), ("synthetic/ungrounded:1", 0.0),
                                ("synthetic/grounded:1", gaps[seed])):  # fmt: skip
                f1 = 0.5 + gap + 0.01 * seed
                rows.append({"arch": "unet", "regime": regime, "seed": seed,
                             "test_set": test_set, "f1": f1, "iou": f1 / 2})  # fmt: skip
    summary, diffs = results_tables(rows)
    domains = ["in-domain (A test)", "cross-region (B)", "real/val"]
    regimes = ["real", "synthetic/ungrounded:1", "synthetic/grounded:1"]
    assert list(zip(summary["regime"], summary["domain"])) == [
        (r, dom) for dom in domains for r in regimes
    ]
    assert [(d["domain"], d["metric"]) for d in diffs] == [
        (dom, m) for dom in domains for m in ("f1", "iou")
    ]
    d = np.array([gaps[s] for s in sorted(gaps)])
    idx = np.random.default_rng(0).integers(0, 10, size=(10_000, 10))
    want = np.quantile(d[idx].mean(axis=1), [0.025, 0.975])
    for res in diffs:
        scale = 1.0 if res["metric"] == "f1" else 0.5
        assert (res["boot95_low"], res["boot95_high"]) == pytest.approx(want * scale, rel=1e-9)
