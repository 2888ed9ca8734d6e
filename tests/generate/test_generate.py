"""generate: datasets in the data contract, validate passes, resumable, deterministic by seed."""

from __future__ import annotations

import hashlib
from dataclasses import replace

import numpy as np
import pytest
from PIL import Image

from groundsynth.data.composition import class_fractions
from groundsynth.data.reader import open_dataset
from groundsynth.data.validate import validate_dataset
from groundsynth.errors import InputError, OutputConflictError
from groundsynth.generate.layouts import LayoutConfig
from groundsynth.generate.sampling import GenerateConfig, generate_dataset, load_generator
from groundsynth.generate.writer import MASK_FROM_MAP, SYNTH_COLUMNS


def _digests(folder):
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir())}


def _images(folder):
    return [np.asarray(Image.open(p)).astype(int) for p in sorted(folder.iterdir())]


@pytest.mark.parametrize(
    "layouts",
    [
        None,
        LayoutConfig(strategy="augmented"),
        LayoutConfig(strategy="target", target="Shrub>=0.5"),
    ],
    ids=["train-masks", "augmented", "target"],
)
def test_generate_then_validate_passes(conditional_run, tmp_path, layouts):
    out = tmp_path / "synth"
    res = generate_dataset(
        GenerateConfig(model=str(conditional_run), out=str(out), n=5, batch_size=2, layouts=layouts)
    )
    assert res.written == 5 and res.origin == "conditional:cond@step2"
    report = validate_dataset(out)
    assert report.ok, report.summary()
    reader = open_dataset(out)
    assert reader.splits() == ["synth"] and reader.ids("synth") == [f"{i:07d}" for i in range(5)]
    meta = reader.metadata("synth")
    assert set(SYNTH_COLUMNS) <= set(meta.columns)
    assert (meta["origin"] == res.origin).all() and (meta["mask_origin"] == MASK_FROM_MAP).all()
    strategy = layouts.strategy if layouts else "train-masks"
    assert (meta["layout"] == strategy).all()
    assert meta["layout_source"].str.startswith("train/").all()
    assert meta["sample_seed"].nunique() == 5
    if strategy == "target":
        assert meta["layout_satisfied"].all()
        assert (meta["frac_Shrub"] >= 0.5).all()
    for sid in reader.ids("synth"):
        image, mask = reader.read_image("synth", sid), reader.read_mask("synth", sid)
        assert image.shape == (32, 32, 3) and mask.shape == (32, 32)
    for name in ("config.yaml", "manifest.json", "generate.log", "class_percentages/synth.csv"):
        assert (out / name).is_file()


def test_train_masks_layouts_are_the_training_masks(conditional_run, tiny_dataset, tmp_path):
    out = tmp_path / "synth"
    generate_dataset(GenerateConfig(model=str(conditional_run), out=str(out), n=3))
    real, synth = open_dataset(tiny_dataset), open_dataset(out)
    for i, sid in enumerate(synth.ids("synth")):
        assert np.array_equal(
            synth.read_mask("synth", sid), real.read_mask("train", real.ids("train")[i])
        )


