"""Shared fixtures of the benchmark tests: a tiny built dataset and a tiny segmenter."""

from __future__ import annotations

from pathlib import Path

import pytest

#: The tiniest encoder that builds offline with every architecture (timm's test network).
TINY = {"encoder": "tu-test_resnet", "encoder_depth": 3, "decoder_width": 4}


@pytest.fixture(scope="session")
def tiny_dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 64 px groundsynth dataset (38 train / 5 val / 5 test); treat it as read-only."""
    from groundsynth.data.build import BuildConfig, build_dataset
    from tests.data.rasters import make_pair

    tmp = tmp_path_factory.mktemp("bench_data")
    lc, img = make_pair(tmp)
    out = tmp / "ds"
    build_dataset(
        BuildConfig(
            imagery=(str(img),), landcover=(str(lc),), out=str(out), size=64, block_size=1, buffer=0
        )
    )
    return out


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A randomly initialised tiny Unet segmenter checkpoint."""
    import torch

    from groundsynth.benchmark.model import build_model, save_segmenter

    torch.manual_seed(0)
    model = build_model("unet", **TINY)
    path = tmp_path_factory.mktemp("bench_ckpt") / "tiny-unet.pt"
    save_segmenter(path, model, {"name": "tiny-unet"})
    return path


@pytest.fixture(scope="session")
def sample_world_dataset(tmp_path_factory: pytest.TempPathFactory, sample_world_512) -> Path:
    """A 64 px dataset built from the 512² sample world; treat it as read-only."""
    from groundsynth.data.build import BuildConfig, build_dataset

    out = tmp_path_factory.mktemp("bench_world") / "ds"
    world = sample_world_512
    build_dataset(
        BuildConfig(
            imagery=(str(world.imagery),), landcover=(str(world.landcover),), out=str(out),
            size=64, block_size=1, buffer=0, max_label_nodata=0.2,
        )
    )  # fmt: skip
    return out
