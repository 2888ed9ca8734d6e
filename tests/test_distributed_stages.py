"""The Ray executor for generate, evaluate synthetic and CLIPScore: on a local 2-CPU Ray
cluster each gives the same bytes as a local run, an interrupted run resumes on the other
executor, the executor options stay out of the run's identity, and bad options are named.

One cluster serves the whole module (as in tests/test_distributed.py); every stage run here
finds it open and reuses it.
"""

from __future__ import annotations

import json
import logging
import warnings
from dataclasses import replace
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

pytest.importorskip("ray")
torch = pytest.importorskip("torch")
pytest.importorskip("lightning")
pytest.importorskip("diffusers")
pytest.importorskip("segmentation_models_pytorch")
pytest.importorskip("open_clip")

import groundsynth.evaluate.image_chunks as image_chunks  # noqa: E402
import groundsynth.generate.writer as generate_writer  # noqa: E402
from groundsynth.cli import app  # noqa: E402
from groundsynth.errors import InputError  # noqa: E402
from groundsynth.evaluate.captions import CLIP_RECORDS, evaluate_captions  # noqa: E402
from groundsynth.evaluate.clipscore import ClipScoreConfig  # noqa: E402
from groundsynth.evaluate.synthetic import RECORDS, evaluate_synthetic  # noqa: E402
from groundsynth.generate.layouts import LayoutConfig  # noqa: E402
from groundsynth.generate.sampling import GenerateConfig, generate_dataset  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_thread")

#: Files that record one run's own timings, command and executor, so differ between runs
#: (config.yaml is compared apart: it names the output folder; summary.json: its timings).
RUN_RECORDS = {"manifest.json", "generate.log", "evaluate_synthetic.log"}


@pytest.fixture(autouse=True)
def _still_one_thread():
    """Each test starts on one thread again: what ran before in the process (training, or
    UMAP's numba in evaluate synthetic) may leave torch on more threads."""
    torch.set_num_threads(1)


def _files(root: Path) -> dict[str, bytes]:
    """Relative path -> bytes of every file under ``root`` but the run records."""
    return {
        str(p.relative_to(root)): p.read_bytes()
        for p in sorted(root.rglob("*"))
        if p.is_file() and p.name not in RUN_RECORDS
    }


def _assert_same_tree(a: Path, b: Path, also: tuple[str, ...] = ()) -> None:
    """Same files, same bytes; config.yaml differs in ``out`` alone and holds no executor
    option; ``also`` names files compared apart (differing here)."""
    fa, fb = _files(a), _files(b)
    assert sorted(fa) == sorted(fb)
    assert [k for k in fa if fa[k] != fb[k]] == sorted(["config.yaml", *also])
    ca, cb = (yaml.safe_load(fa["config.yaml"]), yaml.safe_load(fb["config.yaml"]))
    assert ca.pop("out") != cb.pop("out") and ca == cb
    assert not {"executor", "ray_address", "ray_cpus", "ray_gpus"} & set(ca)


def _executor(out: Path) -> dict:
    return json.loads((out / "manifest.json").read_text())["executor"]


def _stop_after(monkeypatch, module, name: str, k: int) -> None:
    """Make the driver stop (as Ctrl-C would) when it is about to record chunk ``k + 1``
    through ``module.name``."""
    real, calls = getattr(module, name), []

    def stop(*args, **kwargs):
        calls.append(args)
        if len(calls) > k:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(module, name, stop)


def _assert_bad_options_named(command: list[str], args: list[str]) -> None:
    """``command args --executor ray --ray-address x:y`` fails naming the address; the
    command's help lists the executor options."""
    bad = [*command, *args, "--executor", "ray", "--ray-address", "x:y"]
    res = CliRunner().invoke(app, bad, terminal_width=200)
    assert res.exit_code == 2 and "bad Ray address 'x:y'" in res.output, res.output
    res = CliRunner().invoke(app, [*command, "--help"], terminal_width=200)
    assert all(f in res.output for f in ("--executor", "--ray-address", "--ray-cpus", "--ray-gpus"))


# ----------------------------------------------------------------------------- generate
@pytest.fixture(scope="module")
def generator(tmp_path_factory) -> Path:
    """A tiny conditional (SPADE) run trained for 2 steps on 6 blocky 32 px samples."""
    from groundsynth.generate.training import train_generator
    from tests.generate.datasets import blocky_masks, write_dataset
    from tests.generate.tiny import train_config

    root = tmp_path_factory.mktemp("gen")
    data = write_dataset(root / "data", blocky_masks(6, 32, seed=0))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        train_generator(train_config("conditional", data, root / "run"), progress=False)
    return root / "run"


