"""Layouts: expressions, strategies, targets met, and provenance that rebuilds each layout."""

from __future__ import annotations

import re

import numpy as np
import pytest

from groundsynth.classes import CLASS_NAMES
from groundsynth.data.composition import class_fractions
from groundsynth.data.reader import open_dataset
from groundsynth.errors import InputError
from groundsynth.generate.data import dihedral
from groundsynth.generate.layouts import (
    LayoutConfig,
    get_layout_strategy,
    list_layout_strategies,
    make_layouts,
    parse_distribution,
    parse_target,
)
from groundsynth.generate.layouts.base import DIHEDRAL_NAMES

SHRUB, BARREN, WATER = (CLASS_NAMES.index(c) for c in ("Shrub", "Barren", "Water"))


def rebuild(layout, reader, size: int) -> np.ndarray:
    """The layout rebuilt from its recorded provenance alone (sources + transform words)."""
    pieces = (
        layout.transform.split(": ", 1)[1].split(" | ")
        if layout.transform.startswith("tile")
        else [layout.transform]
    )
    tiles = int(re.match(r"tile (\d)x", layout.transform).group(1)) if len(pieces) > 1 else 1
    t = size // tiles
    cut = []
    for source, words in zip(layout.sources, pieces):
        split, sid = source.split("/")
        m = re.match(r"^(\S+?)(?: crop (\d+),(\d+))?$", words)
        code = DIHEDRAL_NAMES.index(m.group(1))
        y, x = int(m.group(2) or 0), int(m.group(3) or 0)
        mask = dihedral(reader.read_mask(split, sid), code)
        cut.append(mask[y : y + t, x : x + t])
    rows = [np.concatenate(cut[r * tiles : (r + 1) * tiles], 1) for r in range(tiles)]
    return np.concatenate(rows, 0)


def test_parse_target_and_distribution():
    cs = parse_target("Shrub>=0.3, built-up <= 10%; Water<=0")
    assert [str(c) for c in cs] == ["Shrub>=0.3", "Built-up<=0.1", "Water<=0"]
    for bad, msg in [
        ("Shrub>0.3", "cannot read"),
        ("Forest>=0.3", "unknown class"),
        ("Shrub>=30", "fraction in 0..1"),
        ("Shrub>=0.7, Barren>=0.6", "sum to more than 1"),
        ("Shrub>=0.5, Shrub<=0.2", "cannot be"),
        ("Shrub=0.3", "use >= or <="),
        ("", "empty"),
    ]:
        with pytest.raises(InputError, match=msg):
            parse_target(bad)
    d = parse_distribution("Shrub=0.3, Barren=20%", background=np.array([1, 0, 1, 0, 0, 0, 0.0]))
    assert d.sum() == pytest.approx(1)
    assert d[SHRUB] == pytest.approx(0.3) and d[BARREN] == pytest.approx(0.2)
    assert d[0] == pytest.approx(0.25) and d[2] == pytest.approx(0.25) and d[WATER] == 0
    with pytest.raises(InputError, match="sum to"):
        parse_distribution("Shrub=0.8, Barren=0.5")


def test_registry_and_config_checks():
    assert list_layout_strategies() == ["train-masks", "augmented", "target"]
    with pytest.raises(InputError, match="train-masks, augmented, target"):
        get_layout_strategy("random")
    with pytest.raises(InputError, match="exactly one"):
        LayoutConfig(strategy="target")
    with pytest.raises(InputError, match="only used by the target"):
        LayoutConfig(strategy="augmented", target="Shrub>=0.2")
    with pytest.raises(InputError, match="cannot read"):
        LayoutConfig(strategy="target", target="Shrub=>0.2")


def test_train_masks_cycle_through_masks_centred(large_mask_dataset):
    reader = open_dataset(large_mask_dataset)
    layouts = make_layouts(LayoutConfig(), reader, size=32, seed=0)
    ids = reader.ids("train")
    for i in (0, 5, len(ids), len(ids) + 5):
        lay = layouts.layout(i)
        assert lay.sources == (f"train/{ids[i % len(ids)]}",)
        assert lay.transform == "identity crop 16,16"
        assert np.array_equal(lay.mask, reader.read_mask("train", ids[i % len(ids)])[16:48, 16:48])


def test_augmented_is_deterministic_and_provenance_rebuilds_it(large_mask_dataset):
    reader = open_dataset(large_mask_dataset)
    a = make_layouts(LayoutConfig(strategy="augmented"), reader, size=32, seed=7)
    b = make_layouts(LayoutConfig(strategy="augmented"), large_mask_dataset, size=32, seed=7)
    kinds = set()
    for i in range(24):
        la, lb = a.layout(i), b.layout(i)
        assert np.array_equal(la.mask, lb.mask) and la.transform == lb.transform
        assert la.mask.shape == (32, 32) and la.strategy == "augmented"
        assert np.array_equal(rebuild(la, reader, 32), la.mask), la.transform
        kinds.add(la.transform.split(" ")[0])
    assert "tile" in kinds and len(kinds) > 2  # mosaics and several flips/rotations
    other = make_layouts(LayoutConfig(strategy="augmented"), reader, size=32, seed=8)
    assert any(not np.array_equal(other.layout(i).mask, a.layout(i).mask) for i in range(5))


def test_target_constraints_are_met_and_rare_classes_pushed_up(large_mask_dataset):
    reader = open_dataset(large_mask_dataset)
    base = np.mean([class_fractions(reader.read_mask("train", i)) for i in reader.ids("train")], 0)
    cfg = LayoutConfig(strategy="target", target="Shrub>=0.4, Water<=0")
    layouts = make_layouts(cfg, reader, size=32, seed=0)
    fr = []
    for i in range(12):
        lay = layouts.layout(i)
        f = class_fractions(lay.mask)
        assert lay.satisfied is True and lay.strategy == "target"
        assert f[SHRUB] >= 0.4 and f[WATER] == 0
        assert np.array_equal(rebuild(lay, reader, 32), lay.mask)
        fr.append(f)
    assert np.mean(fr, 0)[SHRUB] > 2 * base[SHRUB]


def test_unreachable_target_keeps_closest_and_says_so(large_mask_dataset):
    cfg = LayoutConfig(strategy="target", target="Water>=0.99", candidates=4)
    lay = make_layouts(cfg, large_mask_dataset, size=32, seed=0).layout(0)
    assert lay.satisfied is False
    assert class_fractions(lay.mask)[WATER] > 0  # the closest candidate has some water


def test_target_distribution_is_approached(large_mask_dataset):
    cfg = LayoutConfig(strategy="target", distribution="Barren=0.4, Shrub=0.3")
    layouts = make_layouts(cfg, large_mask_dataset, size=32, seed=0)
    share = np.mean([class_fractions(layouts.layout(i).mask) for i in range(16)], 0)
    assert abs(share[BARREN] - 0.4) < 0.1 and abs(share[SHRUB] - 0.3) < 0.1
    assert layouts.layout(0).satisfied is None


@pytest.mark.parametrize("strategy", ["train-masks", "augmented"])
def test_masks_smaller_than_layout_are_refused(tiny_dataset, strategy):
    with pytest.raises(InputError, match="smaller than the layout size 64"):
        make_layouts(LayoutConfig(strategy=strategy), tiny_dataset, size=64, seed=0)