def test_resume_rewrites_nothing_and_batch_size_changes_nothing(conditional_run, tmp_path):
    def config(out, **kw):
        kw.setdefault("batch_size", 3)
        return GenerateConfig(
            model=str(conditional_run),
            out=str(out),
            n=7,
            chunk_size=3,
            layouts=LayoutConfig(strategy="augmented"),
            **kw,
        )

    a = tmp_path / "a"
    generate_dataset(config(a))
    images = _digests(a / "synth" / "images")
    meta = (a / "metadata.parquet").read_bytes()
    # interrupt: lose the second chunk's record and one of its images, then resume
    (a / ".chunks" / "chunk_000001.json").unlink()
    (a / "synth" / "images" / "0000004.png").unlink()
    # and what a writer killed mid-file leaves (a cancelled Ray task, kill -9)
    for kind in ("images", "masks"):
        (a / "synth" / kind / ".0000005.png.0123abcd.tmp").write_bytes(b"half")
    res = generate_dataset(config(a))
    assert (res.resumed, res.written) == (4, 3)
    for kind in ("images", "masks"):
        assert not [p.name for p in (a / "synth" / kind).iterdir() if p.name.startswith(".")]
    assert _digests(a / "synth" / "images") == images
    assert (a / "metadata.parquet").read_bytes() == meta
    # another batch size: the same samples, up to float rounding (at most one grey level)
    b = tmp_path / "b"
    generate_dataset(config(b, batch_size=2))
    diffs = [
        np.abs(x - y).max()
        for x, y in zip(_images(a / "synth" / "images"), _images(b / "synth" / "images"))
    ]
    assert max(diffs) <= 1
    assert _digests(a / "synth" / "masks") == _digests(b / "synth" / "masks")
    # more samples later: the first ones stay as they are
    res = generate_dataset(replace(config(a), n=9))
    assert res.written == 3  # the last (partial) chunk is redone, then one more
    assert {k: v for k, v in _digests(a / "synth" / "images").items() if k in images} == images
    with pytest.raises(OutputConflictError, match="--n 9"):
        generate_dataset(replace(config(a), n=4))
    with pytest.raises(OutputConflictError, match="seed"):
        generate_dataset(replace(config(a), n=9, seed=1))


def test_seed_changes_noise_and_layouts(conditional_run, tmp_path):
    gen = load_generator(conditional_run)
    masks = np.zeros((2, 32, 32), dtype=np.uint8)
    a = gen.images([1, 2], masks)
    assert np.array_equal(a, gen.images([1, 2], masks))
    assert not np.array_equal(a[0], a[1])  # one map, two seeds: two images


def test_diffusion_generates_images_without_masks(diffusion_run, tmp_path):
    out = tmp_path / "synth"
    for sampler in ("ddim", "dpm-solver"):
        res = generate_dataset(
            GenerateConfig(
                model=str(diffusion_run), out=str(out / sampler), n=3, batch_size=2, sampler=sampler
            )
        )
        assert res.origin == "diffusion:diff@step2" and res.tables["with_mask"] == 0
        meta = open_dataset(out / sampler).metadata("synth")
        assert meta["mask_origin"].isna().all() and meta["frac_Tree"].isna().all()
        assert not (out / sampler / "synth" / "masks").exists()
        assert not (out / sampler / "class_percentages").exists()
        images = _images(out / sampler / "synth" / "images")
        assert len(images) == 3 and images[0].shape == (32, 32, 3)
        report = validate_dataset(out / sampler)
        assert set(report.counts) == {"unpaired_image"}  # until pseudo-labelled
    with pytest.raises(InputError, match="unconditional"):
        generate_dataset(
            GenerateConfig(
                model=str(diffusion_run), out=str(out / "x"), n=1, layouts=LayoutConfig()
            )
        )


def test_composition_of_generated_masks_matches_metadata(conditional_run, tmp_path):
    out = tmp_path / "synth"
    generate_dataset(
        GenerateConfig(
            model=str(conditional_run),
            out=str(out),
            n=4,
            layouts=LayoutConfig(strategy="target", distribution="Barren=0.5"),
        )
    )
    reader = open_dataset(out)
    meta = reader.metadata("synth").set_index("id")
    for sid in reader.ids("synth"):
        f = class_fractions(reader.read_mask("synth", sid))
        assert meta.loc[sid, "frac_Barren"] == pytest.approx(f[5])


def test_bad_model_paths_are_named(tmp_path):
    with pytest.raises(InputError, match="no such run directory"):
        load_generator(tmp_path / "missing")
    (tmp_path / "run").mkdir()
    with pytest.raises(InputError, match="no checkpoints"):
        load_generator(tmp_path / "run")
    (tmp_path / "bad.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(InputError, match="cannot read checkpoint"):
        load_generator(tmp_path / "bad.pt")
