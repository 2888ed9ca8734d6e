"""Pseudo-labelling: a valid dataset with confidences, resume, image folders, the CLI."""

from __future__ import annotations

import os

import numpy as np
import pandas as pd
import pytest
from PIL import Image
from typer.testing import CliRunner

from groundsynth.classes import CLASS_NAMES
from groundsynth.cli import app
from groundsynth.data.masks import read_mask
from groundsynth.data.validate import validate_dataset
from groundsynth.errors import OutputConflictError
from groundsynth.generate.pseudo_label import PseudoLabelConfig, pseudo_label

runner = CliRunner()


def test_pseudo_label_a_dataset_then_resume(tiny_dataset, tiny_checkpoint, tmp_path):
    out = tmp_path / "pl"
    cfg = PseudoLabelConfig(
        dataset=str(tiny_dataset), model=str(tiny_checkpoint), out=str(out), splits=("val", "test"),
        batch_size=3, chunk_size=4, device="cpu",
    )  # fmt: skip
    seen = []
    result = pseudo_label(cfg, progress=lambda done, total: seen.append((done, total)))
    assert result.counts == {"val": 5, "test": 5} and result.skipped == {}
    assert seen == [(0, 10), (3, 10), (6, 10), (9, 10), (10, 10)]  # before, then per batch
    assert validate_dataset(out).ok, validate_dataset(out).summary()

    meta = pd.read_parquet(out / "metadata.parquet")
    assert len(meta) == 10
    assert meta["confidence"].between(0, 1).all() and meta["confidence"].gt(0).all()
    assert (meta["origin"] == "pseudo-label:tiny-unet").all()
    assert (meta["image_origin"] == "real").all()  # carried over from the input's metadata
    assert meta["crs"].notna().all()  # geolocation carried over too
    fracs = meta[[f"frac_{n}" for n in CLASS_NAMES]].to_numpy()
    assert np.allclose(fracs.sum(axis=1), 1.0)
    first = meta.iloc[0]
    mask = read_mask(out / first["split"] / "masks" / f"{first['id']}.png")
    assert np.allclose(np.bincount(mask.ravel(), minlength=7) / mask.size, fracs[0])
    src = tiny_dataset / first["split"] / "images" / f"{first['id']}.png"
    assert (out / first["split"] / "images" / f"{first['id']}.png").read_bytes() == src.read_bytes()
    pct = pd.read_csv(out / "class_percentages" / "test.csv")
    assert list(pct.columns) == ["filename", "split", *CLASS_NAMES] and len(pct) == 5

    # rerun: every chunk is recorded, nothing is predicted again
    again = pseudo_label(cfg)
    assert again.chunks_resumed == again.chunks_total == 4  # val 2 chunks + test 2 chunks
    assert pd.read_parquet(out / "metadata.parquet").equals(meta)
    # an interrupted run: a lost chunk record is redone, alone
    (out / ".pseudo-label" / "test" / "000001.json").unlink()
    assert pseudo_label(cfg).chunks_resumed == 3
    # another model or input in the same --out is refused
    with pytest.raises(OutputConflictError, match="differ: .*splits"):
        pseudo_label(
            PseudoLabelConfig(dataset=str(tiny_dataset), model=str(tiny_checkpoint), out=str(out))
        )


def test_pseudo_label_a_folder_of_images_with_a_bad_file(tiny_checkpoint, tmp_path):
    folder = tmp_path / "samples"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for i in range(3):
        Image.fromarray(rng.integers(0, 255, (40, 48, 3), dtype=np.uint8)).save(
            folder / f"{i:04d}.jpg"
        )
    Image.fromarray(rng.integers(0, 255, (64, 64, 4), dtype=np.uint8)).save(folder / "rgba.png")
    (folder / "broken.png").write_bytes(b"not a png")
    out = tmp_path / "labelled"
    res = runner.invoke(
        app,
        ["pseudo-label", str(folder), "--model", str(tiny_checkpoint), "--out", str(out),
         "--device", "cpu", "--batch-size", "2", "--no-progress"],
        terminal_width=200,
    )  # fmt: skip
    assert res.exit_code == 0, res.output
    assert "skipped" in res.output and "unreadable" in res.output
    report = validate_dataset(out)
    assert report.ok, report.summary()
    assert report.n_samples == {"synth": 4}  # 3 JPEGs + 1 RGBA PNG re-encoded as RGB
    meta = pd.read_parquet(out / "metadata.parquet")
    assert meta["confidence"].between(0, 1).all() and meta["image_origin"].isna().all()
    assert Image.open(out / "synth" / "images" / "0001.png").size == (48, 40)


