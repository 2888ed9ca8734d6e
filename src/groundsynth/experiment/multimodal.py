"""The transfer experiment's multimodal tasks: image–text retrieval and image captioning
(``tasks`` ∋ ``retrieval`` / ``captioning``).

Captions: every image that takes part gets the built-in template captioner's captions
(5 per image, from its land-cover map) unless its dataset already has captions tables —
real A and B from their WorldCover maps, the grounded synthetic set from the maps it was
generated from, the ungrounded set from the segmenter's pseudo-labels (unchecked, like its
segmentation masks). So the grounded arm's captions tell the truth about its map by
construction, and the ungrounded arm's are as true as the pseudo-labels.

The experiment's pool (``out/pool``) gets ``captions/<name>.csv`` links to each set's table,
and :func:`groundsynth.benchmark.retrieval_bench.run_retrieval_benchmark` trains a dual
encoder per (regime, seed) — the segmentation benchmark's regimes — validated on A's val
pairs and tested on A's test pairs (in-domain) and B's (cross-region). The tables are the
segmentation ones' (:func:`~groundsynth.experiment.tables.results_tables`) on ``mean_recall``
(mR, percent) and R@10 in both directions. Captioning
(:func:`~groundsynth.benchmark.captioning_bench.run_captioning_benchmark`) is compared on
CIDEr-D, BLEU-4 and how often a generated caption tells the truth about its image's map
(``consistent_rate``), all fractions.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import pandas as pd

from groundsynth.data.reader import open_dataset
from groundsynth.experiment.tables import results_tables

__all__ = [
    "CAPTIONING_METRICS",
    "RETRIEVAL_METRICS",
    "caption_real",
    "caption_sets",
    "ensure_captions",
    "link_pool_captions",
    "run_captioning_task",
    "run_retrieval_task",
    "run_task",
]

log = logging.getLogger(__name__)

#: Scores compared between regimes (percent).
RETRIEVAL_METRICS = ("mean_recall", "i2t_r10", "t2i_r10")
#: Captioning scores compared between regimes (fractions).
CAPTIONING_METRICS = ("cider", "bleu_4", "consistent_rate")
_CAPTION_SOURCES = {
    "real": "WorldCover maps (template captioner)",
    "grounded": "the maps the images were generated from (template captioner)",
    "ungrounded": "the segmenter's pseudo-labels, unchecked (template captioner)",
}
CAPTIONS_PER_IMAGE = 5


def ensure_captions(dataset: Path, seed: int) -> str:
    """Caption ``dataset`` with the template captioner unless every split has captions;
    return ``"existing"`` or ``"template"`` (what its captions are)."""
    from groundsynth.caption.run import caption_dataset
    from groundsynth.caption.spec import CaptionRunConfig, StreamSpec

    reader = open_dataset(dataset)
    splits = [s for s in reader.splits() if reader.len(s)]
    if splits and all(reader.captions_path(s) is not None for s in splits):
        journal = (dataset / "captions" / ".journal").is_dir()
        return "template" if journal else "existing"
    log.info(
        "%s: captioning with the template captioner (%d per image)", dataset, CAPTIONS_PER_IMAGE
    )
    caption_dataset(
        CaptionRunConfig(
            dataset=str(dataset), streams=(StreamSpec("text", "template"),), n=CAPTIONS_PER_IMAGE,
            seed=seed,
        )
    )  # fmt: skip
    return "template"


def link_pool_captions(pool: Path, name: str, dataset: Path, split: str) -> None:
    """Link ``pool/captions/<name>.csv`` to ``dataset``'s captions table of ``split``."""
    found = open_dataset(dataset).captions_path(split)
    if found is None:
        raise FileNotFoundError(f"{dataset}: no captions table for split {split!r}")
    dst = pool / "captions" / f"{name}.csv"
    src = found[0].resolve()
    if dst.is_symlink() and Path(os.readlink(dst)) == src:
        return
    dst.parent.mkdir(parents=True, exist_ok=True)
    if dst.is_symlink():
        dst.unlink()
    os.symlink(src, dst)


def run_retrieval_task(
    *, out: Path, source: Path, pool: Path, regimes: tuple[str, ...], seeds: tuple[int, ...],
    settings: dict[str, Any], workers: int, progress: bool,
) -> dict[str, Any]:  # fmt: skip
    """Run (or resume) the retrieval benchmark of the experiment; write
    ``retrieval_results.csv``, ``retrieval_results_long.csv`` and
    ``retrieval_differences.csv`` into ``out``; return the task's block of ``experiment.json``."""
    from groundsynth.benchmark.retrieval_bench import (
        RetrievalBenchConfig,
        run_retrieval_benchmark,
    )

    bench = run_retrieval_benchmark(
        RetrievalBenchConfig(
            out=str(out / "retrieval"), real=str(source), synthetic=str(pool), train=regimes,
            val="real", test="real/test,synthetic/target", seeds=seeds, workers=workers,
            progress=progress, accelerator=settings.get("accelerator", "auto"),
            **{k: v for k, v in settings.items() if k != "accelerator"},
        )
    )  # fmt: skip
    chance = {r["test_set"]: r["chance_mean_recall"] for r in bench.rows}
    return {
        **_task_tables(out, "retrieval", bench.rows, RETRIEVAL_METRICS),
        "chance_mean_recall": chance,
    }


