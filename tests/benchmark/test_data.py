"""Training regimes: parsing, amounts (ratio / budget), seeded subsets, the data module."""

from __future__ import annotations

import pytest

from groundsynth.benchmark.data import (
    DataPart,
    SegmentationDataModule,
    parse_eval_sets,
    parse_regime,
    resolve_regime,
)
from groundsynth.data.reader import open_dataset
from groundsynth.errors import InputError


@pytest.mark.parametrize(
    ("text", "parts", "slug"),
    [
        ("real", [DataPart("real")], "real"),
        ("synthetic", [DataPart("synthetic")], "synthetic"),
        (
            " real , synthetic:0.5",
            [DataPart("real"), DataPart("synthetic", amount=0.5)],
            "real+synthetic@0.5",
        ),
        (
            "real:100,synthetic/synth:2000",
            [DataPart("real", amount=100), DataPart("synthetic", "synth", 2000)],
            "real@100+synthetic~synth@2000",
        ),
    ],
)
def test_parse_regime(text, parts, slug):
    regime = parse_regime(text)
    assert list(regime.parts) == parts
    assert regime.slug == slug
    assert parse_regime(regime.name) == regime  # the name parses back to the same regime


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "empty training regime"),
        ("realish", "unknown source 'realish'"),
        ("real,real:0.5", "names a source twice"),
        ("synthetic:abc", "neither a count"),
        ("synthetic:-1", "cannot parse|must be > 0"),
        ("synthetic:0.0", "must be > 0"),
    ],
)
def test_bad_regimes_are_refused(text, message):
    with pytest.raises(InputError, match=message):
        parse_regime(text)


def test_eval_sets_take_no_amount():
    assert parse_eval_sets("real,synthetic/test") == (
        DataPart("real"),
        DataPart("synthetic", "test"),
    )
    with pytest.raises(InputError, match="only allowed in --train"):
        parse_eval_sets("real:0.5")


def test_amounts_ratio_budget_and_seeded_subsets(tiny_dataset):
    reader = open_dataset(tiny_dataset)
    readers = {"real": reader, "synthetic": reader}  # the same directory as both sources
    n_real = len(reader.ids("train"))
    (_, _, real), (_, split, synth) = resolve_regime(
        parse_regime("real:10,synthetic:0.5"), readers, 0
    )
    assert len(real) == 10 and len(synth) == 5  # ratio to the regime's real samples
    assert split == "train"  # a 3-split synthetic dataset without 'synth' trains on 'train'
    ((_, _, synth_only),) = resolve_regime(parse_regime("synthetic:0.5"), readers, 0)
    assert len(synth_only) == round(0.5 * n_real)  # ratio to the real train split
    again = resolve_regime(parse_regime("real:10,synthetic:0.5"), readers, 0)
    other = resolve_regime(parse_regime("real:10,synthetic:0.5"), readers, 1)
    assert again[1][2] == synth and other[1][2] != synth  # deterministic by seed
    with pytest.raises(InputError, match=f"asks for 1000 samples but .* has {n_real}"):
        resolve_regime(parse_regime("synthetic:1000"), readers, 0)
    with pytest.raises(InputError, match="needs a synthetic dataset"):
        resolve_regime(parse_regime("synthetic"), {"real": reader}, 0)
    with pytest.raises(InputError, match="has no split 'synth'"):
        resolve_regime(parse_regime("synthetic/synth"), readers, 0)


def test_data_module_loaders(tiny_dataset):
    from groundsynth.benchmark.data import LoaderOptions

    reader = open_dataset(tiny_dataset)
    dm = SegmentationDataModule(
        {"real": reader},
        parse_regime("real:8"),
        DataPart("real"),
        (DataPart("real"), DataPart("real", "val")),
        seed=0,
        loader=LoaderOptions(batch_size=4, workers=0),
    )
    assert dm.test_names == ["real/test", "real/val"]
    batch = next(iter(dm.train_dataloader()))
    assert batch["image"].shape == (4, 3, 64, 64) and batch["mask"].shape == (4, 64, 64)
    first = [next(iter(dm.train_dataloader()))["id"] for _ in range(2)]
    assert first[0] == first[1]  # the shuffle follows the seed
    assert len(dm.test_dataloader()) == 2
    assert dm.describe()["train"][0]["samples"] == 8
