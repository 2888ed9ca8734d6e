"""The fixed image descriptor: columns against hand computations."""

from __future__ import annotations

import numpy as np
import pytest

from groundsynth.classes import COLOURS
from groundsynth.errors import InputError
from groundsynth.evaluate.descriptor import DESCRIPTOR_FEATURES, image_descriptor


class _HalfFloor:
    """A stand-in floor reading the left half as class 0 and the right half as class 3."""

    def predict(self, images):
        out = np.zeros(images.shape[:3], np.uint8)
        out[:, :, images.shape[2] // 2 :] = 3
        return out


def test_columns_against_hand_computations():
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (3, 16, 12, 3), dtype=np.uint8)
    d = image_descriptor(images)
    assert d.shape == (3, len(DESCRIPTOR_FEATURES)) == (3, 23) and d.dtype == np.float64
    col = {name: d[:, i] for i, name in enumerate(DESCRIPTOR_FEATURES)}
    x = images.astype(np.float64) / 255
    np.testing.assert_allclose(col["mean_g"], x[..., 1].mean(axis=(1, 2)), rtol=1e-6)
    np.testing.assert_allclose(col["std_b"], x[..., 2].std(axis=(1, 2)), rtol=1e-5)
    np.testing.assert_allclose(col["p90_r"], np.percentile(x[..., 0], 90, axis=(1, 2)), rtol=1e-5)
    assert not d[:, 12:19].any()  # no floor: class shares are zeros
    shares = image_descriptor(images, _HalfFloor())[:, 12:19]
    np.testing.assert_allclose(shares[:, [0, 3]], 0.5)
    assert shares.sum(axis=1) == pytest.approx(np.ones(3))
    # texture: a flat image has none; a horizontal ramp has a constant gradient, no curvature
    flat = np.broadcast_to(COLOURS[2], (1, 8, 8, 3)).astype(np.uint8)
    np.testing.assert_allclose(image_descriptor(flat)[0, 19:], 0, atol=1e-6)
    ramp = np.broadcast_to((np.arange(8) * 10)[None, None, :, None], (1, 8, 8, 3)).astype(np.uint8)
    g = image_descriptor(ramp)[0, 19:]
    np.testing.assert_allclose(g, [10 / 255, 0, 20 / 255, 0], atol=1e-6)
    with pytest.raises(InputError, match="H, W >= 4"):
        image_descriptor(np.zeros((2, 3, 3, 3), np.uint8))
