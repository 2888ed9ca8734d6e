"""Fixtures of the generator tests: tiny datasets and one tiny trained run of each kind."""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("lightning")
pytest.importorskip("diffusers")


@pytest.fixture(autouse=True)
def _one_thread():
    """Tiny networks run fastest on one thread (and leave the other cores to other tests)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _quiet_train(config):
    from groundsynth.generate.training import train_generator

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        before = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            return train_generator(config, progress=False)
        finally:
            torch.set_num_threads(before)


@pytest.fixture(scope="session")
def tiny_dataset(tmp_path_factory) -> Path:
    """6 training samples of 32 px (2x2 class blocks; images = class colours + noise)."""
    from tests.generate.datasets import blocky_masks, write_dataset

    return write_dataset(tmp_path_factory.mktemp("tiny_dataset"), blocky_masks(6, 32, seed=0))


@pytest.fixture(scope="session")
def large_mask_dataset(tmp_path_factory) -> Path:
    """12 samples of 64 px (4x4 class blocks), to draw 32 px layouts from."""
    from tests.generate.datasets import blocky_masks, write_dataset

    root = tmp_path_factory.mktemp("large_masks")
    return write_dataset(root, blocky_masks(12, 64, seed=3, grid=4))


@pytest.fixture(scope="session")
def conditional_run(tiny_dataset, tmp_path_factory) -> Path:
    """A tiny conditional run trained for 2 steps (checkpoint at step 2)."""
    from tests.generate.tiny import train_config

    out = tmp_path_factory.mktemp("runs") / "cond"
    _quiet_train(train_config("conditional", tiny_dataset, out))
    return out


@pytest.fixture(scope="session")
def diffusion_run(tiny_dataset, tmp_path_factory) -> Path:
    """A tiny diffusion run trained for 2 steps (checkpoint at step 2)."""
    from tests.generate.tiny import train_config

    out = tmp_path_factory.mktemp("runs") / "diff"
    _quiet_train(train_config("diffusion", tiny_dataset, out))
    return out


@pytest.fixture(scope="session")
def conditional_diffusion_run(tiny_dataset, tmp_path_factory) -> Path:
    """A tiny conditional-diffusion run trained for 2 steps (checkpoint at step 2)."""
    from tests.generate.tiny import train_config

    out = tmp_path_factory.mktemp("runs") / "cdiff"
    _quiet_train(train_config("conditional-diffusion", tiny_dataset, out))
    return out
