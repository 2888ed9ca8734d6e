"""Tiny generator configs for tests: networks of a few thousand parameters at 32 px."""

from __future__ import annotations

from pathlib import Path

from groundsynth.generate.conditional.config import ConditionalConfig
from groundsynth.generate.conditional.spade import SpadeConfig
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


def train_config(kind: str, dataset: Path, out: Path, **kw) -> TrainConfig:
    """A 2-step, batch-2, 32 px training config of ``kind`` (options overridable)."""
    model = kw.pop("model", None)
    if model is None:
        model = tiny_conditional() if kind == "conditional" else tiny_diffusion()
    base = dict(
        image_size=32, max_steps=2, batch_size=2, checkpoint_every=2, num_workers=0, grid_rows=2
    )
    base.update(kw)
    return TrainConfig(kind=kind, dataset=str(dataset), out=str(out), model=model, **base)  # type: ignore[arg-type]
