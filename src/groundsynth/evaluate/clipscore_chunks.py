"""CLIPScore of a corpus, chunk by chunk: scored by an executor, then read back in order.

:func:`~groundsynth.evaluate.captions.evaluate_captions` with CLIPScore reads the corpus twice:

1. :func:`score_corpus` cuts its non-empty captions, in corpus order, into chunks of
   ``chunk_size`` (each caption with the image file it is about) and scores each chunk --
   here, or as a Ray task (:mod:`groundsynth.distributed`) whose worker loads the CLIP once
   per process. A chunk is scored in batches of ``batch_size`` captions, images embedded
   once per chunk (an image whose captions straddle two chunks is embedded in each), so what
   a chunk holds depends on the chunk alone. The driver records each chunk's cosines as it
   comes back (``<records>/clip/<chunk>.npz``, named by the CLIP settings and the chunk's
   captions and image paths; a record made otherwise is redone).
2. :class:`ClipStage` then takes the per-caption rows of the metrics pass in the same order
   and fills in their scores from the records, batch by batch, updating the streaming
   summary exactly as if it had scored them itself.

So the scores and summary do not depend on the executor, and an interrupted evaluation rerun
into the same folder (on either executor) scores only the chunks not recorded yet; the
records are removed once the evaluation is written.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Callable, Iterable, Iterator
from contextlib import closing
from dataclasses import dataclass, replace
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

from groundsynth.caption.corpora import CaptionRecord
from groundsynth.distributed import make_executor, worker_cached
from groundsynth.errors import InputError
from groundsynth.evaluate.clipscore import (
    ClipScoreAccumulator,
    ClipScoreConfig,
    ClipScorer,
    ClipScores,
    ImageLocator,
    clip_score,
)
from groundsynth.evaluate.image_chunks import ChunkRecords

__all__ = ["ClipChunk", "ClipStage", "clip_records", "score_chunk", "score_corpus"]

logger = logging.getLogger(__name__)

#: The records' group (subfolder) and how many decoded image embeddings a chunk keeps.
_GROUP = "clip"
_CACHE = 4096


@dataclass(frozen=True)
class ClipChunk:
    """Consecutive non-empty captions, each with its image file (None: not found)."""

    index: int
    texts: tuple[str, ...]
    paths: tuple[str | None, ...]

    def fingerprint(self) -> str:
        """A digest of the captions and image paths: what a record must have been made of."""
        h = hashlib.sha256()
        for text, path in zip(self.texts, self.paths):
            h.update(f"{text}\x00{path or ''}\x01".encode())
        return h.hexdigest()


@dataclass(frozen=True)
class _Task:
    config: ClipScoreConfig
    chunk: ClipChunk


def clip_records(folder: Path | None, config: ClipScoreConfig) -> ChunkRecords:
    """The chunk records of a CLIPScore pass (in ``folder``, else a temporary folder)."""
    key = {
        "model": config.model,
        "pretrained": config.pretrained,
        "library": config.library,
        "long_captions": config.long_captions,
        "batch_size": config.batch_size,
    }
    return ChunkRecords(folder, key)


def chunks_of(
    records: Iterable[CaptionRecord], locator: ImageLocator, size: int
) -> Iterator[ClipChunk]:
    """The corpus's non-empty captions (stripped) with their image files, ``size`` a chunk."""
    texts: list[str] = []
    paths: list[str | None] = []
    index = 0
    for rec in records:
        text = rec.text.strip()
        if not text:
            continue
        path = locator.find(rec.image_id, rec.split)
        texts.append(text)
        paths.append(None if path is None else os.path.abspath(path))  # workers run elsewhere
        if len(texts) == size:
            yield ClipChunk(index, tuple(texts), tuple(paths))
            texts, paths, index = [], [], index + 1
    if texts:
        yield ClipChunk(index, tuple(texts), tuple(paths))


def score_chunk(chunk: ClipChunk, scorer: ClipScorer) -> dict[str, np.ndarray]:
    """One chunk's record: per caption whether its image was embedded (``scored``), the
    cosine (NaN for a skipped long caption) and ``long``; the CLIP's context length and
    the read errors of unreadable images (one per batch that met them)."""
    from groundsynth.data.reader import read_rgb

    n, batch = len(chunk.texts), scorer.config.batch_size
    scored, long = np.zeros(n, dtype=bool), np.zeros(n, dtype=bool)
    cosine = np.full(n, np.nan)
    unreadable: list[str] = []
    context = -1
    cache: dict[str, np.ndarray] = {}
    for start in range(0, n, batch):
        part = range(start, min(start + batch, n))
        found = [chunk.paths[i] for i in part if chunk.paths[i] is not None]
        new = [p for p in dict.fromkeys(found) if p not in cache]
        if len(cache) + len(new) > _CACHE:
            cache.clear()
        images, ok = [], []
        for p in new:
            try:
                images.append(read_rgb(p))  # type: ignore[arg-type]
                ok.append(p)
            except InputError as exc:
                unreadable.append(str(exc))
        if ok:
            cache.update(zip(ok, scorer.encode_images(images), strict=True))  # type: ignore[arg-type]
        idx = [i for i in part if chunk.paths[i] in cache]
        if idx:
            emb = np.stack([cache[chunk.paths[i]] for i in idx])  # type: ignore[index]
            res = scorer.score_embeddings([chunk.texts[i] for i in idx], emb)
            scored[idx], long[idx], cosine[idx] = True, res.long, res.cosine
            context = scorer.context_length
    return {
        "ids": np.array([chunk.fingerprint()]),
        "scored": scored,
        "long": long,
        "cosine": cosine,
        "context_length": np.array(context, dtype=np.int64),
        "unreadable": np.array(unreadable, dtype=str),
    }


