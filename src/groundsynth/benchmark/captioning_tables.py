"""Tables of ``groundsynth benchmark captioning`` (see :mod:`.captioning_bench`): one row per
(run, test set) and, across seeds, mean, std and 95 % t-interval per (regime, test set), as
CSV, Markdown and JSON.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from groundsynth.benchmark.results import mean_std_ci, write_table_files
from groundsynth.evaluate.captioning import SCORE_KEYS

__all__ = ["CONSISTENCY", "score_keys", "summarise", "write_tables"]

#: Consistency rates copied into the tables (of the generated and, ``ref_``, the reference captions).
CONSISTENCY = ("consistent_rate", "hallucination_rate", "dominant_agreement", "mention_recall")


def score_keys(metrics: Sequence[str]) -> list[str]:
    """The COCO score columns of ``metrics``, in the toolkit's order."""
    return [k for m in metrics for k in SCORE_KEYS[m]]


def _rate(summary: dict[str, Any] | None, key: str) -> float:
    value = None if summary is None else summary.get(key)
    return math.nan if value is None else float(value)


def _rows(metrics: dict[str, Any], keys: Sequence[str]) -> list[dict[str, Any]]:
    rows = []
    learning = metrics["learning"]
    for test_set, scores in metrics["test"].items():
        row = {"regime": metrics["regime"], "seed": metrics["seed"], "test_set": test_set,
               "steps": metrics.get("steps"), "seconds": metrics.get("seconds"),
               "best_val_cider": (metrics.get("tested_checkpoint") or {}).get("cider")}  # fmt: skip
        row.update({k: scores[k] for k in keys})
        ref = (metrics.get("reference_consistency") or {}).get(test_set)
        row.update({k: _rate(scores.get("consistency"), k) for k in CONSISTENCY})
        row.update({f"ref_{k}": _rate(ref, k) for k in CONSISTENCY})
        row["untrained_cider"] = learning["untrained"][test_set]["cider"]
        frequent = learning["frequent_caption"]["scores"][test_set]
        row["frequent_cider"] = frequent["cider"]
        row["frequent_consistent_rate"] = _rate(frequent.get("consistency"), "consistent_rate")
        row["learned"] = learning["learned"][test_set]
        rows.append(row)
    return rows


def _score_columns(keys: Sequence[str]) -> list[str]:
    return [*keys, *CONSISTENCY, *(f"ref_{k}" for k in CONSISTENCY), "untrained_cider",
            "frequent_cider", "frequent_consistent_rate"]  # fmt: skip


def summarise(rows: list[dict[str, Any]], keys: Sequence[str]) -> list[dict[str, Any]]:
    """Mean, std and 95 % t-interval across seeds per (regime, test set)."""
    frame = pd.DataFrame(rows)
    out = []
    for (regime, test_set), group in frame.groupby(["regime", "test_set"], sort=True):
        row: dict[str, Any] = {"regime": regime, "test_set": test_set, "n_seeds": len(group),
                               "learned": int(group["learned"].sum())}  # fmt: skip
        for col in _score_columns(keys):
            mean, std, lo, hi = mean_std_ci(group[col].tolist())
            row.update({f"{col}_mean": mean, f"{col}_std": std, f"{col}_ci95_low": lo,
                        f"{col}_ci95_high": hi})  # fmt: skip
        out.append(row)
    return out


def _markdown(summary: list[dict[str, Any]], keys: Sequence[str]) -> str:
    def cell(r: dict[str, Any], col: str, scale: float) -> str:
        mean, lo, hi = (scale * r[f"{col}_{s}"] for s in ("mean", "ci95_low", "ci95_high"))
        if math.isnan(mean):
            return "n/a"
        return f"{mean:.1f}" if math.isnan(lo) else f"{mean:.1f} [{lo:.1f}, {hi:.1f}]"

    cols = [(c, t) for c, t in (("bleu_4", "BLEU-4"), ("meteor", "METEOR"), ("rouge_l", "ROUGE-L"),
                                ("cider", "CIDEr")) if c in keys]  # fmt: skip
    cols += [("consistent_rate", "consistent %"), ("ref_consistent_rate", "references consistent %"),
             ("untrained_cider", "untrained CIDEr"), ("frequent_cider", "frequent-caption CIDEr"),
             ("frequent_consistent_rate", "frequent-caption consistent %")]  # fmt: skip
    lines = [
        "# Captioning benchmark", "",
        "Mean over seeds [95 % t-interval], all in percent (CIDEr-D x 100). Consistent: captions "
        "that tell the truth about their image's land-cover map; the references' rate is the "
        "ceiling. A run learned when its CIDEr beats the untrained model's and the most frequent "
        "training caption's, and its consistent rate beats that caption's.", "",
        "| regime | test set | seeds | learned | " + " | ".join(t for _, t in cols) + " |",
        "|---|---|---|---|" + "---|" * len(cols),
    ]  # fmt: skip
    for r in summary:
        lines.append(
            f"| {r['regime']} | {r['test_set']} | {r['n_seeds']} | {r['learned']}/{r['n_seeds']} | "
            + " | ".join(cell(r, c, 100.0) for c, _ in cols) + " |"
        )  # fmt: skip
    return "\n".join(lines) + "\n"


def write_tables(
    out: Path, rows: list[dict[str, Any]], metrics: Sequence[str]
) -> tuple[list[dict[str, Any]], dict[str, str]]:
    """Write ``results.csv``, ``summary.csv``, ``results.md``, ``results.json`` atomically."""
    keys = score_keys(metrics)
    summary = summarise(rows, keys)
    return summary, write_table_files(out, rows, summary, _markdown(summary, keys))
