"""The processes executor: tasks run in spawned worker processes held to their thread count,
a failing task is named, stages inside ``sharing`` borrow one pool, and the per-image stages
refuse it (they run their chunks here or on Ray)."""

from __future__ import annotations

import os

import pytest

from groundsynth.distributed import TaskError, check_executor_options, make_executor
from groundsynth.errors import InputError
from groundsynth.process_pool import ProcessExecutor, sharing, usable_cpus


def _square_where(x: int) -> tuple[int, int, int]:
    """x², the worker's pid and its torch thread count."""
    import torch

    return x * x, os.getpid(), torch.get_num_threads()


def _fail_on_three(x: int) -> int:
    if x == 3:
        raise ValueError(f"no threes here ({x})")
    return x


def test_tasks_run_in_worker_processes_with_their_thread_count() -> None:
    with ProcessExecutor(num_cpus=1, workers=2) as ex:
        got = dict(ex.map_unordered(_square_where, range(6)))
        assert ex.describe() == {"name": "processes", "workers": 2, "task_cpus": 1}
    assert {x: r[0] for x, r in got.items()} == {x: x * x for x in range(6)}
    pids = {r[1] for r in got.values()}
    assert os.getpid() not in pids and 1 <= len(pids) <= 2
    assert {r[2] for r in got.values()} == {1}  # one torch thread per worker


def test_workers_default_to_the_cpus_over_threads_each() -> None:
    assert ProcessExecutor(num_cpus=1).workers == usable_cpus()
    assert ProcessExecutor(num_cpus=1.5).threads == 2  # rounded up
    assert ProcessExecutor(num_cpus=10_000).workers == 1
    with pytest.raises(InputError, match="workers"):
        ProcessExecutor(workers=0)


def test_a_failing_task_is_named_and_the_others_are_yielded() -> None:
    with ProcessExecutor(num_cpus=1, workers=2) as ex:
        seen: list[int] = []
        with pytest.raises(
            TaskError, match=r"item 3 failed in a worker process: ValueError: no threes"
        ) as err:
            for _task, result in ex.map_unordered(
                _fail_on_three, [1, 2, 3], label=lambda t: f"item {t}"
            ):
                seen.append(result)
    assert sorted(seen) == [1, 2]
    assert isinstance(err.value.__cause__, ValueError)


def test_stages_inside_sharing_borrow_one_pool() -> None:
    pool = ProcessExecutor(num_cpus=1, workers=1)
    with sharing(pool):
        with make_executor("processes") as first:
            a = {r[1] for _, r in first.map_unordered(_square_where, [1, 2])}
            assert first.describe()["shared"] is True
        # leaving the first stage did not stop the pool: the second stage reuses its worker
        with make_executor("processes") as second:
            b = {r[1] for _, r in second.map_unordered(_square_where, [3])}
        assert a == b and len(a) == 1
    assert pool._pool is None  # closed with the block
    assert isinstance(make_executor("processes"), ProcessExecutor)  # a pool of its own again


def test_options_are_checked_per_stage() -> None:
    # the per-image stages run chunks here or on Ray only
    with pytest.raises(InputError, match="valid executors: local, ray"):
        check_executor_options("processes", None, 1.0, 0.0)
    check_executor_options(
        "processes", None, 1.0, 0.0, allowed=("local", "processes", "ray")
    )  # the benchmarks and the experiment
    with pytest.raises(InputError, match="this machine's CPUs"):
        make_executor("processes", num_gpus=1.0)
    with pytest.raises(InputError, match="needs the ray executor"):
        make_executor("processes", address="auto")
