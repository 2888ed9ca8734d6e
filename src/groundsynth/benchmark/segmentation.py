"""``groundsynth benchmark segmentation``: train and test segmenters per (arch, regime, seed).

For every architecture, training regime (see :mod:`groundsynth.benchmark.data`) and seed, a
Lightning ``Trainer`` trains a segmenter with early stopping on the validation macro F1, keeps
the best checkpoint and scores it on each test set with streaming confusion matrices.
Validation runs at the end of every epoch and at the last step (``max_steps`` inside an epoch
included), so the tested weights are always the best validation round's
(``metrics.json``'s ``tested_checkpoint``). Every run is checked against the pixel floor of its
training samples (:mod:`groundsynth.benchmark.learning`): ``metrics.json``'s ``learning`` block,
the ``floor_iou`` / ``learned`` columns of the tables, and a warning naming each run that does
not beat its floor. Layout of the output directory::

    OUT/
      config.yaml  manifest.json  benchmark-segmentation.log     the whole benchmark
      results.csv  summary.csv  results.md  results.json          tables (see .results)
      floors/<regime slug>[-seed<k>].json                         pixel floors (see .learning)
      runs/<arch>/<regime slug>/seed<k>/
        config.yaml  manifest.json  train.log                     that run
        segmenter.pt                                              best weights (load_segmenter)
        metrics.json                                              scores; written last
        lightning/                                                Lightning's CSV logs

A run whose ``metrics.json`` exists is finished: rerunning the same command skips it.
Unfinished run directories are cleared and trained again (Ctrl-C leaves the interrupted run
unfinished). Settings that change numbers must stay the same to resume; ``archs``, ``train``
and ``seeds`` may grow. An ``OUT`` holding a benchmark with other settings, another command's
run or other files is refused with :class:`OutputConflictError` before anything is written.

Multi-GPU / multi-node training goes through Lightning's own options (``devices``,
``num_nodes``, ``strategy``, ``precision``); every process runs this function, files are
written by global rank zero only. ``executor="ray"`` instead trains each pending run as one Ray
task on one device (:mod:`.sweep`); the run directories and tables are the same, and a
benchmark resumes on either executor.
"""

from __future__ import annotations

import json
import logging
import math
import time
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from groundsynth._optional import lazy_import
from groundsynth.benchmark.config import (
    BENCHMARK_KEYS,
    LATER_OPTIONS,
    NOT_IDENTITY,
    BenchmarkConfig,
    BenchmarkResult,
)
from groundsynth.benchmark.data import (
    LoaderOptions,
    Regime,
    SegmentationDataModule,
)
from groundsynth.benchmark.interrupt import reraise_interrupt
from groundsynth.benchmark.learning import FloorStore, warn_not_learned
from groundsynth.benchmark.lightning_module import MONITOR, SegmentationModule
from groundsynth.benchmark.model import build_from_spec, save_segmenter
from groundsynth.benchmark.results import KEY_COLUMNS, WORLDCOVER_NOTE, json_safe, write_results
from groundsynth.benchmark.sweep import RunTask, run_sweep, trainer_hardware
from groundsynth.data.reader import DatasetReader, open_dataset
from groundsynth.errors import InputError, OutputConflictError
from groundsynth.io import write_json
from groundsynth.runs import check_run_dir, start_run, to_plain

__all__ = ["BenchmarkConfig", "BenchmarkResult", "run_segmentation_benchmark"]

log = logging.getLogger(__name__)


def _global_rank() -> int:
    from lightning.fabric.utilities.rank_zero import rank_zero_only

    return int(getattr(rank_zero_only, "rank", 0) or 0)


def _run_dir(out: Path, arch: str, regime: Regime, seed: int) -> Path:
    return out / "runs" / arch / regime.slug / f"seed{seed}"


def _finished(
    run_dir: Path, identity: dict[str, Any], defaults: dict[str, Any] | None = None
) -> dict[str, Any] | None:
    """The run's metrics if it finished with this identity; raises if it differs.
    ``defaults``: options added after runs were made, and the value their absence means."""
    metrics = run_dir / "metrics.json"
    if not metrics.is_file():
        return None
    try:
        data = json.loads(metrics.read_text())
        old = yaml.safe_load((run_dir / "config.yaml").read_text()) or {}
    except (OSError, ValueError, yaml.YAMLError) as exc:
        raise OutputConflictError(
            f"{run_dir}: unreadable finished run ({exc}); remove it to redo it"
        ) from exc
    old, identity = {**(defaults or {}), **old}, {**(defaults or {}), **identity}
    if old != identity:
        keys = sorted(k for k in set(old) | set(identity) if old.get(k) != identity.get(k))
        raise OutputConflictError(
            f"{run_dir}: finished with other settings (differ: {', '.join(keys)}); "
            "use a new --out, or rerun with the same settings to resume"
        )
    return data