def _gen_config(model: Path, out: Path, **kw) -> GenerateConfig:
    # 7 samples in chunks of 3 and batches of 2: batches go 2, 1 | 2, 1 | 1; augmented layouts
    # (flips, rotations, tiling) and the noise both depend on (seed, sample index) alone
    return GenerateConfig(
        model=str(model),
        out=str(out),
        n=7,
        chunk_size=3,
        batch_size=2,
        device="cpu",
        layouts=LayoutConfig(strategy="augmented"),
        seed=3,
        **kw,
    )


@pytest.fixture(scope="module")
def local_samples(generator, tmp_path_factory) -> Path:
    """A complete local generate run: the reference."""
    out = tmp_path_factory.mktemp("gen_local") / "out"
    generate_dataset(_gen_config(generator, out))
    return out


def test_generate_on_ray_matches_local_byte_for_byte(
    ray_cluster, generator, local_samples, tmp_path
) -> None:
    out = tmp_path / "ray"
    seen: list[tuple[int, int]] = []
    result = generate_dataset(
        _gen_config(generator, out, executor="ray", ray_cpus=1.0),
        progress=lambda done, total: seen.append((done, total)),
    )
    assert (result.written, result.resumed) == (7, 0)
    assert len(list((out / "synth" / "images").glob("*.png"))) == 7
    _assert_same_tree(local_samples, out)
    assert seen[0] == (0, 7) and seen[-1] == (7, 7) and len(seen) == 4  # start + per chunk
    executor = _executor(out)
    assert executor["name"] == "ray" and executor["tasks"] == 3
    # the generator is loaded once per worker process (at most), not once per chunk
    assert 1 <= executor["model_loads"] <= executor["worker_processes"] <= 2
    assert _executor(local_samples) == {"name": "local"}


@pytest.mark.parametrize(("first", "then"), [("local", "ray"), ("ray", "local")])
def test_generate_interrupted_resumes_on_the_other_executor(
    ray_cluster, generator, local_samples, tmp_path, monkeypatch, first, then
) -> None:
    out = tmp_path / "gen"
    with monkeypatch.context() as patch:
        _stop_after(patch, generate_writer, "write_json", 1)
        with pytest.raises(KeyboardInterrupt):
            generate_dataset(_gen_config(generator, out, executor=first))
    assert len(list((out / ".chunks").glob("*.json"))) == 1
    result = generate_dataset(_gen_config(generator, out, executor=then))
    assert (result.resumed, result.written) == (3, 4)  # one chunk kept, two redone
    _assert_same_tree(local_samples, out)
    assert _executor(out)["name"] == then


def test_generate_executor_options_are_checked(generator, tmp_path) -> None:
    with pytest.raises(InputError, match="valid executors: local, ray"):
        _gen_config(generator, tmp_path / "o", executor="dask")
    with pytest.raises(InputError, match="needs the ray executor"):
        _gen_config(generator, tmp_path / "o", ray_address="auto")
    with pytest.raises(InputError, match=r"GPUs per task >= 0, got 1.0 and -1"):
        _gen_config(generator, tmp_path / "o", executor="ray", ray_gpus=-1)
    with pytest.raises(InputError, match="--device cuda on Ray needs a GPU per task"):
        replace(_gen_config(generator, tmp_path / "o", executor="ray"), device="cuda")
    assert not (tmp_path / "o").exists()
    args = ["--model", str(generator), "--n", "2", "--out", str(tmp_path / "o")]
    _assert_bad_options_named(["generate"], args)
    assert not (tmp_path / "o").exists()


# ----------------------------------------------------------------------------- evaluate synthetic
@pytest.fixture(scope="module")
def eval_inputs(tmp_path_factory) -> tuple[Path, Path, Path]:
    """(real, synthetic, segmenter checkpoint): 16 + 16 blocky 32 px samples, a tiny U-Net."""
    from groundsynth.benchmark.model import build_model, save_segmenter
    from tests.benchmark.conftest import TINY
    from tests.evaluate.test_synthetic import make_real, make_synthetic

    base = tmp_path_factory.mktemp("eval_in")
    torch.manual_seed(0)
    checkpoint = save_segmenter(base / "seg.pt", build_model("unet", **TINY), {"name": "tiny"})
    return make_real(base / "real"), make_synthetic(base / "synth"), checkpoint


