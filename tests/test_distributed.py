"""The Ray executor: pseudo-label and caption on a local 2-CPU Ray cluster give the same bytes
as a local run, resume across executors, name a failed chunk, and refuse a bad address.

One cluster serves the whole module (its services on 127.0.0.1 only); every stage run here
finds it open and reuses it.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

pytest.importorskip("ray")
pytest.importorskip("torch")

import groundsynth.generate.pseudo_label_chunks as chunks_module  # noqa: E402
from groundsynth.caption.run import CaptionRunConfig, StreamSpec, caption_dataset  # noqa: E402
from groundsynth.cli import app  # noqa: E402
from groundsynth.distributed import RayExecutor, TaskError, make_executor  # noqa: E402
from groundsynth.errors import InputError  # noqa: E402
from groundsynth.generate.pseudo_label import PseudoLabelConfig, pseudo_label  # noqa: E402
from tests.benchmark.conftest import TINY  # noqa: E402
from tests.caption.dataset import make_dataset  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_thread")

#: Files that record one run's own timings, command and executor, so differ between runs
#: (config.yaml is compared apart: it names the output folder).
RUN_RECORDS = {"manifest.json", "pseudo-label.log"}


def _files(root: Path, skip: set[str] = RUN_RECORDS) -> dict[str, bytes]:
    """Relative path -> bytes of every file under ``root`` but the run records."""
    return {
        str(p.relative_to(root)): p.read_bytes()
        for p in sorted(root.rglob("*"))
        if p.is_file() and p.name not in skip
    }


def _assert_same_tree(a: Path, b: Path) -> None:
    """Same files, same bytes; config.yaml differs in ``out`` alone (no executor option)."""
    fa, fb = _files(a), _files(b)
    assert sorted(fa) == sorted(fb)
    assert [k for k in fa if fa[k] != fb[k]] == ["config.yaml"]
    ca, cb = (yaml.safe_load(fa["config.yaml"]), yaml.safe_load(fb["config.yaml"]))
    assert ca.pop("out") != cb.pop("out") and ca == cb and "executor" not in ca


def _pl_config(dataset: Path, checkpoint: Path, out: Path, **kw) -> PseudoLabelConfig:
    # chunks of 3 in batches of 2: batches go 2, 1 per chunk, so a batch never straddles two
    return PseudoLabelConfig(
        dataset=str(dataset), model=str(checkpoint), out=str(out), splits=("val", "test"),
        batch_size=2, chunk_size=3, device="cpu", **kw,
    )  # fmt: skip


@pytest.fixture(scope="module")
def tiny_dataset(tmp_path_factory) -> Path:
    """A 64 px dataset (5 val, 5 test images), as tests/benchmark's fixture of that name."""
    from groundsynth.data.build import BuildConfig, build_dataset
    from tests.data.rasters import make_pair

    tmp = tmp_path_factory.mktemp("dist_data")
    lc, img = make_pair(tmp)
    out = tmp / "ds"
    build_dataset(
        BuildConfig(
            imagery=(str(img),), landcover=(str(lc),), out=str(out), size=64, block_size=1, buffer=0
        )
    )
    return out


@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory) -> Path:
    """A randomly initialised tiny Unet segmenter checkpoint."""
    import torch

    from groundsynth.benchmark.model import build_model, save_segmenter

    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("dist_ckpt") / "tiny-unet.pt"
    save_segmenter(path, build_model("unet", **TINY), {"name": "tiny-unet"})
    return path


@pytest.fixture(scope="module")
def local_labels(tiny_dataset, tiny_checkpoint, tmp_path_factory) -> Path:
    """A complete local pseudo-label run: the reference."""
    out = tmp_path_factory.mktemp("pl_local") / "out"
    pseudo_label(_pl_config(tiny_dataset, tiny_checkpoint, out))
    return out


def _stop_after(monkeypatch, k: int) -> None:
    """Make the driver stop (as Ctrl-C would) when it is about to record chunk ``k + 1``."""
    real, calls = chunks_module.write_json, []

    def write_json(path, data):
        calls.append(path)
        if len(calls) > k:
            raise KeyboardInterrupt
        return real(path, data)

    monkeypatch.setattr(chunks_module, "write_json", write_json)


def test_pseudo_label_on_ray_matches_local_byte_for_byte(
    ray_cluster, local_labels, tiny_dataset, tiny_checkpoint, tmp_path
) -> None:
    reference = local_labels
    out = tmp_path / "ray"
    seen: list[tuple[int, int]] = []
    result = pseudo_label(
        _pl_config(tiny_dataset, tiny_checkpoint, out, executor="ray"),
        progress=lambda done, total: seen.append((done, total)),
    )
    assert result.counts == {"val": 5, "test": 5} and result.chunks_total == 4
    _assert_same_tree(reference, out)
    assert seen[0] == (0, 10) and seen[-1] == (10, 10) and len(seen) == 5  # start + per chunk
    executor = json.loads((out / "manifest.json").read_text())["executor"]
    assert executor["name"] == "ray" and executor["tasks"] == 4
    # the model is loaded once per worker process (at most), not once per chunk
    assert executor["model_loads"] <= executor["worker_processes"] <= 2
    local = json.loads((reference / "manifest.json").read_text())["executor"]
    assert local == {"name": "local"}


