"""One streaming pass over a dataset: composition, label fidelity, features, per-sample rows.

:class:`SetPass` visits the samples of one dataset (the real or the synthetic set of
:func:`groundsynth.evaluate.synthetic.evaluate_synthetic`, or the set a filter scores) split by
split, in id order:

- samples outside the *image subset* only add their composition (from ``metadata.parquet``'s
  ``frac_*`` columns or the class-percentage table; from the mask where neither has a row);
- samples in it are loaded in batches (a torch ``DataLoader``, optional worker processes); the
  segmenter's prediction is compared with the mask (:mod:`.label_fidelity`), its encoder's
  pooled features (captured by a forward hook, so the encoder runs once) and optional
  Inception features go to :class:`~groundsynth.evaluate.fidelity.FeatureStats`.

Every statistic is streaming (composition histograms, a confusion matrix, feature sums and a
bounded reservoir), per set and per ``origin`` (generator). Per-sample rows go to a
:class:`~groundsynth.evaluate.sample_scores.SampleScoreWriter`; nothing per sample is kept in
memory beyond the reader's id lists and one split's table columns.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from groundsynth._optional import lazy_import
from groundsynth.classes import CLASS_NAMES, NUM_CLASSES
from groundsynth.data.composition import class_counts
from groundsynth.data.reader import DatasetReader
from groundsynth.errors import InputError
from groundsynth.evaluate.composition import CompositionStats
from groundsynth.evaluate.fidelity import FeatureStats
from groundsynth.evaluate.label_fidelity import LabelFidelity, sample_confusions
from groundsynth.evaluate.sample_scores import (
    PIXELS_PER_IMAGE,
    CaptionScores,
    SampleScoreWriter,
    SplitTables,
)

__all__ = ["Progress", "SetPass", "SetStats"]

logger = logging.getLogger(__name__)

#: ``progress(stage, done, total)``.
Progress = Callable[[str, int, int], None]


@dataclass
class SetStats:
    """What a :class:`SetPass` accumulated (per set, and per origin)."""

    composition: CompositionStats = field(default_factory=CompositionStats)
    composition_by_origin: dict[str, CompositionStats] = field(default_factory=dict)
    fidelity: LabelFidelity | None = None
    fidelity_by_origin: dict[str, LabelFidelity] = field(default_factory=dict)
    features: FeatureStats | None = None
    features_by_origin: dict[str, FeatureStats] = field(default_factory=dict)
    halves: tuple[FeatureStats, FeatureStats] | None = None
    inception: FeatureStats | None = None
    inception_by_origin: dict[str, FeatureStats] = field(default_factory=dict)
    origins: Counter[str] = field(default_factory=Counter)
    composition_sources: Counter[str] = field(default_factory=Counter)
    images: int = 0
    image_seconds: float = 0.0


class SetPass:
    """One pass over a dataset (see the module docstring); call :meth:`run`, read ``stats``.

    ``writer`` receives a row per visited sample, or (``write_all=False``) only per sample
    run through the models. ``features=False`` skips the encoder features (label fidelity
    only, e.g. for the filter).
    """

    def __init__(
        self,
        reader: DatasetReader,
        *,
        name: str,
        default_origin: str,
        model: Any = None,
        inception: Any = None,
        device: Any = "cpu",
        batch_size: int = 32,
        workers: int = 0,
        reservoir: int = 5000,
        seed: int = 0,
        halves: bool = False,
        features: bool = True,
        writer: SampleScoreWriter | None = None,
        write_all: bool = True,
        captions: CaptionScores | None = None,
        progress: Progress | None = None,
    ) -> None:
        self.reader = reader
        self.name = name
        self.default_origin = default_origin
        self.model = model
        self.inception = inception
        self.device = device
        self.batch_size = batch_size
        self.workers = workers
        self.reservoir = reservoir
        self.seed = seed
        self.writer = writer
        self.write_all = write_all
        self.captions = captions
        self.progress = progress
        self.stats = SetStats()
        self.with_features = model is not None and features
        if model is not None:
            self.stats.fidelity = LabelFidelity()
        if self.with_features:
            self.stats.features = FeatureStats(max_samples=reservoir, seed=seed)
            if halves:
                self.stats.halves = (
                    FeatureStats(max_samples=reservoir, seed=seed + 1),
                    FeatureStats(max_samples=reservoir, seed=seed + 2),
                )
        if inception is not None:
            self.stats.inception = FeatureStats(max_samples=reservoir, seed=seed)

    # ------------------------------------------------------------------ driver
    def run(
        self, ids: Mapping[str, Sequence[str]], image_ids: Mapping[str, set[str]] | None
    ) -> SetStats:
        """Visit ``ids`` (per split); load images for ``image_ids`` (None: every id, when a
        model or Inception is set)."""
        loads = self.model is not None or self.inception is not None
        total = sum(len(v) for v in ids.values())
        done = 0
        for split, split_ids in ids.items():
            tables = SplitTables.read(self.reader, split)
            if not loads:
                with_images: list[str] = []
            elif image_ids is None:
                with_images = list(split_ids)
            else:
                chosen = image_ids.get(split, set())
                with_images = [i for i in split_ids if i in chosen]
            image_set = set(with_images)
            rest = [i for i in split_ids if i not in image_set] if image_set else list(split_ids)
            for start in range(0, len(rest), 1024):
                chunk = rest[start : start + 1024]
                self._table_rows(split, chunk, tables)
                done += len(chunk)
                self._report(done, total)
            if with_images:
                for n in self._image_rows(split, with_images, tables):
                    done += n
                    self._report(done, total)
        return self.stats

    def _report(self, done: int, total: int) -> None:
        if self.progress is not None:
            self.progress(self.name, done, total)

    # ------------------------------------------------------------------ composition only
    def _table_rows(self, split: str, chunk: list[str], tables: SplitTables) -> None:
        rows = [tables.row(i) for i in chunk]
        fr = np.full((len(chunk), NUM_CLASSES), np.nan)
        if tables.fractions is not None:
            for k, r in enumerate(rows):
                if r is not None:
                    fr[k] = tables.fractions[r]
        need = ~np.isfinite(fr).all(axis=1)
        for k in np.flatnonzero(need):
            counts = class_counts(self.reader.read_mask(split, chunk[k]))
            fr[k] = counts / max(int(counts.sum()), 1)
        if need.any():
            self.stats.composition_sources["masks"] += int(need.sum())
        if len(chunk) > need.sum():
            self.stats.composition_sources[tables.source] += int(len(chunk) - need.sum())
        origins = self._origins(rows, tables)
        self._add_composition(fr, origins)
        if self.writer is not None and self.write_all:
            self._write(split, chunk, origins, rows, tables, fr)

    # ------------------------------------------------------------------ with images
    def _image_rows(self, split: str, ids: list[str], tables: SplitTables) -> Iterable[int]:
        torch = lazy_import("torch")
        from groundsynth.data.torch_dataset import SegmentationDataset

        dataset = SegmentationDataset(self.reader, split, ids=ids)
        loader = torch.utils.data.DataLoader(
            dataset,
            batch_size=self.batch_size,
            shuffle=False,
            num_workers=self.workers,
            collate_fn=_collate,
        )
        captured: list[Any] = []
        hook = None
        encoder = getattr(getattr(self.model, "net", None), "encoder", None)
        if encoder is not None and self.with_features:
            hook = encoder.register_forward_hook(
                lambda _m, _i, out: captured.append(out[-1].mean(dim=(-2, -1)))
            )
        try:
            for images, masks, batch_ids in loader:
                t0 = time.perf_counter()
                rows = [tables.row(i) for i in batch_ids]
                origins = self._origins(rows, tables)
                scores = None
                if self.model is not None:
                    captured.clear()
                    with torch.inference_mode():
                        images_dev = images.to(self.device)
                        logits = self.model(images_dev)
                        feats = None
                        if self.with_features:
                            feats = captured[0] if captured else self._features(images_dev)
                    confusions = sample_confusions(logits, masks)
                    counts = confusions.sum(axis=2)
                    scores = self._add_fidelity(confusions, origins)
                    if feats is not None:
                        self._add_features(feats.float().cpu().numpy(), origins)
                else:
                    counts = np.stack([class_counts(m) for m in masks.numpy()])
                if self.inception is not None:
                    feats = self.inception(images).float().cpu().numpy()
                    self.stats.inception.update(feats)  # type: ignore[union-attr]
                    for o in np.unique(origins):
                        self._by_origin(self.stats.inception_by_origin, o).update(
                            feats[origins == o]
                        )
                self.stats.images += len(batch_ids)
                self.stats.image_seconds += time.perf_counter() - t0
                fr = counts / np.maximum(counts.sum(axis=1, keepdims=True), 1)
                self.stats.composition_sources["masks"] += len(batch_ids)
                self._add_composition(fr, origins)
                if self.writer is not None:
                    self._write(split, batch_ids, origins, rows, tables, fr, scores)
                yield len(batch_ids)
        finally:
            if hook is not None:
                hook.remove()

    def _features(self, images: Any) -> Any:
        features = getattr(self.model, "features", None)
        if features is None:
            raise InputError(
                f"model {type(self.model).__name__} has neither an smp encoder (net.encoder) nor "
                "a features(images) method; feature fidelity needs one"
            )
        return features(images)

    # ------------------------------------------------------------------ accumulators
    def _by_origin(self, table: dict[str, Any], origin: str) -> Any:
        if origin not in table:
            if table is self.stats.composition_by_origin:
                table[origin] = CompositionStats()
            elif table is self.stats.fidelity_by_origin:
                table[origin] = LabelFidelity()
            else:
                table[origin] = FeatureStats(max_samples=self.reservoir, seed=self.seed)
        return table[origin]

    def _origins(self, rows: list[int | None], tables: SplitTables) -> np.ndarray:
        out = np.full(len(rows), self.default_origin, dtype=object)
        if tables.origin is not None:
            for k, r in enumerate(rows):
                if r is not None and isinstance(tables.origin[r], str) and tables.origin[r]:
                    out[k] = tables.origin[r]
        self.stats.origins.update(out.tolist())
        return out

    def _add_composition(self, fr: np.ndarray, origins: np.ndarray) -> None:
        self.stats.composition.update_fractions(fr, pixels_per_image=PIXELS_PER_IMAGE)
        for o in np.unique(origins):
            stats = self._by_origin(self.stats.composition_by_origin, o)
            stats.update_fractions(fr[origins == o], pixels_per_image=PIXELS_PER_IMAGE)

    def _add_fidelity(self, confusions: np.ndarray, origins: np.ndarray) -> tuple:
        miou, iou, agreement = self.stats.fidelity.update(confusions)  # type: ignore[union-attr]
        for o in np.unique(origins):
            self._by_origin(self.stats.fidelity_by_origin, o).update(confusions[origins == o])
        return miou, iou, agreement

    def _add_features(self, feats: np.ndarray, origins: np.ndarray) -> None:
        self.stats.features.update(feats)  # type: ignore[union-attr]
        for o in np.unique(origins):
            self._by_origin(self.stats.features_by_origin, o).update(feats[origins == o])
        if self.stats.halves is not None:
            parity = (np.arange(len(feats)) + self.stats.images) % 2
            for h in (0, 1):
                if (parity == h).any():
                    self.stats.halves[h].update(feats[parity == h])

    def _write(
        self,
        split: str,
        ids: Sequence[str],
        origins: np.ndarray,
        rows: list[int | None],
        tables: SplitTables,
        fr: np.ndarray,
        scores: tuple | None = None,
    ) -> None:
        cols: dict[str, Any] = {
            "id": list(ids),
            "split": [split] * len(ids),
            "origin": origins.tolist(),
        }
        for k, c in enumerate(CLASS_NAMES):
            cols[f"frac_{c}"] = fr[:, k].tolist()
        if scores is not None:
            miou, iou, agreement = scores
            cols["miou"] = miou.tolist()
            cols["pixel_agreement"] = agreement.tolist()
            for k, c in enumerate(CLASS_NAMES):
                cols[f"iou_{c}"] = iou[:, k].tolist()
        if tables.confidence is not None:
            cols["confidence"] = [
                float(tables.confidence[r]) if r is not None else None for r in rows
            ]
        if self.captions is not None:
            caps = [self.captions.get(i) for i in ids]
            for k, name in enumerate(
                ("caption_consistency", "caption_precision", "caption_recall", "n_captions")
            ):
                cols[name] = [c[k] for c in caps]
        self.writer.add(cols)  # type: ignore[union-attr]


def _collate(batch: list[dict[str, Any]]) -> tuple[Any, Any, list[str]]:
    torch = lazy_import("torch")
    shapes = {tuple(b["image"].shape) for b in batch}
    if len(shapes) > 1:
        raise InputError(
            f"images of one batch differ in size ({sorted(shapes)}; ids "
            f"{[b['id'] for b in batch][:4]}...); use batch size 1 for datasets of mixed sizes"
        )
    return (
        torch.stack([b["image"] for b in batch]),
        torch.stack([b["mask"] for b in batch]),
        [b["id"] for b in batch],
    )
