"""``groundsynth pseudo-label``: label images with a trained segmenter, as a new dataset.

This is how *ungrounded* synthetic data gets its maps (what ARAS400k did for its 300,000 GAN
images): a segmenter trained on real data (a checkpoint of
:func:`~groundsynth.benchmark.model.save_segmenter`, e.g. a benchmark run's ``segmenter.pt``)
predicts each image's classes. Input: a dataset directory (either layout; every split with
images, or ``splits``) or a plain folder of images (PNG/JPEG/TIFF, one split named
``folder_split``, ``synth`` by default). Output: a dataset in the data contract::

    OUT/<split>/images/<id>.png     the input image (hard link when possible, else a copy;
                                    re-encoded as RGB PNG when the input is not one)
    OUT/<split>/masks/<id>.png      palette mask of the predicted classes
    OUT/metadata.parquet            contract columns (origin = "pseudo-label:<model name>",
                                    class fractions of the prediction) + ``confidence`` (mean
                                    over pixels of the max softmax probability, 0..1) and
                                    ``image_origin`` (the input's origin, when it had one)
    OUT/class_percentages/<split>.csv
    OUT/config.yaml  manifest.json  pseudo-label.log

Streaming and resumable: images are read by DataLoader workers and predicted batch by batch;
every file is written atomically and each chunk of ``chunk_size`` images is recorded (under
``OUT/.pseudo-label/``) once all its files exist, so a rerun redoes only unrecorded chunks. The
tables are assembled from the records at the end. Unreadable images are skipped, counted and
named in the manifest.

Batches never straddle two chunks (a chunk of 10 in batches of 4 goes 4, 4, 2), so what a
chunk holds depends on the chunk alone -- not on where a run started or which executor ran
it (a model's float results shift slightly with the make-up of its batch).

``executor="ray"`` labels each chunk as a Ray task (:mod:`groundsynth.distributed`): the
worker loads the model once (kept per worker process, keyed by checkpoint and digest), reads
the chunk's images, writes its files and returns its entries; this process records each
chunk as it finishes. The executor options are not part of the run's identity: a run begun
on one executor resumes on the other, and the outputs are byte-identical. They go to the
manifest (``executor``: name, resources, tasks, worker processes, model loads), not to
``config.yaml``, which holds what shaped the dataset.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Iterator
from contextlib import closing
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from groundsynth._optional import lazy_import
from groundsynth.classes import NUM_CLASSES
from groundsynth.data import contract
from groundsynth.data.masks import encode_mask_png
from groundsynth.distributed import check_executor_options, make_executor, worker_cached
from groundsynth.errors import InputError, OutputConflictError
from groundsynth.generate.pseudo_label_chunks import (
    IMAGE_SUFFIXES,
    ChunkRecorder,
    Entry,
    ImageFiles,
    Item,
    chunk_label,
    finalise,
    list_inputs,
    log_skipped,
    make_row,
    place_image,
    record_path,
    write_record,
)
from groundsynth.io import remove_temporaries, write_bytes
from groundsynth.runs import check_run_dir, file_digest, start_run, to_plain

if TYPE_CHECKING:
    from groundsynth.benchmark.model import Segmenter

__all__ = ["IMAGE_SUFFIXES", "PseudoLabelConfig", "PseudoLabelResult", "pseudo_label"]

log = logging.getLogger(__name__)

#: Where and how the work runs: neither in ``config.yaml`` nor in the run's identity.
_EXECUTION = ("executor", "ray_address", "ray_cpus", "ray_gpus")
#: Config fields that do not change the output (may differ when resuming).
_NOT_IDENTITY = ("out", "batch_size", "workers", "device", "images", *_EXECUTION)

#: ``progress(images done, images total)``, called after each batch.
Progress = Callable[[int, int], None]


@dataclass(frozen=True)
class PseudoLabelConfig:
    """Options of :func:`pseudo_label` (saved as ``config.yaml``, less the executor's).

    Attributes:
        dataset: input dataset directory or folder of images.
        model: segmenter checkpoint (``.pt`` of ``save_segmenter``).
        out: output dataset directory (default: ``<dataset>.pseudo-<model name>`` beside it).
        splits: splits of a dataset input to label (default: every split with images).
        folder_split: split name given to a plain folder's images.
        batch_size: images per forward pass.
        workers: DataLoader processes reading images (0: in the main process; local only).
        device: ``auto`` (CUDA, else MPS, else CPU), ``cpu``, ``cuda``, ``cuda:N`` -- on
            Ray, resolved on each worker (``auto`` is CPU for tasks without a GPU).
        chunk_size: images per resumable chunk (on Ray: per task).
        images: ``link`` (hard link, copy when impossible) or ``copy``.
        executor: ``local`` (this process) or ``ray`` (one Ray task per chunk).
        ray_address: Ray cluster to join (``auto``, ``HOST:PORT``, ``ray://HOST:PORT``);
            ``None`` starts a local one for the run.
        ray_cpus: CPUs reserved per Ray task.
        ray_gpus: GPUs reserved per Ray task (``0.5``: two tasks share a GPU).
    """

    dataset: str
    model: str
    out: str | None = None
    splits: tuple[str, ...] | None = None
    folder_split: str = "synth"
    batch_size: int = 16
    workers: int = 0
    device: str = "auto"
    chunk_size: int = 256
    images: Literal["link", "copy"] = "link"
    executor: Literal["local", "ray"] = "local"
    ray_address: str | None = None
    ray_cpus: float = 1.0
    ray_gpus: float = 0.0

    def __post_init__(self) -> None:
        if self.batch_size < 1 or self.chunk_size < 1 or self.workers < 0:
            raise InputError(
                f"batch size and chunk size must be >= 1 and workers >= 0, got "
                f"{self.batch_size}, {self.chunk_size}, {self.workers}"
            )
        if self.images not in ("link", "copy"):
            raise InputError(f"images must be 'link' or 'copy', got {self.images!r}")
        if not self.folder_split or "/" in self.folder_split:
            raise InputError(f"bad split name {self.folder_split!r}")
        check_executor_options(self.executor, self.ray_address, self.ray_cpus, self.ray_gpus)


@dataclass
class PseudoLabelResult:
    """What :func:`pseudo_label` wrote."""

    out: Path
    counts: dict[str, int]
    skipped: dict[str, int]
    confidence: dict[str, dict[str, float]]
    chunks_total: int
    chunks_resumed: int
    seconds: float = 0.0
    manifest: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class _Labelling:
    """What every chunk of a run shares: where and how its files and rows are made."""

    out: Path
    origin: str
    source: str
    images: str
    batch_size: int


@dataclass(frozen=True)
class _ChunkTask:
    """One chunk, self-contained: what a Ray worker needs to label it."""

    split: str
    index: int
    items: tuple[Item, ...]
    meta: dict[str, Any]  # id -> the input's metadata row
    model: str
    model_sha256: str
    device: str
    run: _Labelling


# ----------------------------------------------------------------------------- the work
def _label_batch(
    model: Segmenter,
    batch: list[tuple[Item, np.ndarray | None, bool, str]],
    device: Any,
    run: _Labelling,
    meta: dict[str, Any],
) -> list[Entry]:
    """Predict one batch (of one chunk), write each image's files, return their entries."""
    entries: list[Entry] = []
    for (item, image, reusable, err), pred in zip(batch, _predict(model, batch, device)):
        if pred is None or image is None:  # pragma: no mutate (pred is None iff image is)
            entries.append(
                (
                    "skipped",  # pragma: no mutate (any kind but "row" is a skip)
                    {"id": item.id, "path": str(item.path), "reason": "unreadable", "message": err},
                )
            )
            continue
        mask, confidence = pred
        write_bytes(contract.mask_path(run.out, item.split, item.id), encode_mask_png(mask))
        dst = contract.image_path(run.out, item.split, item.id)
        place_image(item.path, dst, image, reusable, run.images)
        row = make_row(item, mask, confidence, run.origin, run.source, meta.get(item.id))
        entries.append(("row", row))
    return entries


def _label_chunk(task: _ChunkTask) -> dict[str, Any]:
    """A worker's task: label a chunk; returns its record and how the model was had."""
    from groundsynth.benchmark.model import load_segmenter, resolve_device

    device = resolve_device(task.device)

    def load() -> Segmenter:
        model, _ = load_segmenter(Path(task.model), map_location=device)
        return model.eval()

    identity = (task.model, task.model_sha256, str(device))
    model, loaded = worker_cached("pseudo-label segmenter", identity, load)
    files = ImageFiles(list(task.items))
    record: dict[str, list[dict[str, Any]]] = {"rows": [], "skipped": []}
    size = task.run.batch_size
    for start in range(0, len(files), size):
        batch = [
            (task.items[i], *files[i][1:]) for i in range(start, min(len(files), start + size))
        ]
        for kind, payload in _label_batch(model, batch, device, task.run, task.meta):
            record["rows" if kind == "row" else "skipped"].append(payload)
    return {"record": record, "pid": os.getpid(), "model_loaded": loaded}


def _batch_sizes(todo: list[tuple[str, int, list[Item]]], size: int) -> Iterator[int]:
    """Sizes of the prediction batches: ``size`` images, cut short at each chunk's end."""
    for _, _, chunk in todo:
        for start in range(0, len(chunk), size):
            yield min(size, len(chunk) - start)


def _as_list(batch: list) -> list:
    return batch


def _label_here(
    model: Segmenter,
    device: Any,
    cfg: PseudoLabelConfig,
    run: _Labelling,
    todo: list[tuple[str, int, list[Item]]],
    meta: dict[str, dict],
    tick: Callable[[int], None],
) -> dict[str, Any]:
    """Label ``todo`` in this process: DataLoader workers read ahead across chunks while
    batches are cut at chunk ends; each chunk is recorded once its last image is done."""
    torch = lazy_import("torch")
    flat = [it for _, _, c in todo for it in c]
    loader = torch.utils.data.DataLoader(
        ImageFiles(flat),
        batch_size=cfg.batch_size,
        # pragma: no mutate start (the order and the images read are the same with any
        # worker count, and DataLoader's default is no shuffling)
        num_workers=cfg.workers,
        collate_fn=_as_list,
        shuffle=False,
        # pragma: no mutate end
    )
    recorder = ChunkRecorder(run.out, todo)
    sizes = _batch_sizes(todo, cfg.batch_size)
    # after the last batch no size is needed: 0, None and 1 (with nothing ready) all stop
    need, ready = next(sizes, 0), []  # pragma: no mutate
    model.eval()
    for read in loader:
        ready += [(flat[i], img, reusable, err) for i, img, reusable, err in read]
        while need and len(ready) >= need:
            batch, ready = ready[:need], ready[need:]
            split = batch[0][0].split
            for entry in _label_batch(model, batch, device, run, meta.get(split, {})):
                recorder.take(entry)
            need = next(sizes, 0)  # pragma: no mutate (see above)
        tick(len(read))
    return {"name": "local"}


def _label_on_ray(
    cfg: PseudoLabelConfig,
    run: _Labelling,
    todo: list[tuple[str, int, list[Item]]],
    meta: dict[str, dict],
    sha256: str,
    tick: Callable[[int], None],
) -> dict[str, Any]:
    """Label ``todo`` as one Ray task per chunk; record each chunk here as it finishes."""
    tasks = (
        _ChunkTask(
            split=s,
            index=k,
            items=tuple(c),
            meta={it.id: meta[s][it.id] for it in c if it.id in meta.get(s, {})},
            model=cfg.model,
            model_sha256=sha256,
            device=cfg.device,
            run=run,
        )
        for s, k, c in todo
    )
    pids: set[int] = set()
    loads = n_tasks = 0
    with make_executor("ray", cfg.ray_address, cfg.ray_cpus, cfg.ray_gpus) as executor:
        work = executor.map_unordered(
            _label_chunk, tasks, label=lambda t: chunk_label(t.split, t.index, t.items)
        )
        with closing(work):
            for task, result in work:
                record = result["record"]
                log_skipped(record["skipped"])
                write_record(run.out, task.split, task.index, record)
                pids.add(result["pid"])
                loads += bool(result["model_loaded"])
                n_tasks += 1
                tick(len(task.items))
        described = executor.describe()
    return {**described, "tasks": n_tasks, "worker_processes": len(pids), "model_loads": loads}


# ----------------------------------------------------------------------------- entry point
def _chunks(items: list[Item], size: int) -> list[list[Item]]:
    return [items[i : i + size] for i in range(0, len(items), size)]


def pseudo_label(
    config: PseudoLabelConfig, *, progress: Progress | None = None
) -> PseudoLabelResult:
    """Label ``config.dataset``'s images with ``config.model`` into a new dataset.

    Raises:
        InputError: unreadable checkpoint, missing input, unknown split, bad option, a Ray
            cluster that cannot be reached.
        OutputConflictError: ``out`` is the input or holds other data.
        TaskError: a chunk failed on a Ray worker (named; it is not recorded).
    """
    from groundsynth.benchmark.model import load_segmenter, resolve_device

    t0 = time.time()
    root = Path(config.dataset).resolve()
    model_path = Path(config.model).resolve()
    on_ray = config.executor == "ray"
    # on Ray the workers load the model; here it is only checked (on the CPU)
    device = resolve_device("cpu" if on_ray else config.device)
    model, info = load_segmenter(model_path, map_location=device)
    if model.spec.classes != NUM_CLASSES:
        raise InputError(
            f"{model_path}: predicts {model.spec.classes} classes, the schema has {NUM_CLASSES}"
        )
    model_name = str(info.get("name") or model_path.stem).replace(os.sep, "_")
    out = (
        Path(config.out).resolve()
        if config.out
        else root.parent / f"{root.name}.pseudo-{model_name}"
    )
    if out == root:
        raise OutputConflictError(f"{out}: --out must differ from the input dataset")
    cfg = replace(config, dataset=str(root), model=str(model_path), out=str(out))
    kind, items, meta = list_inputs(root, cfg)
    saved = {k: v for k, v in to_plain(cfg).items() if k not in _EXECUTION}
    plain = {k: v for k, v in saved.items() if k not in _NOT_IDENTITY}
    identity = {**plain, "model_sha256": file_digest(model_path)}
    resuming = check_run_dir(out, identity, what="pseudo-labelling", ignore=_NOT_IDENTITY)
    run = start_run(out, "pseudo-label", {**saved, "model_sha256": identity["model_sha256"]})
    origin = f"pseudo-label:{model_name}"
    labelling = _Labelling(out, origin, root.name, cfg.images, cfg.batch_size)
    try:
        chunks = {s: _chunks(v, cfg.chunk_size) for s, v in items.items()}
        todo = [
            (s, k, c)
            for s, cs in chunks.items()
            for k, c in enumerate(cs)
            if not record_path(out, s, k).exists()
        ]
        n_total = sum(len(v) for v in items.values())
        n_resumed = sum(len(cs) for cs in chunks.values()) - len(todo)
        if resuming:
            log.info("resuming: %d chunk(s) already done", n_resumed)
            # what a stopped run's writers left half-made (a cancelled Ray task, kill -9)
            stale = remove_temporaries(
                *(out / s / kind for s in items for kind in ("images", "masks"))
            )
            if stale:
                log.info("removed %d temporary file(s) a stopped run left", stale)
        done = n_total - sum(len(c) for _, _, c in todo)
        if progress is not None:
            progress(done, n_total)

        def tick(n: int) -> None:
            nonlocal done
            done += n
            if progress is not None:
                progress(done, n_total)

        if on_ray:
            del model  # the workers load their own
            executor = _label_on_ray(cfg, labelling, todo, meta, identity["model_sha256"], tick)
        else:
            executor = _label_here(model, device, cfg, labelling, todo, meta, tick)
        counts, skip_counts, confidence = finalise(out, {s: len(cs) for s, cs in chunks.items()})
        manifest = run.finish(
            inputs=[root, model_path],
            outputs={
                "samples": counts,
                "skipped": dict(skip_counts),
                "confidence": confidence,
                "origin": origin,
                "input_kind": kind,
            },
            digest=[contract.metadata_path(out)]
            + [contract.percentages_csv(out, s) for s in counts],
            extra={
                "chunks": {"total": sum(len(cs) for cs in chunks.values()), "resumed": n_resumed},
                "executor": executor,
            },
        )
    except BaseException:
        run.close()
        raise
    log.info("pseudo-labelled %d images into %s", sum(counts.values()), out)
    return PseudoLabelResult(
        out=out,
        counts=counts,
        skipped=dict(skip_counts),
        confidence=confidence,
        chunks_total=sum(len(cs) for cs in chunks.values()),
        chunks_resumed=n_resumed,
        seconds=round(time.time() - t0, 3),
        manifest=manifest,
    )


def _predict(
    model: Segmenter, batch: list[tuple[Item, np.ndarray | None, bool, str]], device: Any
) -> list[tuple[np.ndarray, float] | None]:
    """Masks (uint8) and mean max-probabilities of a batch; ``None`` for unreadable images.

    Images of equal size go through the model together.
    """
    torch = lazy_import("torch")
    results: list[tuple[np.ndarray, float] | None] = [None] * len(batch)
    by_shape: dict[tuple[int, ...], list[int]] = {}
    for i, (_, image, _, _) in enumerate(batch):
        if image is not None:
            by_shape.setdefault(image.shape, []).append(i)
    with torch.inference_mode():
        for idx in by_shape.values():
            # on the CPU .to(None) is the same tensor; the device given is checked by a test
            x = torch.from_numpy(np.stack([batch[i][1] for i in idx]))
            x = x.to(device)  # pragma: no mutate
            x = x.permute(0, 3, 1, 2).float().div_(255.0)
            prob = torch.softmax(model(x).float(), dim=1)
            conf, pred = prob.max(dim=1)
            conf = conf.mean(dim=(1, 2)).cpu().numpy()
            # class indices 0..6 read the same in any integer type (uint8 saves memory)
            pred = pred.to(torch.uint8).cpu().numpy()  # pragma: no mutate
            for j, i in enumerate(idx):
                results[i] = (pred[j], float(conf[j]))
    return results
