"""Buffered spatial splits: the ring of patches dropped between blocks of different splits."""

from __future__ import annotations

import json
from itertools import product

import numpy as np
import pandas as pd
import pytest

from groundsynth.data.build import BuildConfig, build_dataset
from groundsynth.data.splits import assign_blocks, buffer_radius, in_buffer, leakage
from groundsynth.errors import InputError
from tests.data.rasters import random_imagery, utm_grid_over, write_imagery, write_landcover

_RANK = {"train": 0, "val": 1, "test": 2}


@pytest.mark.parametrize(
    ("buffer", "size", "stride", "radius"),
    [(0, 256, 256, 0), (1, 256, 256, 1), (2, 64, 64, 2), (1, 64, 32, 3), (1, 64, 48, 2)],
)
def test_buffer_radius_keeps_n_patch_widths_of_pixels(buffer, size, stride, radius):
    assert buffer_radius(buffer, size, stride) == radius
    if buffer:
        # the first kept distance leaves >= buffer * size pixels, the one before it does not
        assert (radius + 1) * stride - size >= buffer * size
        assert radius * stride - size < buffer * size


def test_negative_buffer_is_refused():
    with pytest.raises(InputError, match="--buffer"):
        buffer_radius(-1, 64, 64)


def test_hand_layout():
    # 2x2 blocks: train | test on the first block row, val | train on the second
    blocks = {("s", 0, 0): "train", ("s", 0, 1): "test", ("s", 1, 0): "val", ("s", 1, 1): "train"}

    def dropped(row, col):
        return in_buffer(blocks, "s", row, col, block_size=2, radius=1)

    assert not dropped(0, 0)  # its 3x3 neighbourhood is its own block (and off-grid)
    assert dropped(0, 1)  # test block at column 2
    assert dropped(1, 0)  # val block at row 2
    assert dropped(1, 1)
    assert not dropped(0, 2) and not dropped(1, 3)  # test is never dropped
    assert dropped(2, 1)  # val next to the test block's corner (1, 2)
    assert not dropped(3, 0)  # val away from test; train below it does not outrank it
    assert dropped(3, 2) and dropped(2, 2)  # train next to val and test
    assert not dropped(3, 3)  # train whose neighbourhood is train only
    assert not in_buffer(blocks, "s", 0, 1, block_size=2, radius=0)


def _brute_force(blocks, n, b, radius):
    """The definition, spelled out: drop a patch if any grid position within ``radius``
    belongs to a higher-ranked split."""
    split = {(r, c): blocks[("s", r // b, c // b)] for r, c in product(range(n), range(n))}
    out = set()
    for (r, c), s in split.items():
        for dr, dc in product(range(-radius, radius + 1), repeat=2):
            other = split.get((r + dr, c + dc))
            if other is not None and _RANK[other] > _RANK[s]:
                out.add((r, c))
                break
    return split, out


@pytest.mark.parametrize("buffer", [1, 2])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_no_kept_test_patch_lies_within_the_buffer_of_a_kept_train_patch(buffer, seed):
    n, b = 24, 3
    keys = {("s", r, c) for r in range(n // b) for c in range(n // b)}
    blocks = assign_blocks(keys, fractions=(0.6, 0.2, 0.2), seed=seed)
    radius = buffer_radius(buffer, 64, 64)
    split, expected = _brute_force(blocks, n, b, radius)
    got = {(r, c) for r, c in split if in_buffer(blocks, "s", r, c, block_size=b, radius=radius)}
    assert got == expected
    kept = {p: s for p, s in split.items() if p not in got}
    assert {s for p, s in split.items() if p in got} <= {"train", "val"}
    assert sum(s == "test" for s in kept.values()) == sum(s == "test" for s in split.values())
    train = np.array([p for p, s in kept.items() if s == "train"])
    for p, s in kept.items():
        if s == "test":
            gap = np.abs(train - np.array(p)).max(axis=1).min()
            assert gap >= buffer + 1
    lk = leakage(("s", r, c, s) for (r, c), s in kept.items())
    assert lk["test_patches_touching_train"] == 0
    # without the buffer this layout does leak, so the figure above is not vacuous
    assert leakage(("s", r, c, s) for (r, c), s in split.items())["train_test_touching_pairs"] > 0


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("buffer")
    lc = write_landcover(tmp / "lc.tif", np.full((1500, 1500), 30, np.uint8))
    tr, w, h = utm_grid_over(lc)
    return lc, write_imagery(tmp / "s2.tif", random_imagery(4, h, w), tr)


def _build(pair, out, **kw):
    lc, img = pair
    cfg = BuildConfig(imagery=(str(img),), landcover=(str(lc),), out=str(out), size=32, **kw)
    return build_dataset(cfg)


def test_build_drops_the_ring_and_reports_zero_leakage(pair, tmp_path):
    plain = _build(pair, tmp_path / "plain", block_size=3, buffer=0)
    buffered = _build(pair, tmp_path / "buffered", block_size=3, buffer=1)
    assert plain.leakage["test_patches_touching_train"] > 0
    assert buffered.leakage["test_patches_touching_train"] == 0
    assert buffered.leakage["train_test_touching_pairs"] == 0
    a = pd.read_parquet(plain.out / "metadata.parquet").set_index("id")
    b = pd.read_parquet(buffered.out / "metadata.parquet").set_index("id")
    # same blocks, same splits: the buffer only removes patches, from train and val
    assert set(b.index) < set(a.index)
    assert (a.loc[b.index, "split"] == b["split"]).all()
    gone = a.drop(index=b.index)
    assert set(gone["split"]) <= {"train", "val"}
    assert (a["split"] == "test").sum() == (b["split"] == "test").sum()
    # buffer is checked first, so patches it drops are not counted under other reasons
    other = sum(v for k, v in buffered.skipped.items() if k != "buffer")
    assert buffered.skipped["buffer"] + other == len(gone) + sum(plain.skipped.values())
    manifest = json.loads((buffered.out / "manifest.json").read_text())
    outputs = manifest.get("outputs", manifest)
    assert outputs["buffer"] == {
        "patches": 1,
        "radius_steps": 1,
        "dropped": buffered.skipped["buffer"],
    }
    assert outputs["leakage"]["test_patches_touching_train"] == 0


def test_build_refuses_a_negative_buffer(pair, tmp_path):
    with pytest.raises(InputError, match="--buffer"):
        _build(pair, tmp_path / "bad", buffer=-1)
