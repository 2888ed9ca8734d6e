"""Split arithmetic on hand-worked cases: counts, hash order, whole-source assignment,
buffer edges and the leakage figure (no rasters, no build)."""

from __future__ import annotations

import hashlib

import pytest

from groundsynth.data.splits import (
    assign_blocks,
    assign_sources,
    in_buffer,
    leakage,
    split_counts,
    unit_hash,
    validate_fractions,
)
from groundsynth.errors import InputError


def _blake(text: str) -> float:
    """The documented hash, spelled out: blake2b (8 bytes, big-endian) of the ':'-joined parts."""
    return int.from_bytes(hashlib.blake2b(text.encode(), digest_size=8).digest(), "big") / 2**64


def test_unit_hash_is_blake2b_of_the_joined_parts():
    # pinned: every split ever made depends on these numbers staying the same
    assert unit_hash(3, "s", 0, 1) == _blake("3:s:0:1")
    assert unit_hash(0, "src") == _blake("0:src")
    assert unit_hash(7, "a", 2, 5) == pytest.approx(0.63980, abs=5e-6)
    assert all(0.0 <= unit_hash(s, "x") < 1.0 for s in range(200))


def test_validate_fractions():
    assert validate_fractions((1, 0, 0)) == (1.0, 0.0, 0.0)  # zero shares are allowed
    assert validate_fractions((0.8, 0.1, 0.1)) == (0.8, 0.1, 0.1)
    for bad in ((0.5, 0.5), (0.5, 0.25, 0.25, 0.0), (1.2, -0.1, -0.1), (0.5, 0.3, 0.21)):
        with pytest.raises(InputError, match="split fractions"):
            validate_fractions(bad)


@pytest.mark.parametrize(
    ("n", "fractions", "counts"),
    [
        (10, (0.8, 0.1, 0.1), [8, 1, 1]),  # exact
        (0, (0.8, 0.1, 0.1), [0, 0, 0]),
        (7, (0.5, 0.3, 0.2), [4, 2, 1]),  # raw 3.5 2.1 1.4: the .5 remainder takes the spare
        (7, (0.2, 0.3, 0.5), [1, 2, 4]),  # the same, largest remainder last
        (2, (0.25, 0.5, 0.25), [1, 1, 0]),  # tie of remainders: the first split
        # every split with a share gets one patch, taken from the largest
        (10, (0.96, 0.02, 0.02), [8, 1, 1]),
        (10, (0.02, 0.02, 0.96), [1, 1, 8]),
        (3, (0.9, 0.05, 0.05), [1, 1, 1]),  # just enough for one each
        (2, (0.9, 0.1, 0.0), [1, 1, 0]),  # two non-zero shares, two items
        (10, (0.9, 0.1, 0.0), [9, 1, 0]),  # a zero share stays empty
        (2, (0.5, 0.3, 0.2), [1, 1, 0]),  # too few items for all three: largest remainder
    ],
)
def test_split_counts_by_hand(n, fractions, counts):
    assert split_counts(n, fractions) == counts


def test_assign_blocks_takes_blocks_in_hash_order():
    keys = [("s", r, c) for r in range(3) for c in range(4)]  # 12 blocks: 10 / 1 / 1
    got = assign_blocks(keys + keys[:3], fractions=(0.8, 0.1, 0.1), seed=3)  # duplicates: once
    order = sorted(keys, key=lambda k: _blake(f"3:{k[0]}:{k[1]}:{k[2]}"))
    assert got == {**dict.fromkeys(order[:10], "train"), order[10]: "val", order[11]: "test"}


def test_assign_sources_greedy_by_hand():
    areas = {"a": 4.0, "b": 3.0, "c": 2.0, "d": 1.0, "e": 1.0}  # total 11
    # the hash order under seed 0 is e, c, b, a, d (not alphabetical)
    assert sorted(areas, key=lambda n: _blake(f"0:{n}")) == ["e", "c", "b", "a", "d"]
    # targets 5.5 / 3.3 / 2.2; each source goes to the split furthest below its target:
    # e -> train (1), c -> train (3), b -> val (3), a: deficits 2.5 / 0.3 / 2.2 -> train (7),
    # d: deficits -1.5 / 0.3 / 2.2 -> test
    got = assign_sources(areas, fractions=(0.5, 0.3, 0.2), seed=0)
    assert got == {"e": "train", "c": "train", "b": "val", "a": "train", "d": "test"}
    # fixed sources count toward their split first: train starts at 5 (a + e), then
    # c: deficits 0.5 / 3.3 / 2.2 -> val (2), b: 0.5 / 1.3 / 2.2 -> test (3),
    # d: 0.5 / 1.3 / -0.8 -> val
    got = assign_sources(
        areas, fractions=(0.5, 0.3, 0.2), seed=0, fixed={"a": "train", "e": "train"}
    )
    assert got == {"a": "train", "e": "train", "c": "val", "b": "test", "d": "val"}


def test_assign_sources_with_no_area_follows_the_largest_fraction():
    got = assign_sources({"x": 0.0, "y": 0.0}, fractions=(0.2, 0.7, 0.1), seed=0)
    assert got == {"x": "val", "y": "val"}


def test_in_buffer_sees_row_and_column_zero():
    # 1x1 blocks: a test patch at the grid's corner, train everywhere else
    blocks = {("s", r, c): "train" for r in range(3) for c in range(3)}
    blocks[("s", 0, 0)] = "test"
    assert in_buffer(blocks, "s", 1, 1, block_size=1, radius=1)  # (0, 0) is a neighbour
    assert not in_buffer(blocks, "s", 2, 2, block_size=1, radius=1)
    assert in_buffer(blocks, "s", 2, 2, block_size=1, radius=2)


def test_in_buffer_with_radius_zero_looks_nothing_up():
    assert not in_buffer({}, "s", 5, 5, block_size=2, radius=0)


def test_leakage_fraction_is_rounded_to_six_decimals():
    # three test patches in a row; only the first touches the train patch left of it
    patches = [("s", 0, 0, "train"), ("s", 0, 1, "test"), ("s", 0, 5, "test"), ("s", 0, 9, "test")]
    assert leakage(patches) == {
        "train_test_touching_pairs": 1,
        "test_patches_touching_train": 1,
        "test_patches": 3,
        "test_touching_fraction": 0.333333,
    }