@pytest.mark.parametrize(("first", "then"), [("local", "ray"), ("ray", "local")])
def test_an_interrupted_run_resumes_on_the_other_executor(
    ray_cluster, local_labels, tiny_dataset, tiny_checkpoint, tmp_path, monkeypatch, first, then
) -> None:
    out = tmp_path / "pl"
    with monkeypatch.context() as patch:
        _stop_after(patch, 2)
        with pytest.raises(KeyboardInterrupt):
            pseudo_label(_pl_config(tiny_dataset, tiny_checkpoint, out, executor=first))
    assert len(list((out / ".pseudo-label").rglob("*.json"))) == 2
    # what a task cancelled mid-write may leave; the resumed run removes it
    for kind in ("images", "masks"):
        (out / "test" / kind / ".s2_000_002.png.0123abcd.tmp").write_bytes(b"half")
    result = pseudo_label(_pl_config(tiny_dataset, tiny_checkpoint, out, executor=then))
    assert (result.chunks_resumed, result.chunks_total) == (2, 4)
    _assert_same_tree(local_labels, out)


def test_a_chunk_failing_on_a_worker_is_named_and_not_recorded(
    ray_cluster, tiny_dataset, tiny_checkpoint, tmp_path, monkeypatch
) -> None:
    out = tmp_path / "pl"
    with monkeypatch.context() as patch:  # a run that stopped before recording anything
        _stop_after(patch, 0)
        with pytest.raises(KeyboardInterrupt):
            pseudo_label(_pl_config(tiny_dataset, tiny_checkpoint, out))
    # chunk val/1 cannot be written: a folder stands where one of its masks goes
    victim = sorted((tiny_dataset / "val" / "images").glob("*.png"))[3].stem
    (out / "val" / "masks" / f"{victim}.png").mkdir(parents=True)
    with pytest.raises(TaskError, match=r"chunk val/000001 .* failed on a Ray worker: .*Error"):
        pseudo_label(_pl_config(tiny_dataset, tiny_checkpoint, out, executor="ray"))
    assert not (out / ".pseudo-label" / "val" / "000001.json").exists()


def _caption(root: Path, streams: tuple[StreamSpec, ...], **kw) -> None:
    res = caption_dataset(CaptionRunConfig(str(root), streams, batch_size=2, chunk_size=4, **kw))
    assert res.failed == 0


def _journal_lines(root: Path) -> dict[str, set[str]]:
    """Each journal file's records, timestamps dropped, as a set (Ray appends in any order)."""
    out = {}
    for p in sorted((root / "captions" / ".journal").rglob("*.jsonl")):
        recs = [json.loads(line) for line in p.read_text().splitlines()]
        out[str(p.relative_to(root))] = {
            json.dumps({k: v for k, v in r.items() if k != "t"}) for r in recs
        }
    return out


def test_template_captions_on_ray_match_local(ray_cluster, tmp_path, monkeypatch) -> None:
    streams = (StreamSpec.parse("text=template"),)
    local = make_dataset(tmp_path / "local")
    remote = make_dataset(tmp_path / "ray")
    _caption(local, streams, n=3)
    monkeypatch.chdir(tmp_path)  # a relative dataset path: workers run elsewhere
    _caption(Path("ray"), streams, n=3, executor="ray")
    tables = sorted(p.name for p in (local / "captions").glob("*.csv"))
    assert tables == ["train.csv", "val.csv"]
    for name in tables:
        assert (local / "captions" / name).read_bytes() == (remote / "captions" / name).read_bytes()
    assert _journal_lines(local) == _journal_lines(remote)
    manifest = json.loads((remote / "captions" / "run" / "manifest.json").read_text())
    assert [(e["name"], e["columns"]) for e in manifest["executor"]] == [("ray", ["text_template"])]


def test_transformers_captions_on_ray_match_local(ray_cluster, tmp_path) -> None:
    pytest.importorskip("transformers")
    from tests.caption.tiny_models import tiny_causal_lm

    model = tiny_causal_lm(tmp_path / "tiny_lm")
    streams = (StreamSpec.parse(f"text=transformers:{model}@text_tiny"),)
    opts = {"max_new_tokens": 4, "device": "cpu"}
    local = make_dataset(tmp_path / "local", {"train": 5})
    remote = make_dataset(tmp_path / "ray", {"train": 5})
    _caption(local, streams, **opts)
    _caption(remote, streams, executor="ray", **opts)
    assert (local / "captions" / "train.csv").read_bytes() == (
        remote / "captions" / "train.csv"
    ).read_bytes()


def test_bad_addresses_and_resources_are_named(ray_cluster) -> None:
    with pytest.raises(InputError, match="bad Ray address 'nonsense'"):
        make_executor("ray", address="nonsense")
    unreachable = make_executor("ray", address="127.0.0.1:1")
    with pytest.raises(InputError, match=r"cannot reach a Ray cluster at '127\.0\.0\.1:1'"):
        unreachable.start()
    # more than the (local, 2-CPU, GPU-less) cluster has: refused, not left waiting forever
    with pytest.raises(
        InputError, match=r"1 GPU\(s\) but the Ray cluster has 2 CPU\(s\) and 0 GPU"
    ):
        RayExecutor(num_gpus=1).start()
    with pytest.raises(InputError, match="needs the ray executor"):
        make_executor("local", address="auto")
    with pytest.raises(InputError, match="valid executors: local, processes, ray"):
        make_executor("dask")
    res = CliRunner().invoke(
        app,
        ["pseudo-label", "d", "--model", "m.pt", "--executor", "ray", "--ray-address", "x:y"],
        terminal_width=200,
    )
    assert res.exit_code == 2 and "bad Ray address 'x:y'" in res.output
    for command in ("pseudo-label", "caption"):
        res = CliRunner().invoke(app, [command, "--help"], terminal_width=200)
        assert all(
            f in res.output for f in ("--executor", "--ray-address", "--ray-cpus", "--ray-gpus")
        )
