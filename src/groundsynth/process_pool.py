"""The ``processes`` executor: tasks in a pool of worker processes on this machine.

:class:`ProcessExecutor` spawns its workers (they inherit no state of this process), holds
each to ``num_cpus`` torch / OpenMP threads and gives them this process's logger levels and
warning filters. On a few cores two one-thread processes train small models about 1.3-1.5x
faster than one process with two threads, because small tensors leave threads idle
(``benchmarks/bench_parallel_runs.py``). While :func:`sharing` holds a pool open,
``make_executor("processes")`` hands it out to every stage inside, so stages run one after
the other -- or at once from several threads -- queue their tasks on the same workers.
The benchmarks and the transfer experiment use it; the per-image stages run here or on Ray
(:mod:`groundsynth.distributed`).
"""

from __future__ import annotations

import logging
import math
import multiprocessing
import os
import warnings
from collections.abc import Callable, Iterable, Iterator
from concurrent import futures
from contextlib import contextmanager
from typing import Any, TypeVar

from groundsynth.distributed import _END, EXECUTORS, TaskError, check_executor_options
from groundsynth.errors import InputError

__all__ = ["ProcessExecutor", "shared_or_new", "sharing", "usable_cpus"]

log = logging.getLogger(__name__)

T = TypeVar("T")
R = TypeVar("R")


