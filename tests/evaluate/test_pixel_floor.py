"""The pixel floor: features, bounded pixel sampling, the fit against scikit-learn, scores."""

from __future__ import annotations

import numpy as np
import pytest

from groundsynth.classes import COLOURS, NUM_CLASSES
from groundsynth.errors import InputError
from groundsynth.evaluate.pixel_floor import (
    PixelFloor,
    fit_floor,
    pixel_features,
    sample_pixels,
    score_floor,
)
from tests.generate.datasets import blocky_masks, colour_image, write_dataset


def test_features_are_rgb_and_3x3_mean():
    # random values: on a linear ramp a 3x3 mean equals the centre pixel and proves nothing
    img = np.random.default_rng(0).integers(0, 256, (5, 5, 3), dtype=np.uint8)
    f = pixel_features(img)
    assert f.shape == (5, 5, 6)
    np.testing.assert_allclose(f[..., :3], img / 255.0, rtol=1e-6)
    # centre pixel (2, 2): mean of the 3x3 block around it
    np.testing.assert_allclose(f[2, 2, 3:], img[1:4, 1:4].reshape(-1, 3).mean(0) / 255.0, rtol=1e-6)
    # a batch gives each image's own features (no mixing across the batch axis)
    batch = pixel_features(np.stack([img, img[::-1]]))
    np.testing.assert_allclose(batch[0], f, rtol=1e-6)
    np.testing.assert_allclose(batch[1], pixel_features(img[::-1]), rtol=1e-6)
    with pytest.raises(InputError):
        pixel_features(np.zeros((4, 4)))


def test_sample_pixels_bounded_and_uniform():
    # 40 images of 8x8; image k is constant grey k, so kept pixels tell which image they came from
    images = [np.full((8, 8, 3), k, np.uint8) for k in range(40)]
    masks = [np.full((8, 8), k % NUM_CLASSES, np.uint8) for k in range(40)]
    x, y = sample_pixels(zip(images, masks), pixels_per_image=16, max_pixels=100, seed=1)
    assert x.shape == (100, 6) and y.shape == (100,)
    source = np.round(x[:, 0] * 255).astype(int)
    # labels travel with their pixels
    np.testing.assert_array_equal(y, source % NUM_CLASSES)
    # reservoir: late images are as likely kept as early ones (not just the first 100 pixels)
    counts = []
    for seed in range(30):
        x, _ = sample_pixels(zip(images, masks), pixels_per_image=16, max_pixels=100, seed=seed)
        src = np.round(x[:, 0] * 255).astype(int)
        counts.append([np.sum(src < 20), np.sum(src >= 20)])
    first, second = np.mean(counts, axis=0)
    assert abs(first - second) < 10, (first, second)
    # room for all: every drawn pixel kept
    x, _ = sample_pixels(zip(images, masks), pixels_per_image=4, max_pixels=1000, seed=0)
    assert len(x) == 160
    with pytest.raises(InputError, match="no pixels"):
        sample_pixels([], seed=0)


def _separable(seed=0, n=3000):
    """Pixels whose class is a noisy function of colour (a linear classifier does well)."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, NUM_CLASSES, n)
    colours = COLOURS[y].astype(np.float64) + rng.normal(0, 25, (n, 3))
    rgb = np.clip(colours, 0, 255) / 255.0
    x = np.concatenate([rgb, rgb + rng.normal(0, 0.02, rgb.shape)], axis=1)
    return x.astype(np.float32), y


def test_fit_equals_scikit_learn():
    sk = pytest.importorskip("sklearn.linear_model")
    x, y = _separable()
    l2 = 1e-3
    floor = PixelFloor.fit(x, y, l2=l2)
    z = (x - floor.mean) / floor.scale
    # the same objective: mean cross-entropy + l2/2 |W|^2  <=>  C = 1 / (l2 * n)
    ref = sk.LogisticRegression(C=1.0 / (l2 * len(y)), max_iter=5000, tol=1e-10).fit(z, y)
    ours = (z @ floor.weight.T + floor.bias).argmax(1)
    assert np.mean(ours == ref.predict(z)) > 0.995
    # coefficients agree up to a per-feature shift common to all classes (softmax invariance)
    w_ref = ref.coef_ - ref.coef_.mean(0)
    w = floor.weight - floor.weight.mean(0)
    np.testing.assert_allclose(w, w_ref, atol=0.05 * np.abs(w_ref).max())
    assert floor.info["converged"] and floor.info["pixels"] == len(y)


def test_fit_floor_reads_a_dataset_and_round_trips(tmp_path):
    masks = blocky_masks(12, 32, seed=5)
    root = write_dataset(tmp_path / "ds", masks)
    floor = fit_floor(root, "train", pixels_per_image=128, seed=0)
    scores = score_floor(floor, root, "train")
    # images are class colours + noise: the floor reads them back almost perfectly
    assert scores["accuracy"] > 0.97 and scores["iou"] > 0.9
    # on images of other colours (noise) it cannot
    noise = [
        np.random.default_rng(i).integers(0, 256, (32, 32, 3), dtype=np.uint8) for i in range(4)
    ]
    root2 = write_dataset(tmp_path / "noise", masks[:4], images=noise)
    assert score_floor(floor, root2, "train")["iou"] < 0.3
    path = floor.save(tmp_path / "floor.json")
    again = PixelFloor.load(path)
    img = colour_image(masks[0], seed=99)
    np.testing.assert_array_equal(again.predict(img), floor.predict(img))
    assert floor.predict(img).shape == (32, 32)
    with pytest.raises(InputError):
        PixelFloor.load(tmp_path / "ds" / "metadata.parquet")


def test_label_nodata_pixels_are_neither_drawn_nor_counted():
    from groundsynth.classes import IGNORE_INDEX

    masks = blocky_masks(4, 16, seed=2)
    images = [colour_image(m, seed=i) for i, m in enumerate(masks)]
    holed = [m.copy() for m in masks]
    for m in holed:
        m[:4] = IGNORE_INDEX  # label nodata, as builds with max_label_nodata > 0 keep it
    _, y = sample_pixels(zip(images, holed), pixels_per_image=256, seed=0)
    assert len(y) == 4 * 12 * 16 and y.max() < NUM_CLASSES  # every labelled pixel, no other
    floor = PixelFloor.fit(*sample_pixels(zip(images, masks), seed=0))
    cm = floor.confusion(zip(images, holed))
    assert cm.sum() == 4 * 12 * 16 and np.trace(cm) >= 0.9 * cm.sum()
