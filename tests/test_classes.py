from __future__ import annotations

import numpy as np
import pytest

from groundsynth.classes import (
    CLASS_NAMES,
    COLOURS,
    IGNORE_INDEX,
    PALETTE,
    WORLDCOVER_TO_CLASS,
    class_index,
    remap_worldcover,
)


def test_schema_matches_the_aras400k_release():
    assert CLASS_NAMES == ("Tree", "Shrub", "Grass", "Crop", "Built-up", "Barren", "Water")
    assert COLOURS.tolist() == [
        [0, 100, 0], [255, 182, 193], [154, 205, 50], [255, 215, 0],
        [139, 69, 19], [211, 211, 211], [0, 0, 255],
    ]  # fmt: skip
    groups = {i: sorted(c for c, k in WORLDCOVER_TO_CLASS.items() if k == i) for i in range(7)}
    assert groups == {
        0: [10, 95],
        1: [20],
        2: [30, 90, 100],
        3: [40],
        4: [50],
        5: [60, 70],
        6: [80],
    }
    assert PALETTE[:6] == [0, 100, 0, 255, 182, 193] and len(PALETTE) == 768


def test_remap_handles_nodata_unknown_and_wide_types():
    codes = np.array([[0, 10, 95, 100], [70, 80, 255, 42]], dtype=np.uint8)
    assert remap_worldcover(codes).tolist() == [
        [IGNORE_INDEX, 0, 0, 2],
        [5, 6, IGNORE_INDEX, IGNORE_INDEX],
    ]
    wide = np.array([-1, 30, 300], dtype=np.int32)
    assert remap_worldcover(wide).tolist() == [IGNORE_INDEX, 2, IGNORE_INDEX]


def test_class_index_by_name():
    assert (
        class_index("built up") == 4 and class_index("BuiltUp") == 4 and class_index("water") == 6
    )
    with pytest.raises(ValueError, match="valid classes: Tree"):
        class_index("forest")
