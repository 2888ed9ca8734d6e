"""The tables and summary of ``experiment metric-utility`` (:mod:`.metric_utility`): the gains
of each set over the real-only baseline, the study's learning check, and the correlations,
plots and summary dict of a finished study (the statistics are :mod:`.utility_stats`'s)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pandas as pd

from groundsynth.experiment.utility_metrics import METRICS

if TYPE_CHECKING:
    from groundsynth.experiment.metric_utility import MetricUtilityConfig

__all__ = ["DOMAINS", "TASKS", "gains_from_rows", "learning_summary", "summarise"]

#: downstream tasks whose gain can be the utility: task -> (benchmark metric, scale to 0..1)
TASKS: dict[str, tuple[str, float]] = {"segmentation": ("iou", 1.0),
                                       "retrieval": ("mean_recall", 0.01)}  # fmt: skip

#: test set -> domain (as in the transfer experiment's tables)
DOMAINS = {"real/test": "in-domain (A test)", "synthetic/target": "cross-region (B)"}


def gains_from_rows(
    rows: list[dict[str, Any]], sets: list[str], task: str = "segmentation"
) -> pd.DataFrame:
    """Benchmark rows -> long gains: per set, seed and domain, the task's metric (IoU; mean
    recall scaled to 0..1) of ``real,synthetic/<set>`` minus the ``real`` run's of the same
    seed (both averaged over architectures). Domains of tasks other than segmentation are
    named ``"<task>: <domain>"``."""
    metric, scale = TASKS[task]
    prefix = "" if task == "segmentation" else f"{task}: "
    df = pd.DataFrame(rows)
    df = df[df["test_set"].isin(DOMAINS)]
    per = df.groupby(["regime", "seed", "test_set"], sort=False)[metric].mean() * scale
    out = []
    for name in sets:
        regime = f"real,synthetic/{name}"
        for (reg, seed, test_set), value in per.items():
            if reg != regime:
                continue
            base = per.get(("real", seed, test_set))
            if base is None:
                continue
            out.append({"set": name, "seed": int(seed), "domain": prefix + DOMAINS[test_set],
                        "iou": float(value), "baseline": float(base),
                        "gain": float(value) - float(base)})  # fmt: skip
    return pd.DataFrame(out, columns=["set", "seed", "domain", "iou", "baseline", "gain"])


def learning_summary(checks: list[dict[str, Any]]) -> dict[str, Any]:
    """The study's learning check: every ``real`` (baseline) segmenter beats the pixel floor
    in-domain -- else no gain means anything. Runs on real + a set that fall below the floor
    (the study's benchmark checks every run against the floor fitted on real A alone) are
    listed, not failed: a set that makes the segmenter worse is a measured (negative) utility."""
    baseline = [c for c in checks if " real seed " in c["model"]]
    below = [c["model"] for c in checks if c not in baseline and not c["passed"]]
    return {
        "passed": bool(baseline) and all(c["passed"] for c in baseline),
        "checks": baseline,
        "failed": [c["model"] for c in baseline if not c["passed"]],
        "with_set_below_floor": below,
    }


def summarise(
    study: Any,
    config: MetricUtilityConfig,
    sets: pd.DataFrame,
    gains: pd.DataFrame,
    directions: dict[str, int],
    floor: Any,
    bench: Any,
) -> dict[str, Any]:
    """Tables, correlations, plots and the summary dict of a finished study (``study``: the
    study's state in :mod:`.metric_utility`: ``out``, ``real``, ``n_train``, ``n``,
    ``generators``)."""
    from groundsynth.experiment import utility_stats
    from groundsynth.experiment.utility_plots import scatter_path, write_scatter

    out = study.out
    metrics_df = sets[["set", "generator", *directions]].copy()
    utility = utility_stats.utility_table(gains)
    correlations = utility_stats.rank_correlations(
        metrics_df, gains, directions, resamples=config.resamples, seed=config.seeds[0]
    )
    best = utility_stats.best_predictors(
        metrics_df, gains, directions, correlations, resamples=config.resamples,
        seed=config.seeds[0],
    )  # fmt: skip
    sets.to_csv(out / "sets.csv", index=False)
    gains.to_csv(out / "gains_long.csv", index=False)
    utility.to_csv(out / "utility.csv", index=False)
    correlations.to_csv(out / "correlations.csv", index=False)
    meta = {m: {"direction": d, "label": METRICS[m][1], "description": METRICS[m][2]}
            for m, d in directions.items()}  # fmt: skip
    present = list(dict.fromkeys(gains["domain"]))
    domains = [
        f"{p}{d}" for p in ("", "retrieval: ") for d in DOMAINS.values() if f"{p}{d}" in present
    ]
    for domain in domains:
        ylabel = "gain in mR (points)" if domain.startswith("retrieval") else "gain in IoU (points)"
        write_scatter(sets, utility, correlations, meta, domain, scatter_path(out, domain),
                      ylabel=ylabel)  # fmt: skip
    baseline = {}
    per_seed = gains.drop_duplicates(["seed", "domain"])
    for domain, g in per_seed.groupby("domain"):
        baseline[domain] = {"iou_mean": float(g["baseline"].mean()), "n_seeds": int(len(g))}
    return {
        "question": "Do the interpretable metrics predict what synthetic data adds?",
        "task": "segmentation",
        "tasks": list(config.tasks),
        "utility_metric": "iou",
        "real": str(study.real),
        "target": config.target,
        "n_real_train": study.n_train,
        "set_size": study.n,
        "seeds": list(config.seeds),
        "domains": domains,
        "generators": {
            k: {"run": str(v["run"]), "kind": v["kind"], "steps": v["steps"]}
            for k, v in study.generators.items()
        },  # fmt: skip
        "baseline": baseline,
        "metrics": meta,
        "sets": _records(sets),
        "utility": _records(utility),
        "correlations": _records(correlations),
        "best": best,
        "notes": [
            "utility: gain in macro IoU of real + set over real alone, paired by seed; "
            "correlations over sets of each metric with the mean gain over seeds",
            "CIs: percentile bootstrap resampling sets and seeds (seeds jointly, since a seed "
            "also fixes the real-only baseline)",
            "logo_concordance: share of set pairs involving a held-out generator's sets that "
            "the metric orders as their gains (0.5 = chance)",
            "the best pair is chosen among all pairs, which flatters it; read it with its "
            "leave-one-generator-out figure",
            "label fidelity by the segmenter of a pseudo-labelled set is the segmenter agreeing "
            "with itself (near 1 whatever the images)",
            *(
                [
                    "retrieval: domains: gain in the dual encoder's mean recall (points) of real + "
                    "the set's template captions over real alone"
                ]
                if "retrieval" in config.tasks
                else []
            ),
            *(
                []
                if config.clip_model
                else [
                    "CLIPScore not computed: no CLIP given (--clip-model; e.g. RemoteCLIP weights)"
                ]
            ),
        ],
    }


def _records(df: pd.DataFrame) -> list[dict[str, Any]]:
    clean = df.astype(object).where(pd.notna(df), None)
    return clean.to_dict(orient="records")
