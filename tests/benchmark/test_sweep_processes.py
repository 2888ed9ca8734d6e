"""Benchmark sweeps on the processes executor (worker processes on this machine, one thread
each): the tables and weights of a one-thread local sweep to the last bit, resume across
executors, a failing run named while the others finish, and GPUs refused."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

torch = pytest.importorskip("torch")

from groundsynth.benchmark.segmentation import run_segmentation_benchmark  # noqa: E402
from groundsynth.distributed import TaskError  # noqa: E402
from groundsynth.errors import InputError  # noqa: E402
from tests.benchmark.test_sweep import _metrics, _runs, _seg, _weights  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_thread")


def test_segmentation_sweep_in_worker_processes_gives_the_local_tables(
    tiny_dataset: Path, tmp_path: Path
) -> None:
    local = tmp_path / "local"
    run_segmentation_benchmark(_seg(tiny_dataset, local, seeds=(0,)))  # seed 1 left to the pool
    out = tmp_path / "processes"
    result = run_segmentation_benchmark(_seg(tiny_dataset, out, executor="processes"))
    assert result.trained == ["unet/real/seed0", "unet/real/seed1"]
    # seed 0 trained in a worker is the local run to the last bit (both on one thread)
    here, there = (root / "runs" / "unet" / "real" / "seed0" for root in (local, out))
    assert _metrics(there) == _metrics(here)
    a, b = _weights(here), _weights(there)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    executor = json.loads((out / "manifest.json").read_text())["executor"]
    assert (executor["name"], executor["tasks"], executor["task_cpus"]) == ("processes", 2, 1)
    assert 1 <= executor["worker_processes"] <= executor["workers"]
    # the local benchmark resumes seed 0 and trains seed 1: the pool's table, bit for bit
    back = run_segmentation_benchmark(_seg(tiny_dataset, local))
    assert back.trained == ["unet/real/seed1"] and back.skipped == ["unet/real/seed0"]
    pd.testing.assert_frame_equal(_runs(out), _runs(local), check_exact=True)
    again = run_segmentation_benchmark(_seg(tiny_dataset, out, executor="processes"))
    assert again.trained == [] and again.skipped == result.trained


def test_a_run_failing_in_a_worker_is_named_and_the_others_finish(
    tiny_dataset: Path, tmp_path: Path
) -> None:
    out = tmp_path / "bench"
    run_segmentation_benchmark(_seg(tiny_dataset, out, train=("real:16",), seeds=(0,)))
    (out / "floors" / "real@16-seed1.json").mkdir()  # seed 1's floor cannot be written
    cfg = _seg(tiny_dataset, out, train=("real:16",), seeds=(0, 1, 2), executor="processes")
    with pytest.raises(
        TaskError,
        match=r"run unet/real:16/seed1 failed in a worker process: IsADirectoryError",
    ):
        run_segmentation_benchmark(cfg)
    runs = out / "runs" / "unet" / "real@16"
    assert (runs / "seed2" / "metrics.json").is_file()  # ran alongside: finished
    assert not (runs / "seed1" / "metrics.json").exists()


def test_gpus_are_refused_on_the_processes_executor(tiny_dataset: Path, tmp_path: Path) -> None:
    with pytest.raises(InputError, match="this machine's CPUs"):
        _seg(tiny_dataset, tmp_path, executor="processes", accelerator="gpu")
    with pytest.raises(InputError, match="this machine's CPUs"):
        _seg(tiny_dataset, tmp_path, executor="processes", ray_gpus=1.0)