def usable_cpus() -> int:
    """The CPUs this process may run on (its affinity where the OS tells it)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # macOS, Windows
        return max(1, os.cpu_count() or 1)


#: Loggers whose level a worker process takes from this one (the CLI quiets Lightning's
#: start-up chatter; a spawned worker would print it again).
_MIRRORED_LOGGERS = (
    "groundsynth",
    "lightning.pytorch.utilities.rank_zero",
    "lightning.fabric.utilities.rank_zero",
)


def _start_worker(threads: int, levels: dict[str, int], filters: list[Any]) -> None:
    """Worker start-up: the parent's logger levels and warning filters, the math libraries
    held to ``threads`` threads each."""
    for name, level in levels.items():
        logging.getLogger(name).setLevel(level)
    warnings.filters[:] = filters
    for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ[name] = str(threads)
    try:
        import torch
    except ImportError:  # a stage without torch: the variables above are enough
        return
    torch.set_num_threads(threads)


class ProcessExecutor:
    """Runs tasks in a pool of worker processes on this machine (see the module docstring).

    Workers are spawned (they inherit no state of this process), hold ``num_cpus`` threads
    each (rounded up) and are kept between tasks, with what they cached
    (:func:`worker_cached`).

    Args:
        num_cpus: threads per worker.
        workers: worker processes (default: as many as this machine's CPUs hold at
            ``num_cpus`` each, at least one).
        max_in_flight: tasks submitted and not yet collected per :meth:`map_unordered`
            call (default: twice the workers).
    """

    name = "processes"
    in_process = False

    def __init__(
        self, num_cpus: float = 1.0, workers: int | None = None, max_in_flight: int | None = None
    ) -> None:
        check_executor_options("processes", None, num_cpus, 0.0, allowed=EXECUTORS)
        if workers is not None and workers < 1:
            raise InputError(f"workers must be >= 1, got {workers}")
        if max_in_flight is not None and max_in_flight < 1:
            raise InputError(f"max_in_flight must be >= 1, got {max_in_flight}")
        self.threads = max(1, math.ceil(num_cpus))
        self.workers = workers or max(1, usable_cpus() // self.threads)
        self.max_in_flight = max_in_flight or 2 * self.workers
        self._pool: futures.ProcessPoolExecutor | None = None

    def start(self) -> ProcessExecutor:
        """Create the pool (idempotent; workers start with their first task)."""
        if self._pool is None:
            self._pool = futures.ProcessPoolExecutor(
                self.workers,
                mp_context=multiprocessing.get_context("spawn"),
                initializer=_start_worker,
                initargs=(
                    self.threads,
                    {n: logging.getLogger(n).getEffectiveLevel() for n in _MIRRORED_LOGGERS},
                    list(warnings.filters),
                ),
            )
            log.info("started %d worker process(es), %d thread(s) each", self.workers, self.threads)
        return self

    def close(self) -> None:
        """Drop queued tasks, wait for the running ones, stop the workers."""
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None

    def __enter__(self) -> ProcessExecutor:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "workers": self.workers, "task_cpus": self.threads}

    def map_unordered(
        self, fn: Callable[[T], R], tasks: Iterable[T], *, label: Callable[[T], str] = str
    ) -> Iterator[tuple[T, R]]:
        """Run ``fn(task)`` for each task in the workers; yield ``(task, result)`` as each
        finishes. After a task fails no more are submitted; those in flight are collected
        (and yielded when they succeed), then :class:`TaskError` names the first failure
        with ``label(task)``. Safe to call from several threads at once: their tasks share
        the workers."""
        pool = self.start()._pool
        if pool is None:  # start() always makes one
            raise RuntimeError("the worker pool did not start")
        pending: dict[futures.Future[R], T] = {}
        todo = iter(tasks)
        failure: TaskError | None = None
        try:
            while True:
                while failure is None and len(pending) < self.max_in_flight:
                    task = next(todo, _END)
                    if task is _END:
                        break
                    pending[pool.submit(fn, task)] = task  # type: ignore[arg-type]
                if not pending:
                    break
                done, _ = futures.wait(pending, return_when=futures.FIRST_COMPLETED)
                for future in done:
                    task = pending.pop(future)
                    try:
                        result = future.result()
                    except futures.process.BrokenProcessPool as exc:
                        failure = failure or TaskError(
                            f"{label(task)}: a worker process died ({exc}); a crash or the "
                            "system running out of memory"
                        )
                        continue
                    except Exception as exc:
                        if failure is None:
                            failure = TaskError(
                                f"{label(task)} failed in a worker process: "
                                f"{type(exc).__name__}: {exc}"
                            )
                            failure.__cause__ = exc
                        continue
                    yield task, result
        finally:
            for future in pending:  # left early (an error here, or the caller stopped)
                future.cancel()
        if failure is not None:
            raise failure


class _Borrowed:
    """A shared :class:`ProcessExecutor` seen by one stage: closing it leaves the pool open."""

    in_process = False

    def __init__(self, pool: ProcessExecutor) -> None:
        self._shared = pool
        self.name = pool.name

    def map_unordered(
        self, fn: Callable[[T], R], tasks: Iterable[T], *, label: Callable[[T], str] = str
    ) -> Iterator[tuple[T, R]]:
        return self._shared.map_unordered(fn, tasks, label=label)

    def describe(self) -> dict[str, Any]:
        return {**self._shared.describe(), "shared": True}

    def close(self) -> None:
        """The pool belongs to whoever opened :func:`sharing`."""

    def __enter__(self) -> _Borrowed:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


_SHARED: list[ProcessExecutor] = []


@contextmanager
def sharing(pool: ProcessExecutor) -> Iterator[ProcessExecutor]:
    """Within the block, ``make_executor("processes", ...)`` hands out ``pool`` (started,
    and closed when the block ends) instead of a new pool, so that stages run one after
    the other -- or at once from several threads -- share its workers."""
    _SHARED.append(pool.start())
    try:
        yield pool
    finally:
        _SHARED.remove(pool)
        pool.close()


def shared_or_new(num_cpus: float, max_in_flight: int | None = None) -> Any:
    """The pool :func:`sharing` holds open (borrowed: closing it leaves it open), else a new
    :class:`ProcessExecutor`."""
    if _SHARED:
        return _Borrowed(_SHARED[-1])
    return ProcessExecutor(num_cpus, max_in_flight=max_in_flight)
