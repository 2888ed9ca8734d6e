"""One streaming pass over a dataset: composition, label fidelity, features, per-sample rows.

:class:`SetPass` visits the samples of one dataset (the real or the synthetic set of
:func:`groundsynth.evaluate.synthetic.evaluate_synthetic`, or the set a filter scores) split by
split, in id order:

- samples outside the *image subset* only add their composition (from ``metadata.parquet``'s
  ``frac_*`` columns or the class-percentage table; from the mask where neither has a row);
- samples in it are run through the models chunk by chunk (:mod:`.image_chunks`: here, with
  a torch ``DataLoader`` and optional worker processes, or as Ray tasks); the segmenter's
  prediction is compared with the mask (:mod:`.label_fidelity`), its encoder's pooled
  features and optional Inception features go to
  :class:`~groundsynth.evaluate.fidelity.FeatureStats`. The chunks' records are then read
  back in order, batch by batch, so the statistics do not depend on where or in which order
  chunks were computed.

Every statistic is streaming (composition histograms, a confusion matrix, feature sums and a
bounded reservoir), per set and per ``origin`` (generator). Per-sample rows go to a
:class:`~groundsynth.evaluate.sample_scores.SampleScoreWriter`; nothing per sample is kept in
memory beyond the reader's id lists and one split's table columns.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from groundsynth.classes import CLASS_NAMES, NUM_CLASSES
from groundsynth.data.composition import class_counts
from groundsynth.data.reader import DatasetReader
from groundsynth.evaluate.composition import CompositionStats
from groundsynth.evaluate.fidelity import FeatureStats, HalfSplits
from groundsynth.evaluate.image_chunks import (
    ChunkRecords,
    Execution,
    Record,
    batches_of,
    score_chunks,
)
from groundsynth.evaluate.label_fidelity import LabelFidelity
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
    #: the real halves' Fréchet distance over several random splits
    splits: HalfSplits | None = None
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
    only, e.g. for the filter). ``execution`` says where the image chunks run (default: here,
    in chunks of 256); ``records`` is a folder to keep their records in, so that a rerun
    resumes (default: a temporary folder, removed at the end).
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
        execution: Execution | None = None,
        records: Path | None = None,
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
        self.execution = execution or Execution()
        self.records = records
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
                self.stats.splits = HalfSplits(seed=seed)
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

        def tick(n: int) -> None:
            nonlocal done
            done += n
            self._report(done, total)

        size = self.execution.chunk_size
        plan: dict[str, tuple[list[str], list[tuple[str, int, tuple[str, ...]]]]] = {}
        for split, split_ids in ids.items():
            if not loads:
                with_images: list[str] = []
            elif image_ids is None:
                with_images = list(split_ids)
            else:
                chosen = image_ids.get(split, set())
                with_images = [i for i in split_ids if i in chosen]
            image_set = set(with_images)
            rest = [i for i in split_ids if i not in image_set] if image_set else list(split_ids)
            chunks = [
                (split, k, tuple(with_images[start : start + size]))
                for k, start in enumerate(range(0, len(with_images), size))
            ]
            plan[split] = (rest, chunks)
        with ChunkRecords(self.records, self._record_key()) as records:
            chunks = [c for _, cs in plan.values() for c in cs]
            todo = [c for c in chunks if not records.has(*c)]
            if len(todo) < len(chunks):
                logger.info(
                    "%s: %d of %d image chunk(s) recorded by an earlier run",
                    self.name,
                    len(chunks) - len(todo),
                    len(chunks),
                )
            tick(sum(len(ids) for _, _, ids in chunks) - sum(len(ids) for _, _, ids in todo))
            score_chunks(
                self.reader,
                todo,
                records,
                self.execution,
                model=self.model,
                inception=self.inception,
                device=self.device,
                batch_size=self.batch_size,
                workers=self.workers,
                features=self.with_features,
                tick=tick,
            )
            for split, (rest, split_chunks) in plan.items():
                tables = SplitTables.read(self.reader, split)
                for start in range(0, len(rest), 1024):
                    chunk = rest[start : start + 1024]
                    self._table_rows(split, chunk, tables)
                    tick(len(chunk))
                for _, k, _ in split_chunks:
                    self._image_rows(split, records.read(split, k), tables)
        return self.stats

    def _record_key(self) -> dict[str, Any]:
        """What makes a chunk's record: a record made otherwise is not reused."""
        models = self.execution.models
        return {
            "model_sha256": models.model_sha256 if models else None,
            "inception_sha256": models.inception_sha256 if models else None,
            "batch_size": self.batch_size,
            "features": self.with_features,
        }

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
    def _image_rows(self, split: str, record: Record, tables: SplitTables) -> None:
        """Replay one chunk's record, batch by batch, into the statistics and the writer."""
        self.stats.image_seconds += float(record["seconds"])
        for batch_ids, arrays in batches_of(record):
            rows = [tables.row(i) for i in batch_ids]
            origins = self._origins(rows, tables)
            scores = None
            if "confusions" in arrays:
                confusions = arrays["confusions"]
                counts = confusions.sum(axis=2)
                scores = self._add_fidelity(confusions, origins)
                if "features" in arrays:
                    self._add_features(arrays["features"], origins)
            else:
                counts = arrays["counts"]
            if "inception" in arrays:
                feats = arrays["inception"]
                self.stats.inception.update(feats)  # type: ignore[union-attr]
                for o in np.unique(origins):
                    self._by_origin(self.stats.inception_by_origin, o).update(feats[origins == o])
            self.stats.images += len(batch_ids)
            fr = counts / np.maximum(counts.sum(axis=1, keepdims=True), 1)
            self.stats.composition_sources["masks"] += len(batch_ids)
            self._add_composition(fr, origins)
            if self.writer is not None:
                self._write(split, batch_ids, origins, rows, tables, fr, scores)

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
        if self.stats.splits is not None:
            self.stats.splits.update(feats)
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
