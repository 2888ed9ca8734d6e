"""``groundsynth benchmark retrieval``: train and test dual encoders per (regime, seed).

For every training regime (the segmentation benchmark's syntax, :mod:`.data`) and seed, a
CLIP-style dual encoder (:mod:`.dual_encoder`) is trained with the symmetric contrastive loss
(:mod:`.retrieval_module`), validated by retrieval on the validation pairs after every
``val_every`` epochs and at the last step, and the best validation round's weights are scored
on each test set: image→text and text→image R@1/5/10 and their mean (``mean_recall``,
percent). Every run is checked against two floors measured in the same run: *chance* (the
recall of a random ranking: ``K / images`` for text queries, the hypergeometric probability
that one of an image's captions is among K for image queries) and the *untrained* model (the
same seed's initial weights, scored before training). A run ``learned`` when its test
``mean_recall`` beats both on every test set; a warning names each run that does not.

Layout of the output directory::

    OUT/
      config.yaml  manifest.json  benchmark-retrieval.log      the whole benchmark
      results.csv  summary.csv  results.md  results.json        tables (mean, std, 95 % CI)
      runs/<regime slug>/seed<k>/
        config.yaml  manifest.json  train.log                   that run
        dual_encoder.pt                                         best weights (load_dual_encoder)
        metrics.json                                            scores; written last

A run whose ``metrics.json`` exists is finished: rerunning the same command skips it;
unfinished runs are cleared and trained again. ``train`` and ``seeds`` may grow between
runs; other settings must stay the same. Multi-GPU / multi-node training goes through
Lightning's options; files are written by global rank zero only. ``executor="ray"`` trains each
pending run as one Ray task on one device instead (:mod:`.sweep`), with the same run directories
and tables; a benchmark resumes on either executor.
"""

from __future__ import annotations

import logging
import math
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats

from groundsynth._optional import lazy_import
from groundsynth.benchmark.data import DataPart, Regime, resolve_part
from groundsynth.benchmark.dual_encoder import build_dual_encoder, save_dual_encoder
from groundsynth.benchmark.interrupt import reraise_interrupt
from groundsynth.benchmark.pairs import PairSet, PairSource, open_sources, regime_pairs
from groundsynth.benchmark.results import json_safe, mean_std_ci, write_table_files
from groundsynth.benchmark.retrieval_config import (
    NOT_IDENTITY,
    RETRIEVAL_KEYS,
    RetrievalBenchConfig,
    RetrievalBenchResult,
)
from groundsynth.benchmark.retrieval_module import (
    MONITOR,
    DualEncoderModule,
    PairImages,
    eval_loader,
    score_pairs,
    train_loader,
)
from groundsynth.benchmark.segmentation import _finished, _global_rank
from groundsynth.benchmark.sweep import RunTask, run_sweep, trainer_hardware
from groundsynth.errors import InputError
from groundsynth.io import write_json
from groundsynth.runs import check_run_dir, start_run, to_plain

__all__ = ["RetrievalBenchConfig", "chance_scores", "learning_check", "run_retrieval_benchmark"]

log = logging.getLogger(__name__)

KS = (1, 5, 10)
SCORES = (*(f"i2t_r{k}" for k in KS), *(f"t2i_r{k}" for k in KS), "mean_recall")


def chance_scores(pairs: PairSet, ks: tuple[int, ...] = KS) -> dict[str, float]:
    """Expected recalls (percent) of a random ranking of ``pairs``."""
    n, m = pairs.n_images, len(pairs.texts)
    counts = np.bincount(pairs.image_of_text, minlength=n)
    counts = counts[counts > 0]
    out: dict[str, float] = {}
    for k in ks:
        kk = min(k, m)
        out[f"i2t_r{k}"] = 100.0 * float(np.mean(1.0 - stats.hypergeom.pmf(0, m, counts, kk)))
    for k in ks:
        out[f"t2i_r{k}"] = 100.0 * min(1.0, k / n)
    out["mean_recall"] = float(np.mean([out[f"{d}_r{k}"] for d in ("i2t", "t2i") for k in ks]))
    return out