def test_default_out_is_beside_the_input(tiny_checkpoint, tmp_path):
    folder = tmp_path / "gen"
    folder.mkdir()
    Image.fromarray(np.zeros((32, 32, 3), dtype=np.uint8)).save(folder / "a.png")
    result = pseudo_label(
        PseudoLabelConfig(dataset=str(folder), model=str(tiny_checkpoint), device="cpu")
    )
    assert result.out == tmp_path / "gen.pseudo-tiny-unet"
    with pytest.raises(OutputConflictError, match="must differ from the input"):
        pseudo_label(
            PseudoLabelConfig(dataset=str(folder), model=str(tiny_checkpoint), out=str(folder))
        )


def _fake_segmenter(monkeypatch, name: str) -> dict:
    """Replace the checkpoint loader by the known-logits model named ``name``; returns a dict
    that records the ``map_location`` it was given and the device ``_predict`` was given."""
    import torch

    import groundsynth.benchmark.model as model_module
    import groundsynth.generate.pseudo_label as pl_module
    from groundsynth.classes import NUM_CLASSES

    class RedBands(torch.nn.Module):
        spec = type("Spec", (), {"classes": NUM_CLASSES})()

        def forward(self, x):
            c = torch.arange(NUM_CLASSES, dtype=x.dtype).view(1, -1, 1, 1)
            return -((6 * x[:, :1] - c) ** 2)

    seen: dict = {}

    def load(path, map_location):
        seen["map_location"] = map_location
        return RedBands(), {"name": name}

    predict = pl_module._predict

    def recording_predict(model, batch, device):
        seen["predict_device"] = device
        return predict(model, batch, device)

    monkeypatch.setattr(model_module, "load_segmenter", load)
    monkeypatch.setattr(pl_module, "_predict", recording_predict)
    return seen