def _evaluate(inputs: tuple[Path, Path, Path], out: Path, **kw) -> dict:
    """16 synthetic samples in chunks of 3 and batches of 2; 6 real ones through the model."""
    torch.set_num_threads(1)
    real, synth, checkpoint = inputs
    return evaluate_synthetic(
        real,
        synth,
        out,
        model=checkpoint,
        device="cpu",
        max_real=6,
        batch_size=2,
        chunk_size=3,
        tsne=False,
        umap=False,
        captions=False,
        **kw,
    )


def _assert_same_evaluation(a: Path, b: Path) -> None:
    """Same files and bytes; summary.json differs in its timings alone; no records left."""
    _assert_same_tree(a, b, also=("summary.json",))
    sa, sb = (json.loads((p / "summary.json").read_text()) for p in (a, b))
    for s in (sa, sb):
        assert s.pop("throughput")["images_through_models"] == 16 + 6
    assert sa == sb
    assert not (b / RECORDS).exists()


@pytest.fixture(scope="module")
def local_evaluation(eval_inputs, tmp_path_factory) -> Path:
    """A complete local evaluation: the reference."""
    out = tmp_path_factory.mktemp("eval_local") / "out"
    _evaluate(eval_inputs, out)
    return out


def test_evaluate_synthetic_on_ray_matches_local(
    ray_cluster, eval_inputs, local_evaluation, tmp_path
) -> None:
    out = tmp_path / "ray"
    stages: set[str] = set()
    _evaluate(eval_inputs, out, executor="ray", progress=lambda s, d, t: stages.add(s))
    _assert_same_evaluation(local_evaluation, out)
    assert stages == {"synthetic", "real"}
    executor = _executor(out)
    assert executor["name"] == "ray" and executor["tasks"] == _chunks(out) >= 8
    assert 1 <= executor["model_loads"] <= executor["worker_processes"] <= 2
    assert _executor(local_evaluation) == {"name": "local"}


@pytest.mark.parametrize(("first", "then"), [("local", "ray"), ("ray", "local")])
def test_evaluate_synthetic_interrupted_resumes_on_the_other_executor(
    ray_cluster, eval_inputs, local_evaluation, tmp_path, monkeypatch, first, then
) -> None:
    out = tmp_path / "eval"
    with monkeypatch.context() as patch:
        _stop_after(patch, image_chunks.ChunkRecords, "write", 2)
        with pytest.raises(KeyboardInterrupt):
            _evaluate(eval_inputs, out, executor=first)
    assert len(list((out / RECORDS / "synthetic").rglob("*.npz"))) == 2
    _evaluate(eval_inputs, out, executor=then)
    _assert_same_evaluation(local_evaluation, out)
    log = (out / "evaluate_synthetic.log").read_text()
    assert "synthetic: 2 of 6 image chunk(s) recorded by an earlier run" in log
    if then == "ray":  # the two recorded chunks are not run again
        assert _executor(out)["tasks"] == _chunks(local_evaluation) - 2


