"""Per-sample score rows and the per-sample inputs they join.

- :data:`SCORE_COLUMNS` / :class:`SampleScoreWriter` / :func:`score_writer`: the per-sample
  scores Parquet (``per_sample.parquet`` of ``evaluate synthetic``, input of ``filter``),
  written in row groups, atomically;
- :class:`SplitTables`: one split's origin, confidence and class fractions from
  ``metadata.parquet`` or the class-percentage table;
- :class:`CaptionScores`: per-image caption consistency from ``caption_scores.parquet``;
- :func:`select_ids` (seeded subsets) and :func:`load_model` (checkpoint path or module).
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from groundsynth._optional import lazy_import
from groundsynth.classes import CLASS_NAMES, NUM_CLASSES
from groundsynth.data.reader import DatasetReader, filename_to_id
from groundsynth.errors import InputError
from groundsynth.io import atomic_path

__all__ = [
    "CONFIDENCE_COLUMNS",
    "PIXELS_PER_IMAGE",
    "SCORE_COLUMNS",
    "CaptionScores",
    "SampleScoreWriter",
    "SplitTables",
    "describe_model",
    "load_model",
    "score_writer",
    "select_ids",
]

logger = logging.getLogger(__name__)

#: Every image weighs this many pixels in the composition pixel totals, whatever its size or
#: whether its composition came from a table or a mask (so the sources mix consistently).
PIXELS_PER_IMAGE = 256 * 256
#: Metadata columns read as a sample's confidence (pseudo-label or generator confidence), in
#: order of preference; else the first numeric column whose name ends with ``confidence``.
CONFIDENCE_COLUMNS: tuple[str, ...] = ("confidence", "label_confidence", "pseudo_label_confidence")

#: Columns of the per-sample scores Parquet, with their Arrow types.
SCORE_COLUMNS: tuple[tuple[str, str], ...] = (
    ("id", "string"),
    ("split", "string"),
    ("origin", "string"),
    ("miou", "float64"),
    ("pixel_agreement", "float64"),
    *((f"iou_{c}", "float64") for c in CLASS_NAMES),
    *((f"frac_{c}", "float64") for c in CLASS_NAMES),
    ("confidence", "float64"),
    ("caption_consistency", "float64"),
    ("caption_precision", "float64"),
    ("caption_recall", "float64"),
    ("n_captions", "int32"),
)


def describe_model(model: Any) -> str | None:
    """What a ``model`` argument is, for configs: its path, or ``<ClassName object>``."""
    if model is None:
        return None
    if isinstance(model, (str, os.PathLike)):
        return os.fspath(model)
    return f"<{type(model).__name__} object>"


def load_model(model: Any, device: Any) -> tuple[Any, dict[str, Any]]:
    """``(model on device in eval mode, info)`` from a checkpoint path or a model object.

    A path is read with :func:`groundsynth.benchmark.model.load_segmenter`; an object (a
    :class:`~groundsynth.benchmark.model.Segmenter` or any ``torch.nn.Module`` mapping
    ``(N, 3, H, W)`` 0..1 images to ``(N, 7, H, W)`` logits) is used as given.
    """
    torch = lazy_import("torch")
    if isinstance(model, (str, os.PathLike)):
        from groundsynth.benchmark.model import load_segmenter

        net, info = load_segmenter(model, map_location=device)
        return net, {"checkpoint": os.fspath(model), **info}
    if not isinstance(model, torch.nn.Module):
        raise InputError(
            "model must be a segmenter checkpoint path or a torch module, "
            f"got {type(model).__name__}"
        )
    info = dict(getattr(model, "info", {}) or {})
    return model.to(device).eval(), {"checkpoint": None, **info}


def select_ids(
    reader: DatasetReader, splits: Sequence[str], limit: int | None, seed: int
) -> dict[str, list[str]]:
    """Ids per split: all of them, or a seeded uniform subset of ``limit`` over the splits."""
    ids = {s: reader.ids(s) for s in splits}
    total = sum(len(v) for v in ids.values())
    if limit is None or limit >= total:
        return ids
    if limit < 1:
        raise InputError(f"sample limit must be >= 1, got {limit}")
    chosen = np.sort(np.random.default_rng(seed).choice(total, size=limit, replace=False))
    out: dict[str, list[str]] = {}
    start = 0
    for s, v in ids.items():
        lo, hi = np.searchsorted(chosen, [start, start + len(v)])
        out[s] = [v[i - start] for i in chosen[lo:hi]]
        start += len(v)
    return out


@dataclass
class SplitTables:
    """One split's per-sample table columns: origin, confidence and class fractions."""

    index: dict[str, int]
    origin: np.ndarray | None
    confidence: np.ndarray | None
    fractions: np.ndarray | None  # (n, 7), rows may be NaN
    source: str  # "metadata", "class_percentages" or "none"

    @classmethod
    def read(cls, reader: DatasetReader, split: str) -> SplitTables:
        """Read ``split``'s rows of ``metadata.parquet`` (else its class-percentage table)."""
        cols = reader.metadata_columns()
        fracs = [f"frac_{c}" for c in CLASS_NAMES]
        conf = next((c for c in CONFIDENCE_COLUMNS if c in cols), None)
        conf = conf or next((c for c in cols if c.lower().endswith("confidence")), None)
        if cols:
            want = ["id", *(c for c in ("origin", conf) if c and c in cols)]
            has_fracs = set(fracs) <= set(cols)
            df = reader.metadata(split, columns=want + (fracs if has_fracs else []))
            index = {str(i): n for n, i in enumerate(df["id"])}
            origin = df["origin"].astype(object).to_numpy() if "origin" in df else None
            confidence = None
            if conf is not None:
                confidence = pd.to_numeric(df[conf], errors="coerce").to_numpy(np.float64)
            if has_fracs:
                return cls(index, origin, confidence, df[fracs].to_numpy(np.float64), "metadata")
            base = cls(index, origin, confidence, None, "none")
        else:
            base = cls({}, None, None, None, "none")
        pct = reader.percentages(split)
        if pct is None:
            return base
        values = pct[list(CLASS_NAMES)].to_numpy(dtype=np.float64)
        sums = values.sum(axis=1, keepdims=True)
        values = np.where(sums > 0, values / np.where(sums > 0, sums, 1), np.nan)
        if base.index:  # align the table's rows with the metadata's
            aligned = np.full((len(base.index), NUM_CLASSES), np.nan)
            for n, sid in enumerate(pct["id"]):
                if sid in base.index:
                    aligned[base.index[sid]] = values[n]
            return cls(base.index, base.origin, base.confidence, aligned, "class_percentages")
        index = {str(i): n for n, i in enumerate(pct["id"])}
        return cls(index, None, None, values, "class_percentages")

    def row(self, sample_id: str) -> int | None:
        """Row number of ``sample_id`` in the arrays, None if the tables lack it."""
        return self.index.get(sample_id)


