"""Benchmark sweeps: where the pending runs of a benchmark train -- here, in worker
processes, or as Ray tasks.

A benchmark (``segmentation``, ``retrieval``, ``captioning``) plans its runs -- one per
(arch, regime, seed) -- finds the finished ones and refuses conflicting ones before anything
is written, then hands its plan to :func:`run_sweep`:

- ``executor="local"`` (the default) trains each pending run in this process, one after the
  other, with what the benchmark already opened (its datasets, its pixel-floor store).
- ``executor="ray"`` submits each pending run as one Ray task (:mod:`groundsynth.distributed`)
  reserving ``ray_cpus`` CPUs and ``ray_gpus`` GPUs: :func:`run_task` opens the datasets
  on the worker and calls the benchmark's own ``_train_one``, which writes the run directory
  exactly as a local run does (``metrics.json`` last). The metrics come back to the driver,
  which turns them into rows and writes the tables once every run is done, as a local
  sweep does.
- ``executor="processes"`` does the same in a pool of worker processes on this machine,
  ``ray_cpus`` threads each, as many at once as the CPUs hold (two one-thread runs on two
  cores finish sooner than two two-thread runs one after the other); inside
  :func:`groundsynth.process_pool.sharing` the runs join the shared pool.

The executor options are not part of a run's identity (they are in every benchmark's
``NOT_IDENTITY``): a sweep begun on one executor resumes on the other. On Ray each run trains
on one device -- the GPU its task reserved, else the CPU (``accelerator=auto`` with
``ray_gpus=0`` means the CPU) -- so multi-device settings (``devices`` > 1, ``num_nodes`` > 1,
a ``strategy``) are refused with ``executor=ray``. A run failing on a worker raises
:class:`~groundsynth.distributed.TaskError` naming it; runs in flight then still finish
(their directories stay finished, so a rerun resumes them) and no new run starts.

Two tasks may compute the same pixel floor (``OUT/floors/``, one per regime without amounts)
at the same time: each fits it on the same samples with a fixed seed and writes it
atomically, so whichever write lands last leaves the same file.
"""

from __future__ import annotations

import logging
import os
import shutil
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from groundsynth.distributed import EXECUTORS, check_executor_options, make_executor
from groundsynth.errors import InputError

__all__ = [
    "EXECUTION",
    "RunTask",
    "SweepOutcome",
    "check_sweep_options",
    "run_sweep",
    "run_task",
    "trainer_hardware",
]

log = logging.getLogger(__name__)

#: Config fields choosing where runs train: never part of a run's identity.
EXECUTION: tuple[str, ...] = ("executor", "ray_address", "ray_cpus", "ray_gpus")

Metrics = dict[str, Any]


def check_sweep_options(cfg: Any) -> None:
    """Check a benchmark config's executor options (``executor``, ``ray_*``) against its
    Lightning hardware options; :class:`InputError` naming what to change."""
    check_executor_options(
        cfg.executor, cfg.ray_address, cfg.ray_cpus, cfg.ray_gpus, allowed=EXECUTORS
    )
    if cfg.executor == "local":
        return
    asked = [
        f"{name}={value!r}"
        for name, value, single in (
            ("devices", cfg.devices, cfg.devices in ("auto", 1)),
            ("num_nodes", cfg.num_nodes, cfg.num_nodes == 1),
            ("strategy", cfg.strategy, cfg.strategy == "auto"),
        )
        if not single
    ]
    if asked:
        raise InputError(
            f"--executor {cfg.executor} trains each run on one device, but {', '.join(asked)} asks for "
            "multi-device training: leave --devices/--num-nodes/--strategy at their defaults "
            "(give each run a GPU with --ray-gpus 1), or use --executor local"
        )
    if cfg.executor == "processes" and cfg.accelerator in ("gpu", "cuda"):
        raise InputError(
            f"--executor processes trains on this machine's CPUs, not --accelerator "
            f"{cfg.accelerator}: use --executor ray --ray-gpus 1, or --executor local"
        )
    if cfg.accelerator in ("gpu", "cuda") and not cfg.ray_gpus > 0:
        raise InputError(
            f"--accelerator {cfg.accelerator} on Ray needs a GPU per run: pass --ray-gpus 1 "
            "(or a fraction, 0.5, to share one between two runs)"
        )


