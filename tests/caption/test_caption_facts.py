from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from groundsynth.caption.facts import (
    CELL_NAMES,
    GroundingFacts,
    facts_from_mask,
    facts_from_percentages,
)
from groundsynth.classes import CLASS_NAMES
from groundsynth.errors import InputError

TREE, SHRUB, GRASS, CROP, BUILT, BARREN, WATER = range(7)


def test_composition_and_layout_of_a_split_mask() -> None:
    mask = np.full((90, 90), CROP, dtype=np.uint8)
    mask[:30, :] = TREE  # the top row of cells
    facts = facts_from_mask(mask, "a")
    assert facts.percentages == (33, 0, 0, 67, 0, 0, 0)
    assert sum(facts.percentages) == 100
    assert np.isclose(sum(facts.fractions), 1.0)
    assert facts.dominant == CROP
    assert facts.layout == (TREE,) * 3 + (CROP,) * 6
    assert set(facts.class_cells[TREE]) == {0, 1, 2}  # a third of the trees in each
    assert facts.class_cells[WATER] == ()
    assert facts.water_shape == "none" and facts.builtup_pattern == "none"
    d = facts.to_dict()
    json.dumps(d)
    assert d["layout"]["north-west"] == "Tree" and d["layout"]["south-east"] == "Crop"
    assert d["dominant"] == "Crop"


def test_river_is_a_line_and_lake_a_blob() -> None:
    river = np.full((128, 128), GRASS, dtype=np.uint8)
    rows = (64 + 20 * np.sin(np.linspace(0, 6, 128))).astype(int)
    for x, y in enumerate(rows):
        river[y - 2 : y + 3, x] = WATER
    assert facts_from_mask(river).water_shape == "line"
    lake = np.full((128, 128), GRASS, dtype=np.uint8)
    yy, xx = np.mgrid[:128, :128]
    lake[(yy - 70) ** 2 + (xx - 50) ** 2 < 25**2] = WATER
    f = facts_from_mask(lake)
    assert f.water_shape == "blob" and f.water_elongation < 4
    # a big lake cut by the image edge is still a blob
    edge = np.full((128, 128), GRASS, dtype=np.uint8)
    edge[:, 80:] = WATER
    assert facts_from_mask(edge).water_shape == "blob"


def test_builtup_compact_versus_scattered() -> None:
    town = np.full((96, 96), CROP, dtype=np.uint8)
    town[30:60, 30:60] = BUILT
    f = facts_from_mask(town)
    assert (f.builtup_patches, f.builtup_pattern) == (1, "compact")
    houses = np.full((96, 96), CROP, dtype=np.uint8)
    for y in range(4, 96, 16):
        for x in range(4, 96, 16):
            houses[y : y + 3, x : x + 3] = BUILT
    f = facts_from_mask(houses)
    assert f.builtup_patches == 36 and f.builtup_pattern == "scattered"


def test_values_outside_the_schema_are_ignored_and_bad_masks_rejected() -> None:
    mask = np.array([[0, 255], [6, 6]], dtype=np.uint8)
    f = facts_from_mask(mask)
    assert f.percentages[TREE] == 33 and f.percentages[WATER] == 67
    with pytest.raises(InputError, match="2-D integer"):
        facts_from_mask(np.zeros((2, 2, 3), dtype=np.uint8), "bad.png")
    with pytest.raises(InputError, match="no pixel"):
        facts_from_mask(np.full((4, 4), 255, dtype=np.uint8))


def test_facts_from_percentages_row() -> None:
    row = pd.Series(
        {"filename": "N40E033_041_023.png", "split": "train", "Tree": 40, "Shrub": 0,
         "Grass": 10, "Crop": 50, "Built-up": 0, "Barren": 0, "Water": 0}
    )  # fmt: skip
    f = facts_from_percentages(row)
    assert f.image_id == "N40E033_041_023.png"
    assert f.percentages == (40, 0, 10, 50, 0, 0, 0)
    assert f.dominant == CROP and f.layout is None and f.water_shape is None
    g = facts_from_percentages([0.25, 0, 0, 0.75, 0, 0, 0], image_id="x")
    assert g.percentages == (25, 0, 0, 75, 0, 0, 0)
    with pytest.raises(InputError, match="Water"):
        facts_from_percentages({n: 1 for n in CLASS_NAMES[:-1]})
    with pytest.raises(InputError, match="non-negative"):
        facts_from_percentages([1, 2, 3])


def test_grounding_facts_validates_lengths() -> None:
    with pytest.raises(InputError):
        GroundingFacts("x", (1.0,), (100,))
    assert len(CELL_NAMES) == 9
