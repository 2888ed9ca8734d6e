"""The image work of a scoring pass, chunk by chunk: what the segmenter and Inception make of
each image, as chunk records an executor's tasks return and the pass replays in order.

A :class:`~groundsynth.evaluate.set_pass.SetPass` cuts the ids it runs through the models
into chunks of ``chunk_size`` consecutive ids of a split, and each chunk into batches of
``batch_size`` (cut at the chunk's end, so what a chunk holds depends on the chunk alone).
Per batch, :func:`score_batch` keeps what the statistics need: the per-sample confusion
matrices of prediction vs mask, the encoder's pooled features, Inception features (or, with
no segmenter, the masks' class counts). A chunk's batches make one record, written by the
driver -- whichever executor computed it -- and read back in chunk order by the pass, which
feeds its streaming statistics and the per-sample table exactly as it would have batch by
batch. So the outputs do not depend on which executor ran a chunk, or in which order chunks
finished.

Records live in ``<records>/<split>/<chunk>.npz``; each names its ids and what made it (the
segmenter's and Inception weights' digests, batch size, features), and one made otherwise is
redone. A pass given a records folder resumes from it; without one it records in a temporary
folder, removed when the pass ends.

On Ray (:mod:`groundsynth.distributed`) each chunk is one task: the worker opens the
dataset, loads the segmenter (from its checkpoint) and Inception once per process
(:func:`~groundsynth.distributed.worker_cached`), reads the chunk's images and returns its
record.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import closing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from groundsynth._optional import lazy_import
from groundsynth.data.composition import class_counts
from groundsynth.data.reader import DatasetReader, open_dataset
from groundsynth.distributed import LocalExecutor, RayExecutor, worker_cached
from groundsynth.errors import InputError
from groundsynth.evaluate.label_fidelity import sample_confusions
from groundsynth.io import atomic_open

__all__ = [
    "ChunkRecords",
    "ChunkTask",
    "Execution",
    "Models",
    "collate",
    "score_batch",
    "score_chunk",
    "score_chunks",
]

#: ``(split, chunk index, ids)``
Chunk = tuple[str, int, tuple[str, ...]]
#: A chunk's record: ``ids``, ``sizes`` (of its batches), ``seconds`` and, as computed,
#: ``confusions`` (N, C, C), ``features`` (N, D), ``inception`` (N, 2048), ``counts`` (N, C).
Record = dict[str, np.ndarray]


@dataclass(frozen=True)
class Models:
    """What a worker needs to rebuild a pass's models: checkpoint and Inception weights (with
    their digests) and the device (resolved on each worker)."""

    model: str | None = None
    model_sha256: str | None = None
    inception: str | None = None
    inception_sha256: str | None = None
    device: str = "auto"


@dataclass
class Execution:
    """Where the image chunks of one or more passes run, and what ran them.

    ``executor`` runs the chunks (here, or as Ray tasks -- which need ``models``: checkpoint
    paths, not model objects); ``chunk_size`` ids make a chunk (on Ray: a task).
    """

    executor: LocalExecutor | RayExecutor = field(default_factory=LocalExecutor)
    models: Models | None = None
    chunk_size: int = 256
    tasks: int = 0
    model_loads: int = 0
    pids: set[int] = field(default_factory=set)

    def __post_init__(self) -> None:
        if self.chunk_size < 1:
            raise InputError(f"chunk size must be >= 1, got {self.chunk_size}")
        if not self.executor.in_process and self.models is None:
            raise InputError(
                f"the {self.executor.name} executor runs chunks elsewhere: it needs the "
                "segmenter as a checkpoint path, not a model object"
            )

    def describe(self) -> dict[str, Any]:
        """The executor, and (out of this process) tasks run, workers and model loads."""
        out = self.executor.describe()
        if not self.executor.in_process:
            out |= {
                "tasks": self.tasks,
                "worker_processes": len(self.pids),
                "model_loads": self.model_loads,
            }
        return out


# ----------------------------------------------------------------------------- one batch
def collate(batch: list[dict[str, Any]]) -> tuple[Any, Any, list[str]]:
    """``(images, masks, ids)`` of :class:`~groundsynth.data.torch_dataset.SegmentationDataset`
    items, stacked; images of one batch must share a size."""
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


def _encoder_features(model: Any, images: Any) -> Any:
    features = getattr(model, "features", None)
    if features is None:
        raise InputError(
            f"model {type(model).__name__} has neither an smp encoder (net.encoder) nor "
            "a features(images) method; feature fidelity needs one"
        )
    return features(images)


def score_batch(
    model: Any, inception: Any, device: Any, images: Any, masks: Any, features: bool
) -> Record:
    """What one batch's statistics need (see the module docstring), as numpy arrays.

    The encoder's features are its last stage's output, mean-pooled, captured by a forward
    hook so the encoder runs once (else the model's ``features(images)``)."""
    torch = lazy_import("torch")
    out: Record = {}
    if model is not None:
        captured: list[Any] = []
        hook = None
        encoder = getattr(getattr(model, "net", None), "encoder", None)
        if encoder is not None and features:
            hook = encoder.register_forward_hook(
                lambda _m, _i, output: captured.append(output[-1].mean(dim=(-2, -1)))
            )
        try:
            with torch.inference_mode():
                images_dev = images.to(device)
                logits = model(images_dev)
                feats = None
                if features:
                    feats = captured[0] if captured else _encoder_features(model, images_dev)
        finally:
            if hook is not None:
                hook.remove()
        out["confusions"] = sample_confusions(logits, masks)
        if feats is not None:
            out["features"] = feats.float().cpu().numpy()
    else:
        out["counts"] = np.stack([class_counts(m) for m in masks.numpy()])
    if inception is not None:
        out["inception"] = inception(images).float().cpu().numpy()
    return out


def _record(ids: list[str], parts: list[Record], seconds: float) -> Record:
    """One chunk's record from its batches' arrays."""
    rec: Record = {
        "ids": np.array(ids, dtype=str),
        "sizes": np.array([len(next(iter(p.values()))) for p in parts], dtype=np.int64),
        "seconds": np.array(seconds, dtype=np.float64),
    }
    for name in parts[0]:
        rec[name] = np.concatenate([p[name] for p in parts])
    return rec


def batches_of(record: Record) -> Iterator[tuple[list[str], Record]]:
    """``(ids, arrays)`` of each batch of a chunk's record, in order."""
    ids = record["ids"].tolist()
    start = 0
    for size in record["sizes"].tolist():
        part = slice(start, start + size)
        yield ids[part], {k: v[part] for k, v in record.items() if k not in _META}
        start += size


_META = ("ids", "sizes", "seconds", "key")


# ----------------------------------------------------------------------------- records
class ChunkRecords:
    """The chunk records of one pass, in ``folder`` (resumable) or a temporary folder.

    ``key`` names what made the records (digests, batch size, features); a record of other
    ids or another key reads as absent. Use as a context manager: a temporary folder is
    removed on leaving.
    """

    def __init__(self, folder: Path | None, key: dict[str, Any]) -> None:
        self._temporary = folder is None
        self.folder = (
            Path(tempfile.mkdtemp(prefix="groundsynth-scores-")) if folder is None else folder
        )
        self.key = json.dumps(key, sort_keys=True)

    def path(self, split: str, chunk: int) -> Path:
        return self.folder / split / f"{chunk:06d}.npz"

    def has(self, split: str, chunk: int, ids: tuple[str, ...]) -> bool:
        """Whether chunk ``chunk`` of ``split`` is recorded, for these ids and this key."""
        path = self.path(split, chunk)
        if not path.is_file():
            return False
        try:
            with np.load(path, allow_pickle=False) as data:
                return str(data["key"]) == self.key and tuple(data["ids"].tolist()) == ids
        except (OSError, ValueError, KeyError):  # a torn or foreign file: redo the chunk
            return False

    def write(self, split: str, chunk: int, record: Record) -> None:
        """Record a chunk (atomically: the resume marker)."""
        with atomic_open(self.path(split, chunk), "wb") as fh:
            np.savez(fh, key=np.array(self.key), **record)

    def read(self, split: str, chunk: int) -> Record:
        with np.load(self.path(split, chunk), allow_pickle=False) as data:
            return {k: data[k] for k in data.files if k != "key"}

    def close(self) -> None:
        if self._temporary:
            shutil.rmtree(self.folder, ignore_errors=True)

    def __enter__(self) -> ChunkRecords:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# ----------------------------------------------------------------------------- running
@dataclass(frozen=True)
class ChunkTask:
    """One chunk, self-contained: what a Ray worker needs to score it."""

    dataset: str
    split: str
    index: int
    ids: tuple[str, ...]
    batch_size: int
    features: bool
    models: Models


def _load_segmenter(path: str, device: Any) -> Any:
    from groundsynth.evaluate.sample_scores import load_model

    return load_model(path, device)[0]


def _load_inception(path: str, device: Any) -> Any:
    from groundsynth.evaluate.inception import InceptionFeatures

    return InceptionFeatures(path, device=device)


def score_chunk(task: ChunkTask) -> dict[str, Any]:
    """A worker's task: score one chunk; returns its record and how the model was had."""
    from groundsynth.benchmark.model import resolve_device
    from groundsynth.data.torch_dataset import SegmentationDataset

    m = task.models
    device = resolve_device(m.device)
    reader, _ = worker_cached("scores dataset", task.dataset, lambda: open_dataset(task.dataset))
    model, loaded = None, False
    if m.model is not None:
        identity = (m.model, m.model_sha256, str(device))
        model, loaded = worker_cached(
            "scores segmenter", identity, lambda: _load_segmenter(m.model, device)
        )
    inception = None
    if m.inception is not None:
        identity = (m.inception, m.inception_sha256, str(device))
        inception, _ = worker_cached(
            "scores inception", identity, lambda: _load_inception(m.inception, device)
        )
    dataset = SegmentationDataset(reader, task.split, ids=task.ids)
    parts, seconds = [], 0.0
    for start in range(0, len(task.ids), task.batch_size):
        stop = min(start + task.batch_size, len(task.ids))
        images, masks, _ = collate([dataset[i] for i in range(start, stop)])
        t0 = time.perf_counter()
        parts.append(score_batch(model, inception, device, images, masks, task.features))
        seconds += time.perf_counter() - t0
    record = _record(list(task.ids), parts, seconds)
    return {"record": record, "pid": os.getpid(), "model_loaded": loaded}


def _chunk_label(task: ChunkTask) -> str:
    span = f"{task.ids[0]} .. {task.ids[-1]}" if task.ids else "none"
    return f"chunk {task.split}/{task.index:06d} ({len(task.ids)} images, {span})"


def score_chunks(
    reader: DatasetReader,
    todo: list[Chunk],
    records: ChunkRecords,
    execution: Execution,
    *,
    model: Any,
    inception: Any,
    device: Any,
    batch_size: int,
    workers: int,
    features: bool,
    tick: Callable[[int], None],
) -> None:
    """Score and record the ``todo`` chunks: here (``model``/``inception`` objects, images
    read by ``workers`` DataLoader processes) or as one task per chunk (their checkpoints)."""
    if not todo:
        return
    if execution.executor.in_process:
        _score_here(
            reader, todo, records, model, inception, device, batch_size, workers, features, tick
        )
        return
    root = str(Path(reader.root).resolve())  # workers may run in another folder
    tasks = (
        ChunkTask(root, s, k, ids, batch_size, features, execution.models)  # type: ignore[arg-type]
        for s, k, ids in todo
    )
    work = execution.executor.map_unordered(score_chunk, tasks, label=_chunk_label)
    with closing(work):
        for task, result in work:
            records.write(task.split, task.index, result["record"])
            execution.tasks += 1
            execution.pids.add(result["pid"])
            execution.model_loads += bool(result["model_loaded"])
            tick(len(task.ids))


def _score_here(
    reader: DatasetReader,
    todo: list[Chunk],
    records: ChunkRecords,
    model: Any,
    inception: Any,
    device: Any,
    batch_size: int,
    workers: int,
    features: bool,
    tick: Callable[[int], None],
) -> None:
    """Score ``todo`` in this process: per split, one DataLoader reads ahead across chunks
    while batches are cut at chunk ends; each chunk is recorded after its last batch."""
    torch = lazy_import("torch")
    from groundsynth.data.torch_dataset import SegmentationDataset

    for split in dict.fromkeys(s for s, _, _ in todo):
        chunks = [(k, ids) for s, k, ids in todo if s == split]
        sampler: list[list[int]] = []
        owners: list[tuple[int, tuple[str, ...], bool]] = []
        offset = 0
        for k, ids in chunks:
            starts = range(0, len(ids), batch_size)
            for b in starts:
                sampler.append(list(range(offset + b, offset + min(b + batch_size, len(ids)))))
                owners.append((k, ids, b == starts[-1]))
            offset += len(ids)
        flat = [i for _, ids in chunks for i in ids]
        loader = torch.utils.data.DataLoader(
            SegmentationDataset(reader, split, ids=flat),
            batch_sampler=sampler,
            num_workers=workers,
            collate_fn=collate,
        )
        parts: list[Record] = []
        seconds = 0.0
        for (images, masks, batch_ids), (k, ids, last) in zip(loader, owners, strict=True):
            t0 = time.perf_counter()
            parts.append(score_batch(model, inception, device, images, masks, features))
            seconds += time.perf_counter() - t0
            tick(len(batch_ids))
            if last:
                records.write(split, k, _record(list(ids), parts, seconds))
                parts, seconds = [], 0.0
