from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from groundsynth.classes import COLOURS
from groundsynth.data.composition import class_fractions, integer_percentages
from groundsynth.data.masks import (
    colourise,
    decode_colour_mask,
    encode_mask_png,
    encode_rgb_png,
    read_mask,
)
from groundsynth.errors import MaskError


def test_palette_png_round_trip_and_colours(tmp_path):
    mask = np.random.default_rng(0).integers(0, 7, (40, 56), dtype=np.uint8)
    path = tmp_path / "m.png"
    path.write_bytes(encode_mask_png(mask))
    with Image.open(path) as im:
        assert im.mode == "P"
        # ARAS-style readers see the class colours
        np.testing.assert_array_equal(np.asarray(im.convert("RGB")), COLOURS[mask])
    np.testing.assert_array_equal(read_mask(path), mask)


def test_reads_rgb_colour_masks_and_greyscale_index_masks(tmp_path):
    mask = np.random.default_rng(1).integers(0, 7, (16, 16), dtype=np.uint8)
    Image.fromarray(colourise(mask)).save(tmp_path / "rgb.png")
    Image.fromarray(mask, mode="L").save(tmp_path / "grey.png")
    np.testing.assert_array_equal(read_mask(tmp_path / "rgb.png"), mask)
    np.testing.assert_array_equal(read_mask(tmp_path / "grey.png"), mask)


def test_unknown_colours_and_values_name_the_file(tmp_path):
    rgb = COLOURS[np.zeros((8, 8), dtype=np.uint8)].copy()
    rgb[0, 0] = (1, 2, 3)
    rgb[1, 1] = (9, 9, 9)
    Image.fromarray(rgb).save(tmp_path / "bad.png")
    with pytest.raises(MaskError, match=r"bad\.png: 2 pixels .*\(1, 2, 3\), \(9, 9, 9\)"):
        read_mask(tmp_path / "bad.png")
    Image.fromarray(np.full((4, 4), 9, np.uint8), mode="L").save(tmp_path / "nine.png")
    with pytest.raises(MaskError, match=r"nine\.png: values \[9\]"):
        read_mask(tmp_path / "nine.png")
    (tmp_path / "junk.png").write_bytes(b"junk")
    with pytest.raises(MaskError, match="junk.png: cannot read mask"):
        read_mask(tmp_path / "junk.png")


def test_vectorised_decoding_equals_a_per_class_loop():
    rgb = COLOURS[np.random.default_rng(2).integers(0, 7, (64, 64))]
    loop = np.zeros((64, 64), np.uint8)
    for i, c in enumerate(COLOURS):
        loop[np.all(rgb == c, axis=-1)] = i
    np.testing.assert_array_equal(decode_colour_mask(rgb), loop)


@pytest.mark.parametrize("encoder", ["pil", "fpng"])
def test_rgb_png_is_lossless(encoder):
    pytest.importorskip("fpng") if encoder == "fpng" else None
    img = np.random.default_rng(3).integers(0, 256, (32, 48, 3), dtype=np.uint8)
    data = encode_rgb_png(img, encoder=encoder)
    np.testing.assert_array_equal(np.asarray(Image.open(io.BytesIO(data))), img)


def test_integer_percentages_sum_to_100_and_round_fairly():
    rng = np.random.default_rng(4)
    fr = rng.dirichlet(np.full(7, 0.3), size=2000)
    pct = integer_percentages(fr)
    assert (pct.sum(axis=1) == 100).all()
    assert (np.abs(pct - fr * 100) < 1).all()  # largest remainder: never off by a point or more
    assert integer_percentages(np.array([1 / 3, 1 / 3, 1 / 3, 0, 0, 0, 0])).tolist() == [
        34,
        33,
        33,
        0,
        0,
        0,
        0,
    ]
    assert integer_percentages(np.zeros(7)).tolist() == [0] * 7
    mask = np.array([[0, 0, 6, 6]], dtype=np.uint8)
    np.testing.assert_allclose(class_fractions(mask), [0.5, 0, 0, 0, 0, 0, 0.5])
