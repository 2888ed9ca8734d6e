"""How the transfer experiment trains its independent models at once.

With ``executor="local"`` the experiment trains one model after the other in this process,
with every thread torch has. With ``executor="processes"`` (what ``groundsynth demo`` uses on
two or more cores) it opens one pool of worker processes, ``ray_cpus`` threads each
(:class:`~groundsynth.process_pool.ProcessExecutor`), and lets its stages share it
(:func:`~groundsynth.process_pool.sharing`):

- the two generators train as tasks of the pool while the benchmark trains every seed's
  real-only segmenter in it (:func:`in_background` runs the generators' task list from a
  thread of this process);
- the segmentation benchmark and the retrieval / captioning benchmarks run at the same time
  (:func:`at_once`), their runs queued on the same workers.

Small models leave threads idle: on 2 cores two one-thread trainings finish about 1.3x sooner
than the same two trainings one after the other with two threads each. Runs are the same
runs either way (their folders, identities and resume), but a run trained with one thread
rounds differently from one trained with two, so their figures differ at the level of
training noise. ``executor="ray"`` hands the benchmarks' runs and the generators to Ray.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Iterator, Sequence
from concurrent import futures
from typing import Any, TypeVar

from groundsynth.distributed import make_executor
from groundsynth.process_pool import ProcessExecutor, sharing

__all__ = ["at_once", "in_background", "train_generator_task", "workers"]

log = logging.getLogger(__name__)

R = TypeVar("R")


@contextlib.contextmanager
def workers(executor: str, address: str | None, cpus: float) -> Iterator[Any]:
    """The experiment's executor while the block runs: ``None`` for ``local`` (everything
    here, in order); for ``processes`` a pool every stage inside shares; for ``ray`` a Ray
    executor for the generators (the benchmarks start their own)."""
    if executor == "local":
        yield None
    elif executor == "processes":
        with sharing(ProcessExecutor(cpus)) as pool:
            yield pool
    else:
        with make_executor(executor, address, cpus) as ray:
            yield ray


def train_generator_task(config: Any) -> str:
    """A worker's task: train (or resume) the generator of ``config`` (a
    :class:`~groundsynth.generate.config.TrainConfig`); returns its run directory."""
    from groundsynth.generate.training import train_generator

    train_generator(config, progress=False)
    return str(config.out)


def in_background(executor: Any, configs: Sequence[Any]) -> futures.Future[list[str]]:
    """Train the generators of ``configs`` on ``executor`` from a thread of this process;
    the future's result is their run directories (or the first task's error)."""
    thread = futures.ThreadPoolExecutor(1, thread_name_prefix="generators")

    def run() -> list[str]:
        done = executor.map_unordered(
            train_generator_task, list(configs), label=lambda c: f"generator {c.kind}"
        )
        return [out for _, out in done]

    future = thread.submit(run)
    thread.shutdown(wait=False)  # the thread ends with its one task
    return future


def at_once(calls: dict[str, Callable[[], R]]) -> dict[str, R]:
    """Call each of ``calls`` in its own thread; their results by name. The first error
    (in the order given) is raised once every call has returned."""
    if len(calls) == 1:
        return {name: call() for name, call in calls.items()}
    with futures.ThreadPoolExecutor(len(calls), thread_name_prefix="stage") as pool:
        running = {name: pool.submit(call) for name, call in calls.items()}
        futures.wait(running.values())
    return {name: f.result() for name, f in running.items()}