def learning_check(
    test: dict[str, dict[str, float]],
    untrained: dict[str, dict[str, float]],
    chance: dict[str, dict[str, float]],
) -> dict[str, Any]:
    """The ``learning`` block: per test set, whether the trained ``mean_recall`` beats both
    the untrained model's and chance's; ``passed`` when it does on every set."""
    learned = {
        name: bool(
            scores["mean_recall"] > max(untrained[name]["mean_recall"], chance[name]["mean_recall"])
        )
        for name, scores in test.items()
    }
    return {"untrained": untrained, "chance": chance, "learned": learned,
            "passed": all(learned.values())}  # fmt: skip


def _eval_sets(
    cfg: RetrievalBenchConfig, sources: dict[str, PairSource], seed: int
) -> tuple[PairSet, dict[str, PairSet]]:
    def one(part: DataPart, role: str) -> tuple[str, PairSet]:
        src, split, ids = resolve_part(part, sources, role, seed, None)  # type: ignore[arg-type]
        return f"{part.source}/{split}", src.pairs(split, ids)  # type: ignore[attr-defined]

    val = one(cfg.val_set(), "val")[1]
    return val, dict(one(p, "test") for p in cfg.test_sets())


def _run_dir(out: Path, regime: Regime, seed: int) -> Path:
    return out / "runs" / regime.slug / f"seed{seed}"


def _device(trainer: Any) -> str:
    root = getattr(trainer.strategy, "root_device", None)
    return str(root) if root is not None else "cpu"


