"""The experiment's result tables: summary per regime and domain, paired differences.

Kept apart from the training code so the numbers users quote are checked on fabricated
results (no training) and mutation-tested alone.
"""

from __future__ import annotations

from typing import Any

import pandas as pd

from groundsynth.experiment.stats import paired_difference

__all__ = ["DOMAINS", "results_tables"]

#: test set -> the domain it measures
DOMAINS = {"real/test": "in-domain (A test)", "synthetic/target": "cross-region (B)"}


def results_tables(
    rows: list[dict[str, Any]], metrics: tuple[str, ...] = ("f1", "iou")
) -> tuple[pd.DataFrame, list[dict[str, Any]]]:
    """Long results -> (summary per regime x domain, grounded - ungrounded differences).

    ``rows`` hold ``regime``, ``seed``, ``test_set`` and the ``metrics`` (segmentation: ``f1``
    and ``iou``, one row per architecture, regime, seed and test set; retrieval:
    ``mean_recall`` ...). Each seed's score is the mean over architectures; the summary
    gives mean, std and 95 % CI over seeds, and each grounded regime is compared with the
    ungrounded regime of the same budget, paired by seed (grounded minus ungrounded).
    """
    from groundsynth.benchmark.results import mean_std_ci

    df = pd.DataFrame(rows)
    df["domain"] = df["test_set"].map(lambda t: DOMAINS.get(t, t))
    summary = []
    # sort=None reads as False: first-seen order either way
    for (regime, domain), g in df.groupby(["regime", "domain"], sort=False):  # pragma: no mutate
        per_seed = g.groupby("seed")[list(metrics)].mean()  # mean over architectures
        row: dict[str, Any] = {"regime": regime, "domain": domain, "n_seeds": len(per_seed)}
        for m in metrics:
            mean, std, lo, hi = mean_std_ci(per_seed[m].tolist())
            row.update(
                {f"{m}_mean": mean, f"{m}_std": std, f"{m}_ci95_low": lo, f"{m}_ci95_high": hi}
            )
        summary.append(row)
    diffs = []
    for domain, g in df.groupby("domain", sort=False):  # pragma: no mutate (as above)
        for regime in g["regime"].unique():
            if "synthetic/grounded:" not in regime:
                continue
            other = regime.replace("synthetic/grounded:", "synthetic/ungrounded:")
            a = g[g["regime"] == regime].groupby("seed")
            b = g[g["regime"] == other].groupby("seed")
            for m in metrics:
                # seed 0 is paired_difference's default too (its bootstrap's seed)
                ga, gb = a[m].mean().to_dict(), b[m].mean().to_dict()
                res = paired_difference(ga, gb, seed=0)  # pragma: no mutate
                diffs.append(
                    {"comparison": f"{regime}  −  {other}", "domain": domain, "metric": m, **res}
                )
    return pd.DataFrame(summary), diffs
