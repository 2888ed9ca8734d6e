"""conditional-diffusion's class-mean prior: colours measured, kept, added back, and learning."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch

from groundsynth.classes import NUM_CLASSES
from groundsynth.data.reader import open_dataset
from groundsynth.errors import InputError
from groundsynth.evaluate.pixel_floor import fit_floor
from groundsynth.generate.checkpoint import list_checkpoints, load_checkpoint
from groundsynth.generate.conditional_diffusion import (
    ConditionalDiffusionConfig,
    class_mean_image,
    mean_colours,
)
from groundsynth.generate.data import TrainingItems
from groundsynth.generate.sampling import load_generator
from groundsynth.generate.training import train_generator
from tests.generate.datasets import blocky_masks, write_dataset
from tests.generate.tiny import learning_config, tiny_conditional_diffusion, train_config


def test_mean_colours_per_class_in_model_range():
    image = np.zeros((2, 3, 3), np.uint8)
    image[0] = [[255, 0, 0], [255, 0, 0], [0, 0, 255]]
    image[1] = [[0, 255, 0], [0, 255, 0], [0, 0, 255]]
    mask = np.array([[0, 0, 2], [1, 1, 2]])
    other = (np.full((1, 2, 3), 51, np.uint8), np.array([[0, 255]]))  # 255: nodata, skipped
    colours = mean_colours([(image, mask), other]).numpy()
    to_range = lambda rgb: np.asarray(rgb, float) / 127.5 - 1.0  # noqa: E731
    assert colours.shape == (NUM_CLASSES, 3)
    np.testing.assert_allclose(
        colours[0], to_range([(255 + 255 + 51) / 3, 51 / 3, 51 / 3]), atol=1e-6
    )
    np.testing.assert_allclose(colours[1], to_range([0, 255, 0]), atol=1e-6)
    np.testing.assert_allclose(colours[2], to_range([0, 0, 255]), atol=1e-6)
    # classes without a pixel get the mean of all labelled pixels
    overall = to_range([(255 * 2 + 51) / 7, (255 * 2 + 51) / 7, (255 * 2 + 51) / 7])
    np.testing.assert_allclose(colours[3], overall, atol=1e-6)
    np.testing.assert_allclose(colours[6], overall, atol=1e-6)
    with pytest.raises(InputError, match="no labelled pixel"):
        mean_colours([(image, np.full((2, 3), 255))])


def test_class_mean_image_paints_each_pixel_with_its_class():
    colours = torch.arange(NUM_CLASSES * 3, dtype=torch.float32).view(NUM_CLASSES, 3)
    masks = torch.tensor([[[0, 6], [3, 3]]])
    img = class_mean_image(colours, masks)
    assert img.shape == (1, 3, 2, 2)
    assert img[0, :, 0, 1].tolist() == colours[6].tolist()
    assert img[0, :, 1, 0].tolist() == colours[3].tolist()
    assert img[0, 2, 0, 0].item() == colours[0, 2].item()


def test_the_colours_are_measured_kept_and_restored(tiny_dataset, tmp_path):
    model = tiny_conditional_diffusion(mean_prior=True)
    cfg = train_config("conditional-diffusion", tiny_dataset, tmp_path / "run", model=model)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        train_generator(cfg, progress=False)
    items = TrainingItems(open_dataset(tiny_dataset), "train", cfg.image_size, fit=cfg.fit)
    expected = mean_colours(items.arrays(i, None) for i in range(len(items)))
    payload = load_checkpoint(list_checkpoints(tmp_path / "run")[-1][1])
    for net in ("unet", "unet_ema"):
        torch.testing.assert_close(payload["networks"][net]["class_colours"], expected)
    gen = load_generator(tmp_path / "run")
    torch.testing.assert_close(gen.network.class_colours, expected)
    # without the prior there is no such buffer (older checkpoints load as before)
    plain = tiny_conditional_diffusion()
    cfg2 = train_config("conditional-diffusion", tiny_dataset, tmp_path / "plain", model=plain)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        train_generator(cfg2, progress=False)
    assert not hasattr(load_generator(tmp_path / "plain").network, "class_colours")


def _learnt(tmp_path, name: str, steps: int, prior: bool) -> float:
    masks = blocky_masks(4, 32, seed=1, grid=4)
    ds = tmp_path / "ds"
    if not ds.exists():
        write_dataset(ds, masks)
    model = ConditionalDiffusionConfig(
        block_out_channels=(16, 16), layers_per_block=1, attention=False,
        num_train_timesteps=100, beta_schedule="squaredcos_cap_v2",
        prediction_type="v_prediction", lr=3e-3, ema_decay=0.9, sampler="ddim",
        inference_steps=10, map_dropout=0.1, mean_prior=prior,
    )  # fmt: skip
    cfg = learning_config("conditional-diffusion", ds, tmp_path / name, steps, model)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        train_generator(cfg, progress=False)
    gen = load_generator(tmp_path / name, "cpu")
    truth = np.stack(masks)
    read_back = fit_floor(ds).predict(gen.images([11, 12, 13, 14], truth))
    return float((read_back == truth).mean())


@pytest.mark.slow
def test_the_prior_paints_the_maps_after_few_steps(tmp_path):
    """After 30 steps (the un-primed model needs ~200, see test_conditional_diffusion) the
    samples of the primed model read back as their maps; the un-primed ones do not yet."""
    primed = _learnt(tmp_path, "primed", 30, prior=True)
    plain = _learnt(tmp_path, "plain", 30, prior=False)
    assert primed > 0.9, primed
    assert plain < primed - 0.2, (plain, primed)