def _train_one(
    cfg: RetrievalBenchConfig,
    sources: dict[str, PairSource],
    regime: Regime,
    seed: int,
    run_dir: Path,
    trainer_options: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Train, test and save one run; return its metrics (the ``metrics.json`` content).

    ``trainer_options``: hardware options overriding ``cfg``'s (a Ray task's one device).
    """
    L = lazy_import("lightning.pytorch")
    torch = lazy_import("torch")
    from lightning.pytorch.callbacks import EarlyStopping
    from lightning.pytorch.loggers import CSVLogger

    t0 = time.time()
    rank_zero = _global_rank() == 0
    run = (
        start_run(run_dir, "train", cfg.run_identity(regime.name, seed), seeds={"run": seed})
        if rank_zero
        else None
    )
    det = (
        torch.are_deterministic_algorithms_enabled(),
        torch.is_deterministic_algorithms_warn_only_enabled(),
    )
    try:
        L.seed_everything(seed, workers=True, verbose=False)
        encoder = build_dual_encoder(cfg.spec())
        train_sets, described = regime_pairs(regime, sources, seed)
        val, tests = _eval_sets(cfg, sources, seed)
        eval_bs = cfg.eval_batch_size or cfg.batch_size
        floor = (
            {name: score_pairs(encoder, pairs, eval_bs) for name, pairs in tests.items()}
            if rank_zero
            else {}
        )
        encoder.model.train()  # scoring the floor left it in eval mode
        module = DualEncoderModule(encoder, cfg.optim(), val)
        stop = EarlyStopping(monitor=MONITOR, mode="max", patience=cfg.patience, strict=False,
                             check_on_train_epoch_end=False)  # fmt: skip
        trainer = L.Trainer(
            **trainer_hardware(cfg, trainer_options), precision=cfg.precision,
            deterministic=cfg.deterministic,
            max_epochs=cfg.max_epochs, max_steps=cfg.max_steps, callbacks=[stop],
            check_val_every_n_epoch=cfg.val_every, enable_checkpointing=False,
            logger=CSVLogger(run_dir, name="lightning", version=""), default_root_dir=run_dir,
            enable_model_summary=False,
            use_distributed_sampler=False, log_every_n_steps=1, num_sanity_val_steps=0,
        )  # fmt: skip
        dataset = PairImages(train_sets, encoder, train=True)
        with reraise_interrupt(trainer):
            trainer.fit(
                module,
                train_dataloaders=train_loader(dataset, cfg.batch_size, cfg.workers, seed,
                                               trainer.world_size, trainer.global_rank),
                val_dataloaders=eval_loader(val, encoder, eval_bs, cfg.workers),
            )  # fmt: skip
        if module.best_state is None:
            log.warning("%s: no validation round ran; testing the last weights", run_dir)
        else:
            encoder.model.load_state_dict(module.best_state)
        metrics: dict[str, Any] = {
            "regime": regime.name, "seed": seed, "epochs": int(trainer.current_epoch),
            "steps": int(trainer.global_step),
            "tested_checkpoint": {"kind": "best", **module.best} if module.best else {"kind": "last"},
            "val_history": module.val_history, "data": {"train": described},
            "checkpoint": "dual_encoder.pt",
        }  # fmt: skip
        if rank_zero:
            encoder.model.to("cpu")
            test = {name: score_pairs(encoder, pairs, eval_bs) for name, pairs in tests.items()}
            chance = {name: chance_scores(pairs) for name, pairs in tests.items()}
            metrics.update(test=test, learning=learning_check(test, floor, chance),
                           seconds=round(time.time() - t0, 3))  # fmt: skip
            learned = metrics["learning"]["learned"]
            if not metrics["learning"]["passed"]:
                log.warning(
                    "%s/seed%d did not beat its floor (untrained model and chance) on %s",
                    regime.name, seed, ", ".join(k for k, v in learned.items() if not v),
                )  # fmt: skip
            save_dual_encoder(run_dir / "dual_encoder.pt", encoder,
                              {"regime": regime.name, "seed": seed, "steps": metrics["steps"]})  # fmt: skip
            if run is not None:
                run.finish(
                    inputs=[p for p in (cfg.real, cfg.synthetic, cfg.pretrained) if p and Path(p).exists()],
                    outputs=json_safe({"test": test, "learning": metrics["learning"]}),
                    digest=[run_dir / "dual_encoder.pt"],
                )  # fmt: skip
            write_json(run_dir / "metrics.json", json_safe(metrics))  # last: marks it finished
        return metrics
    finally:
        torch.use_deterministic_algorithms(det[0], warn_only=det[1])
        if run is not None:
            run.close()


def _rows(metrics: dict[str, Any]) -> list[dict[str, Any]]:
    rows = []
    learning = metrics.get("learning") or {}
    for test_set, scores in metrics["test"].items():
        row = {"regime": metrics["regime"], "seed": metrics["seed"], "test_set": test_set,
               "steps": metrics.get("steps"), "seconds": metrics.get("seconds"),
               "best_val_mean_recall": (metrics.get("tested_checkpoint") or {}).get("mean_recall")}  # fmt: skip
        row.update({k: scores[k] for k in SCORES})
        row["untrained_mean_recall"] = learning["untrained"][test_set]["mean_recall"]
        row["chance_mean_recall"] = learning["chance"][test_set]["mean_recall"]
        row["learned"] = learning["learned"][test_set]
        rows.append(row)
    return rows


def summarise(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Mean, std and 95 % t-interval across seeds per (regime, test set)."""
    frame = pd.DataFrame(rows)
    out = []
    for (regime, test_set), group in frame.groupby(["regime", "test_set"], sort=True):
        row: dict[str, Any] = {"regime": regime, "test_set": test_set, "n_seeds": len(group),
                               "learned": int(group["learned"].sum())}  # fmt: skip
        for col in (*SCORES, "chance_mean_recall"):
            mean, std, lo, hi = mean_std_ci(group[col].tolist())
            row.update({f"{col}_mean": mean, f"{col}_std": std, f"{col}_ci95_low": lo,
                        f"{col}_ci95_high": hi})  # fmt: skip
        out.append(row)
    return out


