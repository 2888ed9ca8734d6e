"""Training regimes (which data a segmenter trains on) and the Lightning data module.

Two dataset directories take part, either layout (groundsynth contract or ARAS400k):
``real`` and, optionally, ``synthetic``. A *regime* says which samples of them train a model.

Regime syntax (``--train``; several regimes may be given)::

    REGIME := PART ("," PART)*
    PART   := SOURCE ["/" SPLIT] [":" AMOUNT]
    SOURCE := real | synthetic

* ``SPLIT`` defaults to ``train`` for ``real``; for ``synthetic`` to its only split when it has
  one, else ``synth`` when present (ARAS400k), else ``train``.
* ``AMOUNT`` (default: every sample of the split) is either
  - an integer count ``N`` -- a budget of exactly N samples (``synthetic:20000``), or
  - a decimal ratio with a point ``R`` -- R times a number of real samples: the real
    samples this regime trains on when it has a real part (``real,synthetic:0.5`` adds half
    as many synthetic samples as real ones), else -- and for ``real:R`` itself -- the size of
    the real dataset's ``train`` split (``synthetic:1.0`` trains on as many synthetic samples
    as the real set has).
  Subsets are drawn without replacement, deterministically from the run's seed; asking for
  more samples than a split has is an error.

Examples: ``real`` (real only), ``synthetic`` (synthetic only), ``real,synthetic`` (all of
both), ``real,synthetic:0.5`` (ratio), ``real:5000,synthetic:5000`` (budget).

The validation set (``--val``) is one ``SOURCE[/SPLIT]`` part (split default ``val``); it drives
early stopping and the best checkpoint. Test sets (``--test``) are ``SOURCE[/SPLIT]`` parts,
comma-separated (split default ``test``), each scored separately.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from groundsynth._optional import lazy_import
from groundsynth.data.reader import DatasetReader
from groundsynth.data.torch_dataset import SegmentationDataset
from groundsynth.errors import InputError

torch = lazy_import("torch")
L = lazy_import("lightning.pytorch")

__all__ = [
    "SOURCES",
    "DataPart",
    "Regime",
    "SegmentationDataModule",
    "default_split",
    "parse_eval_sets",
    "parse_regime",
    "resolve_part",
    "resolve_regime",
]

logger = logging.getLogger(__name__)

Source = Literal["real", "synthetic"]
#: Data sources a regime may name.
SOURCES: tuple[str, ...] = ("real", "synthetic")

_PART = re.compile(r"^(?P<source>[A-Za-z]+)(?:/(?P<split>[\w.-]+))?(?::(?P<amount>[^:]+))?$")


@dataclass(frozen=True)
class DataPart:
    """One source's share of a regime or one evaluation set.

    ``amount``: ``None`` (all), an ``int`` count, or a ``float`` ratio to the real training
    split's size. ``split``: ``None`` means the default of :func:`default_split`.
    """

    source: Source
    split: str | None = None
    amount: int | float | None = None

    def __post_init__(self) -> None:
        if self.source not in SOURCES:
            raise InputError(f"unknown data source {self.source!r}; valid: {', '.join(SOURCES)}")
        if isinstance(self.amount, bool) or (
            self.amount is not None and not isinstance(self.amount, (int, float))
        ):
            raise InputError(f"amount must be a count or a ratio, got {self.amount!r}")
        if self.amount is not None and not self.amount > 0:
            raise InputError(f"{self.source}: amount must be > 0, got {self.amount}")

    @property
    def label(self) -> str:
        """The part as written in a spec (``synthetic/synth:0.5``)."""
        text = self.source + (f"/{self.split}" if self.split else "")
        if self.amount is not None:
            text += f":{self.amount!r}" if isinstance(self.amount, float) else f":{self.amount}"
        return text


@dataclass(frozen=True)
class Regime:
    """A training regime: one or more :class:`DataPart` (each source at most once)."""

    parts: tuple[DataPart, ...]

    def __post_init__(self) -> None:
        if not self.parts:
            raise InputError("a training regime needs at least one part (e.g. 'real')")
        sources = [p.source for p in self.parts]
        if len(set(sources)) != len(sources):
            raise InputError(f"regime {self.name!r} names a source twice")

    @property
    def name(self) -> str:
        """The regime as written: ``real,synthetic:0.5``."""
        return ",".join(p.label for p in self.parts)

    @property
    def slug(self) -> str:
        """A file-name-safe form of :attr:`name`: ``real+synthetic@0.5``."""
        return self.name.replace(",", "+").replace(":", "@").replace("/", "~")

    @property
    def sources(self) -> tuple[str, ...]:
        return tuple(p.source for p in self.parts)


def _parse_part(text: str, allow_amount: bool, what: str) -> DataPart:
    m = _PART.match(text.strip())
    if not m:
        raise InputError(
            f"cannot parse {what} part {text!r}; expected SOURCE[/SPLIT]"
            + ("[:AMOUNT] (e.g. synthetic:0.5)" if allow_amount else " (e.g. real/test)")
        )
    source = m["source"].lower()
    if source not in SOURCES:
        raise InputError(f"{what} {text!r}: unknown source {source!r}; valid: {', '.join(SOURCES)}")
    raw = m["amount"]
    amount: int | float | None = None
    if raw is not None:
        if not allow_amount:
            raise InputError(f"{what} {text!r}: an amount is only allowed in --train")
        raw = raw.strip()
        try:
            amount = float(raw) if any(c in raw for c in ".eE") else int(raw)
        except ValueError:
            raise InputError(
                f"{what} {text!r}: amount {raw!r} is neither a count (5000) nor a ratio (0.5)"
            ) from None
    return DataPart(source=source, split=m["split"], amount=amount)  # type: ignore[arg-type]


def parse_regime(text: str) -> Regime:
    """Parse ``real,synthetic:0.5`` style text (module docstring) into a :class:`Regime`."""
    parts = [p for p in text.split(",") if p.strip()]
    if not parts:
        raise InputError("empty training regime; e.g. --train real,synthetic:0.5")
    return Regime(tuple(_parse_part(p, True, "training regime") for p in parts))


def parse_eval_sets(text: str, what: str = "evaluation set") -> tuple[DataPart, ...]:
    """Parse ``real`` / ``real/test,synthetic/test`` into parts (no amounts)."""
    parts = tuple(_parse_part(p, False, what) for p in text.split(",") if p.strip())
    if not parts:
        raise InputError(f"empty {what}; e.g. real")
    labels = [p.label for p in parts]
    if len(set(labels)) != len(labels):
        raise InputError(f"{what} {text!r} names a set twice")
    return parts


def default_split(reader: DatasetReader, source: str, role: str) -> str:
    """The split a part without ``/SPLIT`` uses (see the module docstring).

    ``role`` is ``train``, ``val`` or ``test``.
    """
    if role != "train" or source == "real":
        return role
    splits = reader.splits()
    if len(splits) == 1:
        return splits[0]
    return "synth" if "synth" in splits else "train"


def resolve_part(
    part: DataPart,
    readers: dict[str, DatasetReader],
    role: str,
    seed: int,
    n_reference: int | None,
) -> tuple[DatasetReader, str, list[str]]:
    """``(reader, split, ids)`` of a part; subsets are drawn with ``seed``.

    ``n_reference`` is the number of real samples a ratio amount multiplies.

    Raises:
        InputError: the source has no dataset, the split is missing or empty, or the amount
            asks for more samples than the split has.
    """
    reader = readers.get(part.source)
    if reader is None:
        raise InputError(f"{part.label!r} needs a {part.source} dataset: pass --{part.source} DIR")
    split = part.split or default_split(reader, part.source, role)
    if split not in reader.splits():
        raise InputError(
            f"{reader.root}: has no split {split!r} (for {part.label!r}); "
            f"splits: {', '.join(reader.splits()) or 'none'}"
        )
    ids = reader.ids(split)
    if not ids:
        raise InputError(f"{reader.root}: split {split!r} has no samples (for {part.label!r})")
    if part.amount is None:
        return reader, split, ids
    if isinstance(part.amount, float):
        if n_reference is None:
            raise InputError(
                f"{part.label!r}: a ratio needs the real training split's size; pass --real DIR "
                "or give a count instead (e.g. synthetic:20000)"
            )
        n = int(round(part.amount * n_reference))
    else:
        n = part.amount
    if n > len(ids):
        raise InputError(
            f"{part.label!r} asks for {n} samples but {reader.root}/{split} has {len(ids)}"
        )
    if n < 1:
        raise InputError(f"{part.label!r} selects no sample (ratio x {n_reference} real)")
    # Seeded per (seed, source) so that adding a source does not change another's subset.
    rng = np.random.default_rng([seed, SOURCES.index(part.source)])
    pick = np.sort(rng.choice(len(ids), size=n, replace=False))
    return reader, split, [ids[i] for i in pick]


def resolve_regime(
    regime: Regime, readers: dict[str, DatasetReader], seed: int
) -> list[tuple[DatasetReader, str, list[str]]]:
    """``(reader, split, ids)`` of each part of ``regime``, in its order.

    Ratios refer to the real samples of the regime when it has a real part (resolved first),
    else to the real dataset's ``train`` split (see the module docstring).
    """
    real = readers.get("real")
    n_real_split = len(real.ids("train")) if real and "train" in real.splits() else None
    chosen: dict[int, tuple[DatasetReader, str, list[str]]] = {}
    n_ref = n_real_split
    for i, part in enumerate(regime.parts):
        if part.source == "real":
            chosen[i] = resolve_part(part, readers, "train", seed, n_real_split)
            n_ref = len(chosen[i][2])
    for i, part in enumerate(regime.parts):
        if i not in chosen:
            chosen[i] = resolve_part(part, readers, "train", seed, n_ref)
    return [chosen[i] for i in range(len(regime.parts))]


@dataclass(frozen=True)
class LoaderOptions:
    """DataLoader settings: batch sizes, worker processes, pinned memory."""

    batch_size: int = 24
    eval_batch_size: int | None = None
    workers: int = 2
    pin_memory: bool = False

    def __post_init__(self) -> None:
        if self.batch_size < 1 or (self.eval_batch_size is not None and self.eval_batch_size < 1):
            raise InputError(f"batch sizes must be >= 1, got {self.batch_size}")
        if self.workers < 0:
            raise InputError(f"workers must be >= 0, got {self.workers}")


class SegmentationDataModule(L.LightningDataModule):
    """Train / val / test loaders of a regime over groundsynth or ARAS400k datasets.

    Training order is shuffled by ``seed``; evaluation order is the sorted ids. Under
    multi-process training (``world_size > 1``) the module gives its own samplers (build the
    Trainer with ``use_distributed_sampler=False``): a seeded ``DistributedSampler`` for
    training and an *unrepeated* sampler for evaluation, so every val/test sample is counted
    exactly once (Lightning's default pads evaluation shards with repeated samples).

    Args:
        readers: ``{"real": reader, "synthetic": reader}`` (either may be absent).
        regime: the training regime.
        val: the validation set (drives early stopping and the best checkpoint).
        test: test sets, scored separately (in this order).
        seed: seed of subsets and shuffling.
        loader: DataLoader options.
    """

    def __init__(
        self,
        readers: dict[str, DatasetReader],
        regime: Regime,
        val: DataPart,
        test: tuple[DataPart, ...],
        seed: int = 0,
        loader: LoaderOptions | None = None,
    ) -> None:
        super().__init__()
        self.readers = readers
        self.regime = regime
        self.val_part = val
        self.test_parts = test
        self.seed = seed
        self.loader = loader or LoaderOptions()
        self.train_selection = resolve_regime(regime, readers, seed)
        self.val_selection = resolve_part(val, readers, "val", seed, None)
        self.test_selection = [resolve_part(p, readers, "test", seed, None) for p in test]

    # --------------------------------------------------------------- descriptions
    def describe(self) -> dict[str, Any]:
        """Which dataset, split and how many samples each part uses (for manifests)."""

        def rows(parts, selection):
            return [
                {"part": p.label, "root": str(r.root), "split": s, "samples": len(ids)}
                for p, (r, s, ids) in zip(parts, selection)
            ]

        return {
            "train": rows(self.regime.parts, self.train_selection),
            "val": rows([self.val_part], [self.val_selection]),
            "test": rows(self.test_parts, self.test_selection),
        }

    def image_sizes(self) -> dict[str, tuple[str, int, int]]:
        """``{source/split: (dataset root, height, width)}`` of every train part, the val set
        and the test sets, from the first image of each (one image read per part)."""
        sizes: dict[str, tuple[str, int, int]] = {}
        parts = [*self.regime.parts, self.val_part, *self.test_parts]
        selections = [*self.train_selection, self.val_selection, *self.test_selection]
        for part, (reader, split, ids) in zip(parts, selections):
            key = f"{part.source}/{split}"
            if key not in sizes:
                h, w = reader.read_image(split, ids[0]).shape[:2]
                sizes[key] = (str(reader.root), int(h), int(w))
        return sizes

    @property
    def test_names(self) -> list[str]:
        """Names of the test sets: ``source/split``."""
        return [f"{p.source}/{s}" for p, (_, s, _) in zip(self.test_parts, self.test_selection)]

    # --------------------------------------------------------------- loaders
    def _dataset(self, selection):
        sets = [SegmentationDataset(r, s, ids=ids) for r, s, ids in selection]
        return sets[0] if len(sets) == 1 else torch.utils.data.ConcatDataset(sets)

    def _world(self) -> tuple[int, int]:
        trainer = getattr(self, "trainer", None)
        if trainer is None:
            return 1, 0
        return trainer.world_size, trainer.global_rank

    def _loader(self, dataset, train: bool):
        world, rank = self._world()
        kwargs: dict[str, Any] = {
            "batch_size": self.loader.batch_size
            if train
            else (self.loader.eval_batch_size or self.loader.batch_size),
            "num_workers": self.loader.workers,
            "pin_memory": self.loader.pin_memory,
            "persistent_workers": self.loader.workers > 0,
        }
        if world > 1:
            if train:
                sampler = torch.utils.data.DistributedSampler(
                    dataset, num_replicas=world, rank=rank, shuffle=True, seed=self.seed
                )
            else:
                from lightning.pytorch.overrides.distributed import UnrepeatedDistributedSampler

                sampler = UnrepeatedDistributedSampler(
                    dataset, num_replicas=world, rank=rank, shuffle=False
                )
            kwargs["sampler"] = sampler
        elif train:
            kwargs["shuffle"] = True
            kwargs["generator"] = torch.Generator().manual_seed(self.seed)
        return torch.utils.data.DataLoader(dataset, **kwargs)

    def train_dataloader(self):
        return self._loader(self._dataset(self.train_selection), train=True)

    def val_dataloader(self):
        return self._loader(self._dataset([self.val_selection]), train=False)

    def test_dataloader(self):
        return [self._loader(self._dataset([sel]), train=False) for sel in self.test_selection]