def _chunks(evaluation: Path) -> int:
    """Image chunks of an evaluation above: 6 synthetic, then the real ids' (3 a chunk)."""
    import pandas as pd

    real = pd.read_parquet(evaluation / "per_sample_real.parquet")["split"].value_counts()
    return 6 + sum(-(-int(n) // 3) for n in real)


def test_evaluate_synthetic_executor_options_are_checked(eval_inputs, tmp_path) -> None:
    real, synth, checkpoint = eval_inputs
    with pytest.raises(InputError, match="valid executors: local, ray"):
        evaluate_synthetic(real, synth, tmp_path / "o", executor="dask")
    with pytest.raises(InputError, match="needs the ray executor"):
        evaluate_synthetic(real, synth, tmp_path / "o", ray_address="auto")
    from groundsynth.benchmark.model import load_segmenter

    model, _ = load_segmenter(checkpoint)
    with pytest.raises(InputError, match="give it as a checkpoint path"):
        evaluate_synthetic(real, synth, tmp_path / "o", model=model, executor="ray")
    assert not (tmp_path / "o").exists()
    args = ["--real", str(real), "--synthetic", str(synth), "--out", str(tmp_path / "o")]
    _assert_bad_options_named(["evaluate", "synthetic"], args)
    assert not (tmp_path / "o").exists()


# ----------------------------------------------------------------------------- CLIPScore
@pytest.fixture(scope="module")
def captioned(tmp_path_factory) -> tuple[Path, ClipScoreConfig]:
    """A captioned dataset (6 images, 2 template captions each; one image missing, one
    unreadable) and a tiny open_clip, scored in chunks of 5 captions and batches of 3."""
    from groundsynth.caption.run import CaptionRunConfig, caption_dataset
    from tests.caption.dataset import make_dataset
    from tests.evaluate.tiny_clip import tiny_open_clip

    base = tmp_path_factory.mktemp("clip")
    root = make_dataset(base / "ds", {"train": 4, "val": 2})
    caption_dataset(CaptionRunConfig(dataset=str(root), n=2))
    (root / "val" / "images" / "N40E033_001_003.png").unlink()
    (root / "train" / "images" / "N40E033_002_005.png").write_bytes(b"not a png")
    (base / "oc").mkdir()
    config, ckpt = tiny_open_clip(base / "oc")
    clip = ClipScoreConfig(
        model=str(config), pretrained=str(ckpt), batch_size=3, chunk_size=5, device="cpu"
    )
    return root, clip


@pytest.fixture(scope="module")
def local_clip(captioned, tmp_path_factory) -> Path:
    root, clip = captioned
    out = tmp_path_factory.mktemp("clip_local") / "out"
    summary = evaluate_captions(root, out, clip=clip)
    cs = summary["clipscore"]
    assert cs["pooled"]["captions_scored"] == 8 and cs["pooled"]["missing_image"] == 4
    assert cs["unreadable_images"] == 2  # in two batches: its captions straddle two chunks
    return out


def test_clipscore_on_ray_matches_local(
    ray_cluster, captioned, local_clip, tmp_path, monkeypatch, caplog
) -> None:
    root, clip = captioned
    # relative paths to the dataset and the CLIP files: workers run in another folder
    monkeypatch.chdir(root.parent.parent)
    relative = replace(
        clip,
        model=str(Path(clip.model).relative_to(Path.cwd())),
        pretrained=str(Path(clip.pretrained).relative_to(Path.cwd())),
        executor="ray",
    )
    out = tmp_path / "ray"
    with caplog.at_level(logging.INFO, logger="groundsynth.evaluate.clipscore_chunks"):
        evaluate_captions(root.relative_to(Path.cwd()), out, clip=relative)
    assert any(
        "3 chunk(s) scored" in r.getMessage() and '"name": "ray"' in r.getMessage()
        for r in caplog.records
    )
    here, there = _files(local_clip), _files(out)
    assert sorted(there) == ["caption_metrics.json", "caption_scores.parquet"]
    assert there["caption_scores.parquet"] == here["caption_scores.parquet"]
    local, remote = (json.loads(f["caption_metrics.json"]) for f in (here, there))
    for summary in (local, remote):  # the paths as given
        del summary["source"], summary["clipscore"]["model"], summary["clipscore"]["pretrained"]
    assert remote == local and remote["clipscore"]["pooled"]["captions_scored"] == 8


@pytest.mark.parametrize(("first", "then"), [("local", "ray"), ("ray", "local")])
def test_clipscore_interrupted_resumes_on_the_other_executor(
    ray_cluster, captioned, local_clip, tmp_path, monkeypatch, caplog, first, then
) -> None:
    root, clip = captioned
    out = tmp_path / "clip"
    with monkeypatch.context() as patch:
        _stop_after(patch, image_chunks.ChunkRecords, "write", 1)
        with pytest.raises(KeyboardInterrupt):
            evaluate_captions(root, out, clip=replace(clip, executor=first))
    assert len(list((out / CLIP_RECORDS).rglob("*.npz"))) == 1
    with caplog.at_level(logging.INFO, logger="groundsynth.evaluate.clipscore_chunks"):
        evaluate_captions(root, out, clip=replace(clip, executor=then))
    assert any("2 chunk(s) scored" in r.getMessage() for r in caplog.records)  # 1 kept
    assert _files(out) == _files(local_clip) and not (out / CLIP_RECORDS).exists()


def test_clipscore_executor_options_are_checked(captioned, tmp_path) -> None:
    root, clip = captioned
    with pytest.raises(InputError, match="valid executors: local, ray"):
        replace(clip, executor="dask")
    with pytest.raises(InputError, match="needs the ray executor"):
        replace(clip, ray_address="auto")
    with pytest.raises(InputError, match="CPUs per task must be > 0"):
        replace(clip, executor="ray", ray_cpus=0)
    res = CliRunner().invoke(
        app, ["evaluate", "captions", str(root), "--out", str(tmp_path / "o"), "--executor", "ray"]
    )
    assert res.exit_code == 2 and "give --clip-model too" in res.output
    args = [str(root), "--clip-model", clip.model, "--out", str(tmp_path / "o")]
    _assert_bad_options_named(["evaluate", "captions"], args)
    assert not (tmp_path / "o").exists()