def _markdown(summary: list[dict[str, Any]]) -> str:
    def cell(r: dict[str, Any], col: str) -> str:
        mean, lo, hi = r[f"{col}_mean"], r[f"{col}_ci95_low"], r[f"{col}_ci95_high"]
        return f"{mean:.1f}" if math.isnan(lo) else f"{mean:.1f} [{lo:.1f}, {hi:.1f}]"

    lines = [
        "# Retrieval benchmark", "",
        "Recalls in percent: mean over seeds [95 % t-interval]; chance is a random ranking's.", "",
        "| regime | test set | seeds | learned | i2t R@1 | i2t R@10 | t2i R@1 | t2i R@10 | mR | chance mR |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]  # fmt: skip
    for r in summary:
        lines.append(
            f"| {r['regime']} | {r['test_set']} | {r['n_seeds']} | {r['learned']}/{r['n_seeds']} | "
            + " | ".join(cell(r, c) for c in ("i2t_r1", "i2t_r10", "t2i_r1", "t2i_r10", "mean_recall",
                                              "chance_mean_recall"))
            + " |"
        )  # fmt: skip
    return "\n".join(lines) + "\n"


def write_tables(
    out: Path, rows: list[dict[str, Any]]
) -> tuple[list[dict[str, Any]], dict[str, str]]:
    """Write ``results.csv``, ``summary.csv``, ``results.md``, ``results.json`` atomically."""
    summary = summarise(rows)
    files = write_table_files(out, rows, summary, _markdown(summary))
    return summary, files


def run_retrieval_benchmark(config: RetrievalBenchConfig) -> RetrievalBenchResult:
    """Train and test every (regime, seed) of ``config``; write runs and tables.

    Raises:
        InputError: a source, split, model or option is unusable (checked before anything is
            written).
        OutputConflictError: ``out`` holds runs made with other settings, another command's
            run, or other files.
        TaskError: a run failed on a Ray worker (named; runs in flight still finish).
    """
    t0 = time.time()
    cfg = config.resolved()
    out = Path(cfg.out)
    if check_run_dir(out, to_plain(cfg), what="retrieval benchmark", ignore=NOT_IDENTITY,
                     required=RETRIEVAL_KEYS):  # fmt: skip
        log.info("%s: resuming the benchmark already there", out)
    sources = open_sources(cfg)
    regimes = cfg.regimes()
    for regime in regimes:  # bad splits and amounts fail before anything is written
        regime_pairs(regime, sources, cfg.seeds[0])
    _eval_sets(cfg, sources, cfg.seeds[0])
    build_dual_encoder(cfg.spec())
    plan = [
        (
            RunTask("retrieval", cfg, r.name, s, str(_run_dir(out, r, s))),
            _finished(_run_dir(out, r, s), cfg.run_identity(r.name, s)),
        )
        for r in regimes
        for s in cfg.seeds
    ]
    by_name = {r.name: r for r in regimes}
    rank_zero = _global_rank() == 0
    run = (
        start_run(out, "benchmark-retrieval", cfg, seeds={"seeds": list(cfg.seeds)})
        if rank_zero
        else None
    )

    def train_here(task: RunTask) -> dict[str, Any]:
        return _train_one(cfg, sources, by_name[task.regime], task.seed, Path(task.run_dir))

    try:
        sweep = run_sweep(cfg, plan, train_here, rank_zero=rank_zero)
        trained, skipped = sweep.trained, sweep.skipped
        # only rank zero scores the test sets: other ranks' fresh metrics have no rows
        rows = [row for _, m in sweep.done if rank_zero or "test" in m for row in _rows(m)]
        summary: list[dict[str, Any]] = []
        files: dict[str, str] = {}
        if rank_zero:
            rows.sort(key=lambda r: (r["regime"], r["seed"], r["test_set"]))
            summary, files = write_tables(out, rows)
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
    return RetrievalBenchResult(
        out, rows, summary, files, trained, skipped, round(time.time() - t0, 3)
    )