def run_captioning_task(
    *, out: Path, source: Path, pool: Path, regimes: tuple[str, ...], seeds: tuple[int, ...],
    settings: dict[str, Any], workers: int, progress: bool,
) -> dict[str, Any]:  # fmt: skip
    """Run (or resume) the captioning benchmark of the experiment; write
    ``captioning_results.csv``, ``captioning_results_long.csv`` and
    ``captioning_differences.csv`` into ``out``; return the task's block of ``experiment.json``."""
    from groundsynth.benchmark.captioning_bench import (
        CaptioningBenchConfig,
        run_captioning_benchmark,
    )

    bench = run_captioning_benchmark(
        CaptioningBenchConfig(
            out=str(out / "captioning"), real=str(source), synthetic=str(pool), train=regimes,
            val="real", test="real/test,synthetic/target", seeds=seeds, workers=workers,
            progress=progress, **settings,
        )
    )  # fmt: skip
    floors = {
        r["test_set"]: {"frequent_caption_cider": r["frequent_cider"],
                        "frequent_caption_consistent_rate": r["frequent_consistent_rate"],
                        "reference_consistent_rate": r["ref_consistent_rate"]}
        for r in bench.rows
    }  # fmt: skip
    return {**_task_tables(out, "captioning", bench.rows, CAPTIONING_METRICS), "floors": floors}


def run_task(
    exp: Any, task: str, captions: dict[str, str], regimes: tuple[str, ...]
) -> dict[str, Any]:
    """Run (or resume) the retrieval or captioning task of the transfer experiment ``exp``
    (its ``_Experiment``) on ``regimes``: the preset's settings with the experiment's executor
    options; the task's block of ``experiment.json``, with where its captions came from."""
    cfg = exp.cfg
    settings = {**exp.preset[task], **cfg.execution()}
    if task == "retrieval" and cfg.retrieval_pretrained:
        settings["pretrained"] = cfg.retrieval_pretrained
    run = run_retrieval_task if task == "retrieval" else run_captioning_task
    block = run(
        out=exp.out, source=exp.source, pool=exp.pool, regimes=regimes, seeds=cfg.seeds,
        settings=settings, workers=cfg.workers, progress=cfg.progress,
    )  # fmt: skip
    block["caption_sources"] = captions
    return block


def caption_real(exp: Any) -> dict[str, str]:
    """Captions of the experiment's real sets (A; B, linked into the pool as ``target``)."""
    seed = exp.cfg.seeds[0]
    made = {"real": ensure_captions(exp.source, seed), "target": ensure_captions(exp.target, seed)}
    link_pool_captions(exp.pool, "target", exp.target, exp.cfg.target_split)
    return made


def caption_sets(exp: Any, sets: dict[str, tuple[Path, str]]) -> dict[str, str]:
    """Captions for every set of the multimodal tasks -- the real ones and ``sets``
    (``{name: (dataset, split)}``) -- linked into the pool; what each set's captions are."""
    made = caption_real(exp)
    for name, (dataset, split) in sets.items():
        made[name] = ensure_captions(dataset, exp.cfg.seeds[0])
        link_pool_captions(exp.pool, name, dataset, split)
    return made


def _task_tables(
    out: Path, task: str, rows: list[dict[str, Any]], metrics: tuple[str, ...]
) -> dict[str, Any]:
    """Write ``<task>_results.csv`` (means and CIs), ``<task>_results_long.csv`` (one row per
    run and test set) and ``<task>_differences.csv`` (grounded - ungrounded) into ``out``;
    return the task block's tables, learning check and caption sources."""
    summary, diffs = results_tables(rows, metrics=metrics)
    pd.DataFrame(rows).to_csv(out / f"{task}_results_long.csv", index=False)
    summary.to_csv(out / f"{task}_results.csv", index=False)
    pd.DataFrame(diffs).to_csv(out / f"{task}_differences.csv", index=False)
    not_learned = sorted(
        {f"{r['regime']}/seed{r['seed']} on {r['test_set']}" for r in rows if not r["learned"]}
    )
    return {
        "metrics": list(metrics),
        "table": summary.to_dict(orient="records"),
        "differences": diffs,
        "learning": {"passed": not not_learned, "not_learned": not_learned},
        "captions": dict(_CAPTION_SOURCES),
    }