def _check_out(out: Path, cfg: BenchmarkConfig) -> None:
    """Refuse an ``out`` holding another command's run, other files, or a benchmark with other
    settings (nothing is written); an empty folder or this benchmark's own passes."""
    if check_run_dir(
        out, to_plain(cfg), what="segmentation benchmark", ignore=NOT_IDENTITY,
        required=BENCHMARK_KEYS, defaults=LATER_OPTIONS,
    ):  # fmt: skip
        log.info("%s: resuming the benchmark already there", out)


def _check_image_sizes(modules: list[SegmentationDataModule]) -> None:
    """Every train part, val and test set of every regime must have one image size."""
    sizes: dict[str, tuple[str, int, int]] = {}
    for dm in modules:
        sizes.update(dm.image_sizes())
    if len({(h, w) for _, h, w in sizes.values()}) > 1:
        listed = ", ".join(f"{k} {h}x{w} px ({root})" for k, (root, h, w) in sizes.items())
        raise InputError(
            f"image sizes differ: {listed}; a benchmark trains and tests on one size: "
            "build or resize the datasets to one size (groundsynth build --size)"
        )


def _rows(metrics: dict[str, Any]) -> list[dict[str, Any]]:
    """Run rows (one per test set) from a run's ``metrics.json``."""
    rows = []
    learning = metrics.get("learning") or {}  # absent in runs finished before the check
    for test_set, scores in metrics["test"].items():
        floor_iou = ((learning.get("floor") or {}).get(test_set) or {}).get("iou")
        row = {
            "arch": metrics["arch"],
            "regime": metrics["regime"],
            "seed": metrics["seed"],
            "test_set": test_set,
            "epochs": metrics.get("epochs"),
            "steps": metrics.get("steps"),
            "best_val_f1": metrics.get("best_val_f1"),
            "seconds": metrics.get("seconds"),
            "floor_iou": _float(floor_iou),
            "learned": learning.get("passed"),
        }
        row.update({k: (float("nan") if v is None else v) for k, v in scores.items()})
        rows.append(row)
    return rows


def _float(value: Any) -> float:
    return float("nan") if value is None else float(value)


def _tested_checkpoint(
    best_path: str, best: Any, history: list[dict[str, Any]], trainer: Any
) -> dict[str, Any]:
    """Which weights ``trainer.test`` scored: the best validation round's ``step``, ``epoch``
    and ``val_f1`` (the first round with the highest logged F1, as ModelCheckpoint keeps it),
    or the last weights (``kind: last``) when no round saved a checkpoint."""
    if not best_path or best is None:
        return {"kind": "last", "step": int(trainer.global_step), "val_f1": None,
                "epoch": int(trainer.current_epoch)}  # fmt: skip
    logged = float(best)  # float32, as logged
    for entry in history:
        f1 = entry.get("f1")
        f1 = 0.0 if f1 is None or math.isnan(f1) else f1  # logged as 0 (see the module)
        if float(np.float32(f1)) == logged:
            return {"kind": "best", "step": entry.get("step"), "val_f1": f1,
                    "epoch": entry.get("epoch")}  # fmt: skip
    log.warning("best checkpoint's val F1 %s matches no validation round", logged)
    return {"kind": "best", "step": None, "val_f1": logged, "epoch": None}