def _expected(image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The known-logits model's mask and per-pixel max softmax for ``image``, by numpy."""
    from groundsynth.classes import NUM_CLASSES

    r = image[..., 0].astype(np.float64) / 255.0
    logits = -((6 * r[None] - np.arange(NUM_CLASSES)[:, None, None]) ** 2)
    prob = np.exp(logits - logits.max(axis=0))
    prob /= prob.sum(axis=0)
    return prob.argmax(axis=0), prob.max(axis=0)


def test_written_masks_and_confidences_are_the_models_predictions(
    tiny_checkpoint, tmp_path, monkeypatch
):
    """A model with known logits (a fixed function of the red band): the written masks are
    its per-pixel argmax and ``confidence`` is the mean over pixels of its max softmax."""

    from groundsynth.classes import NUM_CLASSES

    _fake_segmenter(monkeypatch, "red")  # logit_c = -(6 r - c)^2, r the 0..1 red band
    folder = tmp_path / "gen"
    folder.mkdir()
    rng = np.random.default_rng(3)
    images = {f"{i:04d}": rng.integers(0, 256, (24, 32, 3), dtype=np.uint8) for i in range(3)}
    for name, image in images.items():
        Image.fromarray(image).save(folder / f"{name}.png")
    out = tmp_path / "pl"
    result = pseudo_label(
        PseudoLabelConfig(
            dataset=str(folder), model=str(tiny_checkpoint), out=str(out), device="cpu",
            batch_size=2,
        )
    )  # fmt: skip
    assert result.counts == {"synth": 3}
    meta = pd.read_parquet(out / "metadata.parquet").set_index("id")
    for name, image in images.items():
        expected, top = _expected(image)
        assert len(np.unique(expected)) == NUM_CLASSES  # every class appears: a real check
        np.testing.assert_array_equal(read_mask(out / "synth" / "masks" / f"{name}.png"), expected)
        assert meta.loc[name, "confidence"] == pytest.approx(top.mean(), rel=1e-5)


def test_summaries_are_the_predictions_of_mixed_sizes_and_a_bad_file(
    tiny_checkpoint, tmp_path, monkeypatch
):
    """Images of two sizes in one batch and an unreadable file, with a model of known output:
    confidence summaries, class percentages, source and skip records, from numpy."""
    import json

    from groundsynth.classes import NUM_CLASSES
    from groundsynth.data.composition import integer_percentages

    _fake_segmenter(monkeypatch, "red")
    folder = tmp_path / "gen"
    folder.mkdir()
    rng = np.random.default_rng(5)
    shapes = [(24, 32, 3), (16, 20, 3), (24, 32, 3), (16, 20, 3)]
    images = {f"{i:04d}": rng.integers(0, 256, s, dtype=np.uint8) for i, s in enumerate(shapes)}
    for name, image in images.items():
        Image.fromarray(image).save(folder / f"{name}.png")
    # first in its chunk (0001b, 0002): the image after it is still labelled
    (folder / "0001b.png").write_bytes(b"not a png")
    out = tmp_path / "pl"
    result = pseudo_label(
        PseudoLabelConfig(
            dataset=str(folder), model=str(tiny_checkpoint), out=str(out), device="cpu",
            batch_size=5, chunk_size=2,
        )
    )  # fmt: skip
    confs, rows = {}, {}
    for name, image in images.items():
        mask, top = _expected(image)
        confs[name] = top.mean()
        np.testing.assert_array_equal(read_mask(out / "synth" / "masks" / f"{name}.png"), mask)
        rows[name] = np.bincount(mask.ravel(), minlength=NUM_CLASSES) / mask.size
    assert result.counts == {"synth": 4} and result.skipped == {"unreadable": 1}
    assert (result.chunks_total, result.chunks_resumed) == (3, 0)
    c = np.array(list(confs.values()))
    summary = result.confidence["synth"]
    assert summary == pytest.approx({"mean": c.mean(), "min": c.min(), "max": c.max()}, rel=1e-5)
    meta = pd.read_parquet(out / "metadata.parquet").set_index("id")
    assert list(meta.index) == list(images) and (meta["source"] == "gen").all()
    pct = pd.read_csv(out / "class_percentages" / "synth.csv")
    assert list(pct["filename"]) == [f"{n}.png" for n in images]
    expected = integer_percentages(np.array(list(rows.values())))
    np.testing.assert_array_equal(pct[list(CLASS_NAMES)].to_numpy(), expected)
    records = [
        json.loads(p.read_text()) for p in sorted((out / ".pseudo-label" / "synth").iterdir())
    ]
    assert [[r["id"] for r in rec["rows"]] for rec in records] == [
        ["0000", "0001"], ["0002"], ["0003"]
    ]  # fmt: skip
    ((skip,),) = [rec["skipped"] for rec in records if rec["skipped"]]
    assert skip["id"] == "0001b" and skip["reason"] == "unreadable"
    assert skip["path"] == str(folder / "0001b.png") and "0001b.png" in skip["message"]


@pytest.mark.parametrize("images", ["link", "copy"])
def test_rgb_png_inputs_are_linked_or_copied(tiny_checkpoint, tmp_path, images):
    folder = tmp_path / "gen"
    folder.mkdir()
    rng = np.random.default_rng(1)
    Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(folder / "a.png")
    out = tmp_path / "pl"
    pseudo_label(
        PseudoLabelConfig(
            dataset=str(folder), model=str(tiny_checkpoint), out=str(out), device="cpu",
            images=images,
        )
    )  # fmt: skip
    src, dst = folder / "a.png", out / "synth" / "images" / "a.png"
    assert dst.read_bytes() == src.read_bytes()
    assert os.path.samefile(src, dst) == (images == "link")
    assert sorted(p.name for p in dst.parent.iterdir()) == ["a.png"]
    # a run stopped after placing a chunk's files but before recording it: redone cleanly,
    # without a temporary left beside the image (renaming a link onto itself does nothing)
    (out / ".pseudo-label" / "synth" / "000000.json").unlink()
    pseudo_label(
        PseudoLabelConfig(
            dataset=str(folder), model=str(tiny_checkpoint), out=str(out), device="cpu",
            images=images,
        )
    )  # fmt: skip
    assert sorted(p.name for p in dst.parent.iterdir()) == ["a.png"]
    assert os.path.samefile(src, dst) == (images == "link")


def _png_folder(folder, names, broken=()):
    folder.mkdir()
    rng = np.random.default_rng(7)
    for name in names:
        image = rng.integers(0, 256, (16, 24, 3), dtype=np.uint8)
        Image.fromarray(image).save(folder / f"{name}.png")
    for name in broken:
        (folder / f"{name}.png").write_bytes(b"not a png")


def test_manifest_and_config_record_the_run(tiny_checkpoint, tmp_path, monkeypatch):
    """The run's provenance, value by value: config.yaml holds the resolved absolute paths and
    the model's digest; manifest.json its counts, summaries, origin, input kind, chunks, files,
    inputs and stage; the result carries that manifest and the measured seconds."""
    import itertools
    import json
    import types

    import yaml

    import groundsynth.generate.pseudo_label as pl_module
    from groundsynth.benchmark.model import resolve_device
    from groundsynth.runs import file_digest

    seen = _fake_segmenter(monkeypatch, "red/v1")  # a separator in the name becomes "_"
    clock = itertools.chain([100.0], itertools.repeat(101.23456))  # start, then end
    monkeypatch.setattr(pl_module, "time", types.SimpleNamespace(time=lambda: next(clock)))
    _png_folder(tmp_path / "gen", ["a", "b", "c"], broken=["bad"])
    monkeypatch.chdir(tmp_path)
    model_rel = os.path.relpath(tiny_checkpoint, tmp_path)
    result = pseudo_label(
        PseudoLabelConfig(
            dataset="sub/../gen", model=model_rel, out="pl", device="cpu", batch_size=2,
            chunk_size=3,
        )
    )  # fmt: skip
    root, out, model = tmp_path / "gen", tmp_path / "pl", tiny_checkpoint.resolve()
    assert result.out == out and result.seconds == 1.235  # round(101.23456 - 100.0, 3)
    assert seen == {"map_location": resolve_device("cpu"), "predict_device": resolve_device("cpu")}

    config = yaml.safe_load((out / "config.yaml").read_text(encoding="utf-8"))
    assert config == {
        "dataset": str(root), "model": str(model), "out": str(out), "splits": None,
        "folder_split": "synth", "batch_size": 2, "workers": 0, "device": "cpu",
        "chunk_size": 3, "images": "link", "model_sha256": file_digest(model),
    }  # fmt: skip

    manifest = json.loads((out / "manifest.json").read_text(encoding="utf-8"))
    assert result.manifest == manifest
    assert manifest["stage"] == "pseudo-label" and (out / "pseudo-label.log").is_file()
    assert manifest["inputs"] == [str(root), str(model)]
    assert manifest["chunks"] == {"total": 2, "resumed": 0}  # a, b, bad | c
    assert manifest["executor"] == {"name": "local"}  # labelled here, not on Ray
    outputs = manifest["outputs"]
    files = outputs.pop("files")
    meta = pd.read_parquet(out / "metadata.parquet")
    c = meta["confidence"]
    assert outputs == {
        "samples": {"synth": 3},
        "skipped": {"unreadable": 1},
        "confidence": {"synth": pytest.approx({"mean": c.mean(), "min": c.min(), "max": c.max()})},
        "origin": "pseudo-label:red_v1",
        "input_kind": "folder",
    }
    assert outputs["confidence"] == result.confidence
    assert (meta["origin"] == "pseudo-label:red_v1").all()
    assert files == {
        rel: {"bytes": (out / rel).stat().st_size, "sha256": file_digest(out / rel)}
        for rel in ("metadata.parquet", os.path.join("class_percentages", "synth.csv"))
    }
    # a non-empty --out without a run is refused, naming the kind of run it lacks
    other = tmp_path / "other"
    other.mkdir()
    (other / "x.txt").write_text("x")
    with pytest.raises(OutputConflictError, match="holds no pseudo-labelling"):
        pseudo_label(
            PseudoLabelConfig(dataset=str(root), model=model_rel, out=str(other), device="cpu")
        )


def test_config_checks_each_option_at_its_boundary(tmp_path):
    from groundsynth.errors import InputError

    ok = PseudoLabelConfig(dataset="d", model="m", batch_size=1, chunk_size=1, workers=0)
    assert (ok.batch_size, ok.chunk_size, ok.workers) == (1, 1, 0)
    message = "batch size and chunk size must be >= 1 and workers >= 0, got"
    for bad, got in [
        ({"batch_size": 0}, "0, 256, 0"),
        ({"chunk_size": 0}, "16, 0, 0"),
        ({"workers": -1}, "16, 256, -1"),
    ]:
        with pytest.raises(InputError, match=f"^{message} {got}$"):
            PseudoLabelConfig(dataset="d", model="m", **bad)
    with pytest.raises(InputError, match="images must be 'link' or 'copy', got 'move'"):
        PseudoLabelConfig(dataset="d", model="m", images="move")
    with pytest.raises(InputError, match=r"a Ray address \(.auto.\) needs the ray executor"):
        PseudoLabelConfig(dataset="d", model="m", ray_address="auto")
    for split in ("a/b", ""):
        with pytest.raises(InputError, match=f"bad split name '{split}'"):
            PseudoLabelConfig(dataset="d", model="m", folder_split=split)
    assert PseudoLabelConfig(dataset="d", model="m", folder_split="gen-1").folder_split == "gen-1"


def test_folder_input_lists_only_image_files(tiny_checkpoint, tmp_path, monkeypatch):
    """A stray text file and a folder named like an image are not inputs (nothing skipped)."""
    _fake_segmenter(monkeypatch, "red")
    folder = tmp_path / "gen"
    _png_folder(folder, ["a", "b"])
    (folder / "notes.txt").write_text("not an image")
    (folder / "c.png").mkdir()
    out = tmp_path / "pl"
    result = pseudo_label(
        PseudoLabelConfig(
            dataset=str(folder), model=str(tiny_checkpoint), out=str(out), device="cpu"
        )
    )
    assert result.counts == {"synth": 2} and result.skipped == {}
    assert result.manifest["outputs"]["input_kind"] == "folder"
    assert sorted(p.name for p in (out / "synth" / "masks").iterdir()) == ["a.png", "b.png"]


def test_unknown_split_is_refused_listing_the_available_ones(
    tiny_dataset, tiny_checkpoint, tmp_path
):
    from groundsynth.errors import InputError

    out = tmp_path / "pl"
    cfg = PseudoLabelConfig(
        dataset=str(tiny_dataset), model=str(tiny_checkpoint), out=str(out), splits=("val", "nope"),
        device="cpu",
    )  # fmt: skip
    with pytest.raises(
        InputError, match=r"no images in split\(s\) \['nope'\]; splits with images: \['train', "
    ) as err:
        pseudo_label(cfg)
    assert "'val'" in str(err.value) and "'test'" in str(err.value)
    assert not out.exists()


def test_a_chunk_of_only_unreadable_images_does_not_end_the_tables(
    tiny_checkpoint, tmp_path, monkeypatch
):
    """Chunks of one image: the first holds only a skipped file, the later ones are kept."""
    _fake_segmenter(monkeypatch, "red")
    folder = tmp_path / "gen"
    _png_folder(folder, ["b", "c"], broken=["a"])
    out = tmp_path / "pl"
    result = pseudo_label(
        PseudoLabelConfig(
            dataset=str(folder), model=str(tiny_checkpoint), out=str(out), device="cpu",
            chunk_size=1,
        )
    )  # fmt: skip
    assert result.counts == {"synth": 2} and result.skipped == {"unreadable": 1}
    assert result.chunks_total == 3 and set(result.confidence) == {"synth"}
    assert list(pd.read_parquet(out / "metadata.parquet")["id"]) == ["b", "c"]
    pct = pd.read_csv(out / "class_percentages" / "synth.csv")
    assert list(pct["filename"]) == ["b.png", "c.png"]