def trainer_hardware(cfg: Any, overrides: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Lightning ``Trainer`` hardware options of a run: ``cfg``'s, less ``overrides``."""
    return {
        "accelerator": cfg.accelerator,
        "devices": cfg.devices,
        "num_nodes": cfg.num_nodes,
        "strategy": cfg.strategy,
        "enable_progress_bar": cfg.progress,
        **(overrides or {}),
    }


def _on_worker(cfg: Any) -> dict[str, Any]:
    """Hardware overrides inside a Ray task: one device, no progress bar (nobody sees it).

    Ray hides the GPUs a task did not reserve only when it reserved some, so ``auto``
    becomes the CPU for a task without GPUs rather than every task taking GPU 0.
    """
    auto_cpu = cfg.accelerator == "auto" and not cfg.ray_gpus > 0
    return {
        "accelerator": "cpu" if auto_cpu else cfg.accelerator,
        "devices": 1,
        "num_nodes": 1,
        "strategy": "auto",
        "enable_progress_bar": False,
    }


@dataclass(frozen=True)
class RunTask:
    """One run of a benchmark, self-contained: what a Ray worker needs to train it.

    Attributes:
        benchmark: ``segmentation``, ``retrieval`` or ``captioning`` (:data:`_RUNNERS`).
        config: the benchmark's resolved config (absolute paths).
        regime: the training regime's text (its canonical name).
        seed: the run's seed.
        run_dir: the run's directory (absolute).
        arch: the architecture (segmentation only).
    """

    benchmark: Literal["segmentation", "retrieval", "captioning"]
    config: Any
    regime: str
    seed: int
    run_dir: str
    arch: str | None = None

    @property
    def key(self) -> str:
        """``[arch/]regime/seed<k>``: how logs, manifests and errors name the run."""
        head = f"{self.arch}/" if self.arch else ""
        return f"{head}{self.regime}/seed{self.seed}"


def _segmentation_run(task: RunTask) -> Metrics:
    from groundsynth.benchmark.data import parse_regime
    from groundsynth.benchmark.learning import FloorStore
    from groundsynth.benchmark.segmentation import _train_one
    from groundsynth.data.reader import open_dataset

    cfg = task.config
    readers = {
        k: open_dataset(p) for k, p in (("real", cfg.real), ("synthetic", cfg.synthetic)) if p
    }
    floors = FloorStore(Path(cfg.out) / "floors", basis=cfg.floor)
    return _train_one(
        cfg, readers, str(task.arch), parse_regime(task.regime), task.seed, Path(task.run_dir),
        floors, trainer_options=_on_worker(cfg),
    )  # fmt: skip


def _retrieval_run(task: RunTask) -> Metrics:
    from groundsynth.benchmark.data import parse_regime
    from groundsynth.benchmark.pairs import open_sources
    from groundsynth.benchmark.retrieval_bench import _train_one

    cfg = task.config
    return _train_one(
        cfg, open_sources(cfg), parse_regime(task.regime), task.seed, Path(task.run_dir),
        trainer_options=_on_worker(cfg),
    )  # fmt: skip


def _captioning_run(task: RunTask) -> Metrics:
    from groundsynth.benchmark.captioning_bench import _train_one
    from groundsynth.benchmark.data import parse_regime
    from groundsynth.benchmark.pairs import open_sources

    cfg = task.config
    return _train_one(
        cfg, open_sources(cfg), parse_regime(task.regime), task.seed, Path(task.run_dir),
        trainer_options=_on_worker(cfg),
    )  # fmt: skip


#: benchmark -> how a worker trains one of its runs.
_RUNNERS: dict[str, Callable[[RunTask], Metrics]] = {
    "segmentation": _segmentation_run,
    "retrieval": _retrieval_run,
    "captioning": _captioning_run,
}


def run_task(task: RunTask) -> dict[str, Any]:
    """A Ray worker's task: train ``task``'s run; returns ``{"metrics", "pid", "seconds"}``."""
    t0 = time.time()
    metrics = _RUNNERS[task.benchmark](task)
    return {"metrics": metrics, "pid": os.getpid(), "seconds": round(time.time() - t0, 3)}


@dataclass
class SweepOutcome:
    """What :func:`run_sweep` did.

    Attributes:
        done: ``(task, metrics)`` of every finished run -- resumed and trained -- in plan order.
        trained: keys of the runs trained now, in plan order.
        skipped: keys of the runs found finished (resumed).
        executor: how the runs were trained, for the manifest (name, resources, tasks).
    """

    done: list[tuple[RunTask, Metrics]] = field(default_factory=list)
    trained: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    executor: dict[str, Any] = field(default_factory=dict)


def run_sweep(
    cfg: Any,
    plan: Sequence[tuple[RunTask, Metrics | None]],
    train_here: Callable[[RunTask], Metrics],
    *,
    rank_zero: bool = True,
) -> SweepOutcome:
    """Train the pending runs of ``plan`` (pairs of a task and its finished metrics, or
    ``None`` when it is still to train) on ``cfg.executor``: in this process with
    ``train_here``, or as Ray tasks with :func:`run_task`. An unfinished run directory is
    cleared first (by rank zero). Raises :class:`~groundsynth.distributed.TaskError` naming
    a run that failed on a worker."""
    out = SweepOutcome()
    metrics: dict[str, Metrics] = {}
    pending: list[RunTask] = []
    for task, done in plan:
        if done is not None:
            log.info("skipping finished run %s", task.key)
            out.skipped.append(task.key)
            metrics[task.key] = done
            continue
        if rank_zero and Path(task.run_dir).exists():
            log.info("clearing unfinished run %s", task.run_dir)
            shutil.rmtree(task.run_dir)
        pending.append(task)
    if cfg.executor != "local":  # nothing to train: no cluster or pool started
        out.executor = (
            _on_workers(cfg, pending, metrics) if pending else {"name": cfg.executor, "tasks": 0}
        )
    else:
        out.executor = {"name": "local"}
        for task in pending:
            log.info("training %s", task.key)
            metrics[task.key] = train_here(task)
    out.trained = [t.key for t in pending]
    out.done = [(t, metrics[t.key]) for t, _ in plan]
    return out


def _on_workers(cfg: Any, pending: list[RunTask], metrics: dict[str, Metrics]) -> dict[str, Any]:
    """Train ``pending`` as Ray tasks or in worker processes; put each run's metrics in
    ``metrics`` as it returns."""
    pids: set[int] = set()
    log.info("training %d run(s) on the %s executor", len(pending), cfg.executor)
    with make_executor(cfg.executor, cfg.ray_address, cfg.ray_cpus, cfg.ray_gpus) as executor:
        for task, result in executor.map_unordered(
            run_task, pending, label=lambda t: f"run {t.key}"
        ):
            metrics[task.key] = result["metrics"]
            pids.add(result["pid"])
            log.info(
                "finished %s in worker %d (%.1f s)", task.key, result["pid"], result["seconds"]
            )
            if not (Path(task.run_dir) / "metrics.json").is_file():
                log.warning(
                    "%s: the worker's metrics.json is not visible here; on a cluster, --out "
                    "must be on a file system every node mounts at the same path",
                    task.run_dir,
                )
        described = executor.describe()
    return {**described, "tasks": len(pending), "worker_processes": len(pids)}