@dataclass
class CaptionScores:
    """Per-image caption consistency aggregated from ``caption_scores.parquet`` files.

    Keeps 6 numbers per captioned image (n, consistent, precision and recall sums/counts).
    """

    table: dict[str, tuple[int, int, float, int, float, int]] = field(default_factory=dict)

    @classmethod
    def read(cls, paths: Iterable[Path], batch_rows: int = 200_000) -> CaptionScores:
        """Aggregate the ``caption_scores.parquet`` files ``paths``, batch by batch."""
        import pyarrow.parquet as pq

        out = cls()
        cols = ["image_id", "consistent", "precision", "recall"]
        for path in paths:
            for batch in pq.ParquetFile(path).iter_batches(batch_size=batch_rows, columns=cols):
                df = batch.to_pandas()
                df = df[df["consistent"].notna()]
                if df.empty:
                    continue
                df["image_id"] = [filename_to_id(i) for i in df["image_id"]]
                df["c"] = df["consistent"].astype(np.int64)
                df["pn"] = df["precision"].notna().astype(np.int64)
                df["rn"] = df["recall"].notna().astype(np.int64)
                g = df.groupby("image_id").agg(
                    n=("c", "size"),
                    c=("c", "sum"),
                    p=("precision", "sum"),
                    pn=("pn", "sum"),
                    r=("recall", "sum"),
                    rn=("rn", "sum"),
                )
                for sid, n, c, p, pn, r, rn in g.itertuples(name=None):
                    old = out.table.get(sid, (0, 0, 0.0, 0, 0.0, 0))
                    out.table[sid] = (
                        old[0] + int(n),
                        old[1] + int(c),
                        old[2] + float(p),
                        old[3] + int(pn),
                        old[4] + float(r),
                        old[5] + int(rn),
                    )
        return out

    def get(self, sample_id: str) -> tuple[float, float, float, int]:
        """(share of captions consistent, mean precision, mean recall, captions) or NaNs."""
        v = self.table.get(sample_id)
        if v is None:
            return float("nan"), float("nan"), float("nan"), 0
        n, c, p, pn, r, rn = v
        nan = float("nan")
        return c / n, p / pn if pn else nan, r / rn if rn else nan, n


class SampleScoreWriter:
    """Per-sample score rows into a Parquet file (schema :data:`SCORE_COLUMNS`), batched."""

    def __init__(self, path: str | os.PathLike[str], batch_rows: int = 10_000) -> None:
        import pyarrow as pa
        import pyarrow.parquet as pq

        self._pa = pa
        self.schema = pa.schema([(n, getattr(pa, t)()) for n, t in SCORE_COLUMNS])
        self._writer = pq.ParquetWriter(os.fspath(path), self.schema)
        self._cols: dict[str, list[Any]] = {n: [] for n, _ in SCORE_COLUMNS}
        self._batch = batch_rows
        self.rows = 0

    def add(self, columns: Mapping[str, Sequence[Any]]) -> None:
        """Add rows given column-wise (missing columns are null; NaN floats stay NaN)."""
        n = len(columns["id"])
        for name, col in self._cols.items():
            values = columns.get(name)
            col.extend([None] * n if values is None else list(values))
        self.rows += n
        if len(self._cols["id"]) >= self._batch:
            self.flush()

    def flush(self) -> None:
        """Write the buffered rows as one row group."""
        if self._cols["id"]:
            self._writer.write_table(self._pa.table(self._cols, schema=self.schema))
            self._cols = {n: [] for n in self._cols}

    def close(self) -> None:
        """Flush and close the Parquet file."""
        self.flush()
        self._writer.close()


@contextlib.contextmanager
def score_writer(path: str | os.PathLike[str], enabled: bool = True) -> Iterator[Any]:
    """A :class:`SampleScoreWriter` on a temporary file moved onto ``path`` on success
    (``None`` when not ``enabled``)."""
    if not enabled:
        yield None
        return
    with (
        atomic_path(path, suffix=".parquet") as tmp,
        contextlib.closing(SampleScoreWriter(tmp)) as writer,
    ):
        yield writer
