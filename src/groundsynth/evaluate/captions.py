"""Caption metrics of a corpus, streamed: diversity and caption <-> map consistency.

:func:`evaluate_captions` reads any corpus :mod:`groundsynth.caption.corpora` knows
(captions tables, ARAS400k CSVs, Karpathy JSON, Sydney-Captions text), streams it once and
returns a summary:

- diversity (:mod:`groundsynth.evaluate.caption_diversity`): redundancy, distinct-1..4,
  vocabulary, mean length — per stream and pooled;
- consistency (:mod:`groundsynth.evaluate.caption_consistency`), for captions whose image
  composition is known (from the table's percentage columns or ``compositions``);
- how often each class is named, per stream (also without compositions);
- optionally CLIPScore (:mod:`groundsynth.evaluate.clipscore`) with ``clip``: images come
  from ``images`` (a dataset directory or a folder of image files) or, when ``source`` is a
  dataset directory, from it; captions whose image is not found are counted, not scored.
  The captions are scored chunk by chunk first, here or on Ray (``clip.executor``), and
  recorded under ``out_dir/.clipscore/`` until the metrics are written, so an interrupted
  evaluation rerun into the same folder resumes (:mod:`.clipscore_chunks`).

With ``out_dir`` it writes ``caption_metrics.json`` (the summary) and
``caption_scores.parquet`` (one row per caption: ids, stream, split, words, classes named /
negated / hallucinated, and the consistency scores, null where no composition is known;
with CLIPScore also ``clip_score`` and ``clip_long``), both atomically. Consistency is agreement with the land-cover *map*; WorldCover itself is
about 77 % accurate, so it is not agreement with the ground.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from groundsynth.caption.corpora import CaptionRecord, detect_format, read_captions
from groundsynth.classes import CLASS_NAMES, NUM_CLASSES
from groundsynth.errors import InputError
from groundsynth.evaluate.caption_consistency import (
    ConsistencyAccumulator,
    ConsistencySettings,
    score_caption,
)
from groundsynth.evaluate.caption_diversity import CaptionDiversity
from groundsynth.evaluate.caption_lexicon import load_lexicon
from groundsynth.evaluate.clipscore import ClipScoreConfig, ClipScorer, ImageLocator
from groundsynth.evaluate.clipscore_chunks import ClipStage, chunks_of, clip_records, score_corpus
from groundsynth.io import atomic_path, write_json

__all__ = ["METRICS_JSON", "SCORES_PARQUET", "evaluate_captions", "load_compositions"]

logger = logging.getLogger(__name__)

METRICS_JSON = "caption_metrics.json"
SCORES_PARQUET = "caption_scores.parquet"
#: Where CLIPScore keeps its chunk records until the metrics are written.
CLIP_RECORDS = ".clipscore"

Compositions = Mapping[str, Sequence[float]]


def _stem(image_id: str) -> str:
    return image_id.rsplit(".", 1)[0] if "." in image_id else image_id


def load_compositions(source: str | os.PathLike[str] | Compositions) -> dict[str, tuple]:
    """Image id -> class shares, from a mapping, a class-percentage CSV, a
    ``metadata.parquet`` (``frac_<class>`` columns) or a dataset directory holding either.

    Ids are also keyed by their stem ("a.png" and "a"), so tables naming files match
    corpora naming images and vice versa.
    """
    import pandas as pd

    if isinstance(source, Mapping):
        table = {str(k): tuple(float(x) for x in v) for k, v in source.items()}
    else:
        path = Path(source)
        if path.is_dir():
            meta = path / "metadata.parquet"
            files = [meta] if meta.is_file() else sorted((path / "class_percentages").glob("*.csv"))
            if not files:
                raise InputError(f"{path}: no metadata.parquet or class_percentages/*.csv")
        elif path.is_file():
            files = [path]
        else:
            raise InputError(f"compositions file not found: {path}")
        table = {}
        for f in files:
            df = pd.read_parquet(f) if f.suffix.lower() == ".parquet" else pd.read_csv(f)
            id_col = next((c for c in ("filename", "id", "image_id") if c in df.columns), None)
            cols = [c for c in CLASS_NAMES if c in df.columns]
            if len(cols) < NUM_CLASSES:
                cols = [f"frac_{c}" for c in CLASS_NAMES if f"frac_{c}" in df.columns]
            if id_col is None or len(cols) < NUM_CLASSES:
                raise InputError(
                    f"{f}: need an id column (filename/id/image_id) and the class columns "
                    f"{', '.join(CLASS_NAMES)} (or frac_<class>); got {list(df.columns)}"
                )
            values = df[cols].to_numpy(dtype=float).tolist()
            table.update(zip(df[id_col].astype(str), map(tuple, values), strict=True))
    for k in list(table):
        table.setdefault(_stem(k), table[k])
    return table


_SCHEMA_FIELDS: tuple[tuple[str, str], ...] = (
    ("caption_id", "string"),
    ("image_id", "string"),
    ("stream", "string"),
    ("split", "string"),
    ("n_words", "int32"),
    ("mentioned", "string"),
    ("negated", "string"),
    ("hallucinated", "string"),
    ("precision", "float64"),
    ("recall", "float64"),
    ("hallucination", "bool_"),
    ("dominant_named", "bool_"),
    ("n_quantities", "int32"),
    ("n_quantities_true", "int32"),
    ("negation_conflict", "bool_"),
    ("consistent", "bool_"),
)


_CLIP_FIELDS: tuple[tuple[str, str], ...] = (("clip_score", "float64"), ("clip_long", "bool_"))


class _ScoreWriter:
    """Per-caption rows into a Parquet file, in row groups of ``batch`` rows."""

    def __init__(self, path: Path, batch: int, fields: Sequence[tuple[str, str]]) -> None:
        import pyarrow as pa
        import pyarrow.parquet as pq

        self._pa = pa
        self.schema = pa.schema([(n, getattr(pa, t)()) for n, t in fields])
        self._writer = pq.ParquetWriter(path, self.schema)
        self._cols: dict[str, list[Any]] = {n: [] for n, _ in fields}
        self._batch = batch
        self.rows = 0

    def add(self, row: dict[str, Any]) -> None:
        for name, col in self._cols.items():
            col.append(row.get(name))
        self.rows += 1
        if len(self._cols["caption_id"]) >= self._batch:
            self.flush()

    def flush(self) -> None:
        if self._cols["caption_id"]:
            self._writer.write_table(self._pa.table(self._cols, schema=self.schema))
            self._cols = {n: [] for n in self._cols}

    def close(self) -> None:
        self.flush()
        self._writer.close()


def _locator(source: str | os.PathLike[str], images: str | os.PathLike[str] | None) -> ImageLocator:
    if images is not None:
        return ImageLocator(images)
    from groundsynth.data.reader import detect_layout

    try:
        detect_layout(Path(source))
    except InputError:
        raise InputError(
            f"CLIPScore needs the images of {source}: give an image folder or a dataset "
            "directory (--images DIR), or evaluate a dataset directory"
        ) from None
    return ImageLocator(source)


def _names(indices: Sequence[int] | frozenset[int]) -> str:
    return ";".join(CLASS_NAMES[i] for i in sorted(indices))


def evaluate_captions(
    source: str | os.PathLike[str],
    out_dir: str | os.PathLike[str] | None = None,
    *,
    compositions: str | os.PathLike[str] | Compositions | None = None,
    streams: Sequence[str] | None = None,
    format: str | None = None,
    lexicon: str | os.PathLike[str] | None = None,
    settings: ConsistencySettings | None = None,
    batch_size: int = 20_000,
    clip: ClipScoreConfig | None = None,
    images: str | os.PathLike[str] | None = None,
    progress: Callable[[int], None] | None = None,
) -> dict[str, Any]:
    """Diversity and consistency metrics of the captions in ``source``; see the module doc.

    ``compositions`` (image id -> class shares, or a file / dataset directory, see
    :func:`load_compositions`) overrides the shares a captions table carries. ``streams``
    keeps only those streams. Empty captions are skipped and counted. ``clip`` adds
    CLIPScore (images from ``images`` or the dataset ``source``; scored first, chunk by chunk,
    on the executor ``clip.executor`` names). ``progress`` is called with the number of
    captions read so far, every 1,000 captions and at the end (with CLIPScore, first with the
    number scored, as each chunk is done).
    """
    fmt = format or detect_format(source)
    comps = None if compositions is None else load_compositions(compositions)
    lex = load_lexicon(lexicon)
    settings = settings or ConsistencySettings()
    diversity = CaptionDiversity(batch_size=batch_size)
    consistency = ConsistencyAccumulator(settings)
    mentions: dict[str, np.ndarray] = {}
    seen_images: set[str] = set()
    skipped = {"empty": 0, "no_composition": 0}
    scored = 0

    fields = _SCHEMA_FIELDS + (_CLIP_FIELDS if clip is not None else ())
    out = None if out_dir is None else Path(out_dir)
    read = 0
    with contextlib.ExitStack() as stack:
        records = None
        if clip is not None:
            locator = _locator(source, images)
            folder = None if out is None else out / CLIP_RECORDS
            records = stack.enter_context(clip_records(folder, clip))
            chunks = chunks_of(
                read_captions(source, format=fmt, streams=streams), locator, clip.chunk_size
            )
            score_corpus(chunks, records, ClipScorer(clip), progress)
        writer: _ScoreWriter | None = None
        if out is not None:
            out.mkdir(parents=True, exist_ok=True)
            tmp = stack.enter_context(atomic_path(out / SCORES_PARQUET, suffix=".parquet"))
            writer = stack.enter_context(contextlib.closing(_ScoreWriter(tmp, batch_size, fields)))
        emit = writer.add if writer is not None else (lambda row: None)
        stage = ClipStage(clip, records, emit) if clip is not None and records is not None else None
        rec: CaptionRecord
        for rec in read_captions(source, format=fmt, streams=streams):
            read += 1
            if progress is not None and read % 1000 == 0:
                progress(read)
            text = rec.text.strip()
            if not text:
                skipped["empty"] += 1
                continue
            diversity.update((text,), rec.stream)
            seen_images.add(rec.image_id)
            parsed = lex.parse(text)
            counts = mentions.get(rec.stream)
            if counts is None:
                counts = mentions[rec.stream] = np.zeros(NUM_CLASSES, dtype=np.int64)
            for c in parsed.mentioned:
                counts[c] += 1
            comp = rec.composition
            if comps is not None:
                comp = comps.get(rec.image_id, comps.get(_stem(rec.image_id)))
            row: dict[str, Any] = {
                "caption_id": rec.caption_id,
                "image_id": rec.image_id,
                "stream": rec.stream,
                "split": rec.split,
                "n_words": parsed.n_words,
                "mentioned": _names(parsed.mentioned),
                "negated": _names(parsed.negated),
            }
            if comp is not None:
                score = score_caption(parsed, comp, settings)
                consistency.update(rec.stream, score)
                row.update(score.row())
                scored += 1
            elif comps is not None or fmt == "table":
                skipped["no_composition"] += 1
            if stage is not None:
                stage.add(row)
            else:
                emit(row)
        if stage is not None:
            stage.flush()
    if progress is not None:
        progress(read)

    div = diversity.compute()
    summary: dict[str, Any] = {
        "source": str(source),
        "format": fmt,
        "captions": div["pooled"]["captions"],
        "images": len(seen_images),
        "streams": sorted(mentions),
        "skipped": skipped,
        "diversity": div,
        "consistency": consistency.compute() if scored else None,
        "captions_scored_for_consistency": scored,
        "mentions": {
            s: dict(zip(CLASS_NAMES, (int(v) for v in c), strict=True))
            for s, c in sorted(mentions.items())
        },
        "clipscore": stage.summary() if stage is not None else None,
        "lexicon": lex.source,
        "notes": [
            "redundancy = 1 - distinct/total over exact strings (surrounding whitespace "
            "stripped); distinct-n over lower-cased words, n-grams within a caption",
            "consistency is agreement with the land-cover map (WorldCover ~77 % accurate), "
            "not with the ground",
        ],
    }
    if skipped["no_composition"]:
        logger.warning(
            "%d captions have no composition; they are not scored for consistency",
            skipped["no_composition"],
        )
    if out is not None:
        write_json(out / METRICS_JSON, summary)
        shutil.rmtree(out / CLIP_RECORDS, ignore_errors=True)  # written: nothing to resume
        logger.info("wrote %s and %s", out / METRICS_JSON, out / SCORES_PARQUET)
    return summary
