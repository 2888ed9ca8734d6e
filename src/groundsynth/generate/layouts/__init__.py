"""Layouts: the land-cover maps a conditional generator is asked to paint.

============ ===================================================================
strategy     layouts
============ ===================================================================
train-masks  each real training mask in turn (the reference scripts' choice)
augmented    real masks flipped, rotated, and mixed by 2x2 crop-and-tile
target       chosen/composed to meet ``Class>=x`` / ``Class<=x`` constraints or to
             approach a class distribution (rare classes over-represented on purpose)
============ ===================================================================

Every layout records its provenance (source mask ids and transform); layout ``i`` depends only
on ``(seed, i)``, so generation can resume and run in any batch size or worker count.

>>> cfg = LayoutConfig(strategy="target", target="Shrub>=0.3")   # doctest: +SKIP
>>> layouts = make_layouts(cfg, "DATASET", size=256, seed=0)     # doctest: +SKIP
>>> layouts.layout(0).sources                                     # doctest: +SKIP
('train/N40E033_041_023', ...)
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from groundsynth.data.reader import DatasetReader, open_dataset
from groundsynth.errors import InputError
from groundsynth.generate.layouts.augmented import Augmented
from groundsynth.generate.layouts.base import Layout, LayoutStrategy, MaskBank
from groundsynth.generate.layouts.target import (
    Constraint,
    Target,
    parse_distribution,
    parse_target,
)
from groundsynth.generate.layouts.train_masks import TrainMasks

__all__ = [
    "LAYOUT_STRATEGIES",
    "Constraint",
    "Layout",
    "LayoutConfig",
    "LayoutStrategy",
    "MaskBank",
    "get_layout_strategy",
    "list_layout_strategies",
    "make_layouts",
    "parse_distribution",
    "parse_target",
]

#: strategy name -> class
LAYOUT_STRATEGIES: dict[str, Callable[..., LayoutStrategy]] = {
    "train-masks": TrainMasks,
    "augmented": Augmented,
    "target": Target,
}


def get_layout_strategy(name: str) -> Callable[..., LayoutStrategy]:
    """The layout strategy registered as ``name``."""
    try:
        return LAYOUT_STRATEGIES[name]
    except KeyError:
        raise InputError(
            f"unknown layout strategy {name!r}; valid: {', '.join(LAYOUT_STRATEGIES)}"
        ) from None


def list_layout_strategies() -> list[str]:
    """Names of the registered layout strategies."""
    return list(LAYOUT_STRATEGIES)


@dataclass(frozen=True)
class LayoutConfig:
    """Which layouts to generate from.

    Attributes:
        strategy: ``train-masks``, ``augmented`` or ``target``.
        split: split of the mask dataset to draw source masks from (``train``: no leakage
            of validation/test maps into synthetic training data).
        target: constraints for ``target``, e.g. ``"Shrub>=0.3, Water<=0.05"``.
        distribution: class distribution for ``target``, e.g. ``"Shrub=0.3, Barren=0.2"``.
        tile_prob: share of 2x2 crop-and-tile mosaics (``augmented``, ``target``).
        candidates: candidates tried per layout (``target``).
    """

    strategy: Literal["train-masks", "augmented", "target"] = "train-masks"
    split: str = "train"
    target: str | None = None
    distribution: str | None = None
    tile_prob: float = 0.5
    candidates: int = 32

    def __post_init__(self) -> None:
        get_layout_strategy(self.strategy)
        has_target = self.target is not None or self.distribution is not None
        if self.strategy == "target":
            if (self.target is None) == (self.distribution is None):
                raise InputError(
                    "the target strategy needs exactly one of a target (--target 'Shrub>=0.3') "
                    "or a target distribution (--target-distribution 'Shrub=0.3')"
                )
            if self.target is not None:
                parse_target(self.target)  # fail early on a bad expression
            else:
                parse_distribution(self.distribution)  # type: ignore[arg-type]
        elif has_target:
            raise InputError(f"a target is only used by the target strategy, not {self.strategy!r}")
        if not 0 <= self.tile_prob <= 1:
            raise InputError(f"tile_prob must be within 0..1, got {self.tile_prob}")
        if self.candidates < 1:
            raise InputError(f"candidates must be >= 1, got {self.candidates}")


def make_layouts(
    config: LayoutConfig,
    masks: str | os.PathLike[str] | DatasetReader,
    size: int,
    seed: int,
) -> LayoutStrategy:
    """The layout strategy of ``config`` over the masks of dataset ``masks``."""
    reader = masks if isinstance(masks, DatasetReader) else open_dataset(masks)
    bank = MaskBank(reader, config.split)
    if config.strategy == "train-masks":
        return TrainMasks(bank, size, seed)
    if config.strategy == "augmented":
        return Augmented(bank, size, seed, tile_prob=config.tile_prob)
    if config.target is not None:
        return Target(
            bank,
            size,
            seed,
            constraints=parse_target(config.target),
            candidates=config.candidates,
            tile_prob=config.tile_prob,
        )
    distribution = parse_distribution(
        config.distribution,  # type: ignore[arg-type]
        background=bank.fractions.mean(axis=0),
    )
    return Target(
        bank,
        size,
        seed,
        distribution=distribution,
        candidates=config.candidates,
        tile_prob=config.tile_prob,
    )