def for_workers(config: ClipScoreConfig) -> ClipScoreConfig:
    """``config`` with its local model files (open_clip config JSON, checkpoint, transformers
    folder) as absolute paths, so a worker started in another folder finds them."""

    def absolute(name: str | None) -> str | None:
        return os.path.abspath(name) if name and Path(name).exists() else name

    return replace(config, model=absolute(config.model), pretrained=absolute(config.pretrained))


def _score_on_worker(task: _Task) -> dict[str, Any]:
    """A worker's task: the chunk's record, with the CLIP loaded once per worker process."""
    c = task.config
    identity = (c.model, c.pretrained, c.library, c.long_captions, c.batch_size, c.device)

    def build() -> ClipScorer:
        scorer = ClipScorer(c)
        scorer.load()
        return scorer

    scorer, loaded = worker_cached("clipscore model", identity, build)
    return {"record": score_chunk(task.chunk, scorer), "pid": os.getpid(), "model_loaded": loaded}


def _score_here(task: _Task, scorer: ClipScorer) -> dict[str, Any]:
    return {"record": score_chunk(task.chunk, scorer), "pid": os.getpid(), "model_loaded": False}


def _label(task: _Task) -> str:
    return f"CLIPScore chunk {task.chunk.index} ({len(task.chunk.texts)} captions)"


def score_corpus(
    chunks: Iterable[ClipChunk],
    records: ChunkRecords,
    scorer: ClipScorer,
    progress: Callable[[int], None] | None = None,
) -> dict[str, Any]:
    """Score and record the chunks not recorded yet, with the executor ``scorer.config``
    names; returns the executor's description (tasks, worker processes, model loads)."""
    cfg = scorer.config
    remote = for_workers(cfg)
    done = 0

    def todo() -> Iterator[_Task]:
        nonlocal done
        for chunk in chunks:
            if records.has(_GROUP, chunk.index, (chunk.fingerprint(),)):
                done += len(chunk.texts)
            else:
                yield _Task(remote, chunk)

    pids: set[int] = set()
    tasks = loads = 0
    with make_executor(cfg.executor, cfg.ray_address, cfg.ray_cpus, cfg.ray_gpus) as executor:
        fn: Callable[[_Task], dict[str, Any]] = (
            partial(_score_here, scorer=scorer) if executor.in_process else _score_on_worker
        )
        work = executor.map_unordered(fn, todo(), label=_label)
        with closing(work):
            for task, result in work:
                records.write(_GROUP, task.chunk.index, result["record"])
                tasks += 1
                pids.add(result["pid"])
                loads += bool(result["model_loaded"])
                done += len(task.chunk.texts)
                if progress is not None:
                    progress(done)
        described = executor.describe()
    if not executor.in_process:
        described |= {"tasks": tasks, "worker_processes": len(pids), "model_loads": loads}
    logger.info("CLIPScore: %d chunk(s) scored (%s)", tasks, json.dumps(described))
    return described


class ClipStage:
    """Takes the metrics pass's per-caption rows, in corpus order, and emits them with their
    CLIPScore from the chunk records, a batch at a time (the batches the chunks were scored
    in), updating the streaming summary."""

    def __init__(
        self, config: ClipScoreConfig, records: ChunkRecords, emit: Callable[[dict], None]
    ) -> None:
        self.config, self.records, self.emit = config, records, emit
        self.acc = ClipScoreAccumulator(config)
        self.unreadable = 0
        self._pending: list[dict[str, Any]] = []
        self._chunk, self._at = -1, 0  # current chunk, position of the next caption in it
        self._record: dict[str, np.ndarray] = {}

    def add(self, row: dict[str, Any]) -> None:
        """Add the row of the next non-empty caption."""
        if self._at == len(self._record.get("scored", ())):  # the next chunk begins
            self._chunk, self._at = self._chunk + 1, 0
            self._record = self.records.read(_GROUP, self._chunk)
            for message in self._record["unreadable"].tolist():
                self.unreadable += 1
                logger.warning("CLIPScore: %s", message)
        self._pending.append(row)
        self._at += 1
        if len(self._pending) >= self.config.batch_size or self._at == len(self._record["scored"]):
            self.flush()

    def flush(self) -> None:
        """Emit the pending rows (a batch, or the end of a chunk) with their scores."""
        if not self._pending:
            return
        pending, self._pending = self._pending, []
        part = slice(self._at - len(pending), self._at)
        rec = {k: self._record[k][part] for k in ("scored", "long", "cosine")}
        idx = np.flatnonzero(rec["scored"])
        if len(idx):
            cos, long = rec["cosine"][idx], rec["long"][idx]
            scores = clip_score(cos, self.config.weight)
            self.acc.context_length = int(self._record["context_length"])
            streams = np.array([pending[i]["stream"] for i in idx])
            for stream in dict.fromkeys(streams.tolist()):
                m = streams == stream
                self.acc.update(stream, ClipScores(scores[m], long[m], cos[m]))
            for j, i in enumerate(idx):
                pending[i]["clip_score"] = None if np.isnan(scores[j]) else float(scores[j])
                pending[i]["clip_long"] = bool(long[j])
        for i, row in enumerate(pending):
            if not rec["scored"][i]:
                self.acc.missing(row["stream"])
            self.emit(row)

    def summary(self) -> dict[str, Any]:
        out = self.acc.compute()
        out["unreadable_images"] = self.unreadable
        return out