def _train_one(
    cfg: BenchmarkConfig,
    readers: dict[str, DatasetReader],
    arch: str,
    regime: Regime,
    seed: int,
    run_dir: Path,
    floors: FloorStore | None = None,
    trainer_options: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Train, test and save one run; return its metrics (the ``metrics.json`` content).

    ``floors``: where the regime's pixel floor is kept; with it (on rank zero) the metrics get
    the ``learning`` block of :mod:`groundsynth.benchmark.learning`. ``trainer_options``:
    hardware options overriding ``cfg``'s (:func:`~groundsynth.benchmark.sweep.trainer_hardware`;
    a Ray task trains on one device).
    """
    L = lazy_import("lightning.pytorch")
    torch = lazy_import("torch")
    from lightning.pytorch.callbacks import EarlyStopping, ModelCheckpoint
    from lightning.pytorch.loggers import CSVLogger

    t0 = time.time()
    rank_zero = _global_rank() == 0
    hardware = trainer_hardware(cfg, trainer_options)
    identity = cfg.run_identity(arch, regime.name, seed)
    run = start_run(run_dir, "train", identity, seeds={"run": seed}) if rank_zero else None
    # Lightning's `deterministic` flips a process-wide torch switch: restore it afterwards.
    det_state = (
        torch.are_deterministic_algorithms_enabled(),
        torch.is_deterministic_algorithms_warn_only_enabled(),
    )
    try:
        L.seed_everything(seed, workers=True, verbose=False)
        spec = cfg.model_spec(arch)
        model = build_from_spec(spec, cfg.encoder_weights)
        dm = SegmentationDataModule(
            readers,
            regime,
            cfg.val_set(),
            cfg.test_sets(),
            seed=seed,
            loader=LoaderOptions(
                cfg.batch_size,
                cfg.eval_batch_size,
                cfg.workers,
                pin_memory=torch.cuda.is_available() and hardware["accelerator"] != "cpu",
            ),
        )
        module = SegmentationModule(model, cfg.optim(), dm.test_names)
        ckpt = ModelCheckpoint(
            dirpath=run_dir / "lightning",
            filename="best",
            monitor=MONITOR,
            mode="max",
            save_top_k=1,
            save_weights_only=True,
            enable_version_counter=False,
            save_on_train_epoch_end=False,  # right after each validation round: its weights
        )
        # checked after validation rounds only: at each epoch's end and at max_steps (the module
        # asks Lightning to stop, hence validate, there)
        stop = EarlyStopping(
            monitor=MONITOR, mode="max", patience=cfg.patience, strict=False,
            check_on_train_epoch_end=False,
        )  # fmt: skip
        trainer = L.Trainer(
            **hardware,
            precision=cfg.precision,
            deterministic=cfg.deterministic,
            max_epochs=cfg.max_epochs,
            max_steps=cfg.max_steps,
            limit_train_batches=cfg.limit_train_batches,
            limit_val_batches=cfg.limit_val_batches,
            callbacks=[ckpt, stop],
            logger=CSVLogger(run_dir, name="lightning", version=""),
            default_root_dir=run_dir,
            enable_model_summary=False,
            use_distributed_sampler=False,
            log_every_n_steps=1,
            num_sanity_val_steps=0,
        )
        with reraise_interrupt(trainer):
            trainer.fit(module, datamodule=dm)
        best_path = ckpt.best_model_path
        if not best_path:
            log.warning(
                "%s: no validation round saved a checkpoint; testing the last weights", run_dir
            )
        with reraise_interrupt(trainer):
            trainer.test(
                module, datamodule=dm, ckpt_path="best" if best_path else None, verbose=False
            )
        best = ckpt.best_model_score
        metrics = {
            "arch": arch,
            "regime": regime.name,
            "seed": seed,
            "epochs": int(trainer.current_epoch),
            "steps": int(trainer.global_step),
            "best_val_f1": float(best) if best is not None else None,
            "tested_checkpoint": _tested_checkpoint(best_path, best, module.val_history, trainer),
            "val_history": module.val_history,
            "test": module.test_results,
            "data": dm.describe(),
            "checkpoint": "segmenter.pt",
            "seconds": round(time.time() - t0, 3),
        }
        if rank_zero and floors is not None:
            metrics["learning"] = floors.check(dm, seed, module.test_results)
            if not metrics["learning"]["passed"]:
                warn_not_learned(f"{arch}/{regime.name}/seed{seed}", metrics["learning"])
        if rank_zero:
            name = f"{arch}-{regime.slug}-seed{seed}"
            save_segmenter(
                run_dir / "segmenter.pt",
                module.model,
                {
                    "name": name,
                    "trained": {
                        k: metrics[k]
                        for k in ("arch", "regime", "seed", "epochs", "steps", "best_val_f1")
                    },
                    "data": metrics["data"],
                },
            )
            if best_path:
                Path(best_path).unlink(missing_ok=True)  # segmenter.pt holds these weights
            if run is not None:
                run.finish(
                    inputs=[p for p in (cfg.real, cfg.synthetic, cfg.encoder_weights) if p],
                    outputs=json_safe(
                        {
                            "best_val_f1": metrics["best_val_f1"],
                            "test": module.test_results,
                            "learning": metrics.get("learning"),
                        }
                    ),
                    digest=[run_dir / "segmenter.pt"],
                    extra={"encoder_weights": module.model.info.get("encoder_weights")},
                )
            write_json(run_dir / "metrics.json", json_safe(metrics))  # last: marks it finished
        return metrics
    finally:
        torch.use_deterministic_algorithms(det_state[0], warn_only=det_state[1])
        if run is not None:
            run.close()


def run_segmentation_benchmark(config: BenchmarkConfig) -> BenchmarkResult:
    """Train and test every (arch, regime, seed) of ``config``; write runs and tables.

    Raises:
        InputError: a dataset, split, image size, model or option is unusable (checked before
            anything is written).
        OutputConflictError: ``out`` holds runs made with other settings, another command's
            run, or other files.
        TaskError: a run failed on a Ray worker (named; runs in flight still finish).
    """
    t0 = time.time()
    cfg = config.resolved()
    out = Path(cfg.out)
    _check_out(out, cfg)
    readers = {
        k: open_dataset(p) for k, p in (("real", cfg.real), ("synthetic", cfg.synthetic)) if p
    }
    regimes = cfg.regimes()
    # Resolve every regime and evaluation set once up front: bad splits fail before training.
    modules = [
        SegmentationDataModule(readers, regime, cfg.val_set(), cfg.test_sets(), seed=cfg.seeds[0])
        for regime in regimes
    ]
    _check_image_sizes(modules)
    for arch in cfg.archs:  # unusable encoder / architecture / weights combinations
        weights = build_from_spec(cfg.model_spec(arch), cfg.encoder_weights).info
    # Find finished runs (and conflicting ones) before anything is written.
    plan = [
        (
            RunTask("segmentation", cfg, regime.name, seed,
                    str(_run_dir(out, arch, regime, seed)), arch),
            _finished(_run_dir(out, arch, regime, seed), cfg.run_identity(arch, regime.name, seed),
                      LATER_OPTIONS),
        )
        for regime in regimes
        for arch in cfg.archs
        for seed in cfg.seeds
    ]  # fmt: skip
    by_name = {regime.name: regime for regime in regimes}
    rank_zero = _global_rank() == 0
    run = (
        start_run(out, "benchmark-segmentation", cfg, seeds={"seeds": list(cfg.seeds)})
        if rank_zero
        else None
    )
    floors = FloorStore(out / "floors", basis=cfg.floor) if rank_zero else None

    def train_here(task: RunTask) -> dict[str, Any]:
        regime = by_name[task.regime]
        return _train_one(cfg, readers, str(task.arch), regime, task.seed, Path(task.run_dir),
                          floors)  # fmt: skip

    try:
        sweep = run_sweep(cfg, plan, train_here, rank_zero=rank_zero)
        trained, skipped = sweep.trained, sweep.skipped
        rows = [row for _, metrics in sweep.done for row in _rows(metrics)]
        rows.sort(key=lambda r: tuple(str(r[k]) for k in KEY_COLUMNS))
        notes = [
            WORLDCOVER_NOTE,
            "Scores pool every pixel of a test split in one confusion matrix; macro averages "
            "leave out classes absent from both the split's masks and the predictions.",
        ]
        files: dict[str, str] = {}
        summary: list[dict[str, Any]] = []
        if rank_zero:
            written = write_results(out, rows, notes)
            summary, files = written["summary"], written["files"]
            if run is not None:
                run.finish(
                    inputs=[p for p in (cfg.real, cfg.synthetic, cfg.encoder_weights) if p],
                    outputs={"runs": len(trained) + len(skipped), "files": files},
                    extra={
                        "trained": trained,
                        "resumed": skipped,
                        "encoder_weights": weights.get("encoder_weights"),
                        "executor": sweep.executor,
                    },
                )
    finally:
        if run is not None:
            run.close()
    return BenchmarkResult(
        out=out,
        rows=rows,
        summary=summary,
        files=files,
        trained=trained,
        skipped=skipped,
        seconds=round(time.time() - t0, 3),
    )
