"""Tiny generator configs for tests: networks of a few thousand parameters at 32 px."""

from __future__ import annotations

from pathlib import Path

from groundsynth.generate.conditional.config import ConditionalConfig
from groundsynth.generate.conditional.spade import SpadeConfig
from groundsynth.generate.conditional_diffusion import ConditionalDiffusionConfig
from groundsynth.generate.config import TrainConfig
from groundsynth.generate.diffusion import DiffusionConfig


def tiny_conditional(**kw) -> ConditionalConfig:
    """A SPADE generator and U-Net discriminator for 32 px images (depth 3: 4 px start)."""
    gen = kw.pop("generator", None) or SpadeConfig(
        width=4, max_channels=16, depth=3, z_dim=4, spade_hidden=8
    )
    kw.setdefault("d_width", 4)
    kw.setdefault("d_max_channels", 16)
    return ConditionalConfig(generator=gen, **kw)


def tiny_diffusion(**kw) -> DiffusionConfig:
    """A diffusers UNet2DModel with block_out_channels (4, 8), sampled in 2 steps."""
    kw.setdefault("ema_decay", 0.9)
    return DiffusionConfig(block_out_channels=(4, 8), layers_per_block=1, inference_steps=2, **kw)


def tiny_conditional_diffusion(**kw) -> ConditionalDiffusionConfig:
    """:func:`tiny_diffusion`'s U-Net with the map as 7 more input channels."""
    kw.setdefault("ema_decay", 0.9)
    kw.setdefault("block_out_channels", (4, 8))
    kw.setdefault("layers_per_block", 1)
    kw.setdefault("inference_steps", 2)
    return ConditionalDiffusionConfig(**kw)


TINY_MODELS = {
    "conditional": tiny_conditional,
    "diffusion": tiny_diffusion,
    "conditional-diffusion": tiny_conditional_diffusion,
}


def train_config(kind: str, dataset: Path, out: Path, **kw) -> TrainConfig:
    """A 2-step, batch-2, 32 px training config of ``kind``, without learning curves (options
    overridable; tests/generate/test_curves.py turns the curves on)."""
    model = kw.pop("model", None)
    if model is None:
        model = TINY_MODELS[kind]()
    base = dict(
        image_size=32, max_steps=2, batch_size=2, checkpoint_every=2, num_workers=0, grid_rows=2
    )
    base["eval_every"] = 0  # no learning curves unless asked for
    base.update(kw)
    return TrainConfig(kind=kind, dataset=str(dataset), out=str(out), model=model, **base)  # type: ignore[arg-type]


def wider_spade(**kw) -> ConditionalConfig:
    """:func:`tiny_conditional` with a generator wide enough to learn 32 px maps in 100-200
    steps (width 8, 32 channels at most, SPADE hidden 16) -- the learning tests' model."""
    gen = SpadeConfig(width=8, max_channels=32, depth=3, z_dim=4, spade_hidden=16)
    return tiny_conditional(generator=gen, **kw)


def learning_config(kind: str, dataset: Path, out: Path, steps: int, model, **kw) -> TrainConfig:
    """A learning test's run: ``steps`` steps of batch 4 without augmentation, one checkpoint
    at the end, no sample grid."""
    base = dict(max_steps=steps, checkpoint_every=steps, batch_size=4, augment=False, grid_rows=0)
    base.update(kw)
    return train_config(kind, dataset, out, model=model, **base)
