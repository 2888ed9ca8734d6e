"""One batch of a caption run as a self-contained task: the unit an executor runs.

A :class:`BatchTask` names up to ``batch_size`` images of one journal chunk and, per column,
those still to caption. :func:`caption_batch` reads their masks (and images, for back ends
that look at pixels), captions them and returns the journal records per column; it writes
nothing. The run's driver appends the records to the journal (:mod:`.run`), so the journal
has one writer whichever executor ran the batch, and the tables rebuilt from it are the same.

Locally the run's own reader and captioners are used. On Ray, :func:`caption_batch_on_worker`
opens the dataset and builds each column's captioner once per worker process
(:func:`~groundsynth.distributed.worker_cached`): a transformers model is loaded once per
worker, not once per batch. The openai back end is not run on workers: it already spreads
its requests over servers, so its columns are captioned by the driver (:data:`ON_WORKERS`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from groundsynth.caption import get_captioner
from groundsynth.caption.base import Captioner, CaptionJob, caption_jobs
from groundsynth.caption.facts import GroundingFacts, facts_from_mask
from groundsynth.caption.spec import CaptionRunConfig, StreamSpec
from groundsynth.data.reader import DatasetReader, open_dataset
from groundsynth.distributed import worker_cached
from groundsynth.errors import InputError

__all__ = [
    "ON_WORKERS",
    "BatchTask",
    "batch_label",
    "build_captioner",
    "caption_batch",
    "caption_batch_on_worker",
    "for_workers",
    "needs_image",
]

#: Back ends whose columns run on Ray workers; the others are captioned by the driver.
ON_WORKERS: tuple[str, ...] = ("template", "transformers")

#: A journal record: ``{"id", "status": "ok", "captions", "pct"}`` or
#: ``{"id", "status": "failed", "error"[, "pct"]}``.
Record = dict[str, Any]

_BACKEND_OPTIONS: dict[str, Callable[[CaptionRunConfig], dict[str, Any]]] = {
    "openai": lambda c: {
        "base_url": c.base_url,
        "base_urls": c.base_urls,
        "api_key_env": c.api_key_env,
        "concurrency": c.concurrency,
        "timeout": c.timeout,
        "retries": c.retries,
        "temperature": c.temperature,
        "max_tokens": c.max_new_tokens,
        "system_prompt": c.system_prompt,
    },
    "transformers": lambda c: {
        "device": c.device,
        "dtype": c.dtype,
        "batch_size": c.batch_size,
        "temperature": c.temperature,
        "max_new_tokens": c.max_new_tokens,
        "system_prompt": c.system_prompt,
    },
}


def _options(spec: StreamSpec, cfg: CaptionRunConfig) -> dict[str, Any]:
    return _BACKEND_OPTIONS.get(spec.backend, lambda c: {})(cfg)


def build_captioner(spec: StreamSpec, cfg: CaptionRunConfig) -> Captioner:
    """The captioner of one stream spec, with the run's model options."""
    if spec.backend == "template":
        return get_captioner("template")
    return get_captioner(
        spec.backend,
        model=spec.model,
        stream=spec.stream,
        prompt=cfg.prompt_dir,
        **_options(spec, cfg),
    )


def needs_image(captioner: Captioner) -> bool:
    """Whether ``captioner`` looks at pixels (so its images must be read)."""
    return bool(getattr(captioner, "needs_image", False))


@dataclass(frozen=True)
class BatchTask:
    """Images of one journal chunk to caption, and per column those still to do.

    ``pending`` holds ``(column, ids)`` in the run's column order; every id is one of ``ids``.
    """

    config: CaptionRunConfig
    split: str
    chunk: int
    ids: tuple[str, ...]
    pending: tuple[tuple[str, tuple[str, ...]], ...]


def for_workers(cfg: CaptionRunConfig) -> CaptionRunConfig:
    """``cfg`` with the dataset, prompt folder and local model folders as absolute paths, so
    a worker started elsewhere (another working directory, another node) finds them.

    Columns keep their names; a column's identity (:mod:`.run`) still uses ``cfg`` itself.
    """

    def absolute(path: str) -> str:
        return str(Path(path).resolve())

    streams = tuple(
        replace(s, model=absolute(s.model), name=s.column)
        if s.model and Path(s.model).exists()
        else s
        for s in cfg.streams
    )
    prompt_dir = absolute(cfg.prompt_dir) if cfg.prompt_dir else None
    return replace(cfg, dataset=absolute(cfg.dataset), prompt_dir=prompt_dir, streams=streams)


def batch_label(task: BatchTask) -> str:
    """How errors name a batch: ``split train, chunk 0, images a .. f``."""
    span = f"{task.ids[0]} .. {task.ids[-1]}" if task.ids else "none"
    return f"split {task.split}, chunk {task.chunk}, images {span}"


def _facts(reader: DatasetReader, split: str, sid: str) -> GroundingFacts | str:
    try:
        return facts_from_mask(reader.read_mask(split, sid), sid)
    except InputError as exc:
        return f"mask: {exc}"


def caption_batch(
    task: BatchTask, reader: DatasetReader, captioners: Mapping[str, Captioner]
) -> dict[str, list[Record]]:
    """Caption one batch: column -> its journal records (those of ``task.pending``, in order).

    An image whose mask or image cannot be read fails with that reason; a caption the back
    end could not make fails with its error. Errors that concern the whole run (a missing
    model, a rejected key) propagate.
    """
    cfg, split = task.config, task.split
    facts = {sid: _facts(reader, split, sid) for sid in task.ids}
    wants = {sid for c, ids in task.pending for sid in ids if needs_image(captioners[c])}
    images: dict[str, Any] = {}
    for sid in task.ids:
        if sid in wants and not isinstance(facts[sid], str):
            try:
                images[sid] = reader.read_image(split, sid)
            except InputError as exc:
                images[sid] = f"image: {exc}"
    out: dict[str, list[Record]] = {}
    for column, ids in task.pending:
        captioner = captioners[column]
        records: list[Record] = []
        jobs, owners = [], []
        for sid in ids:
            f = facts[sid]
            image = images.get(sid) if needs_image(captioner) else None
            problem = f if isinstance(f, str) else image if isinstance(image, str) else None
            if problem is not None:
                records.append({"id": sid, "status": "failed", "error": problem})
                continue
            jobs.append(CaptionJob(f, image, sid))
            owners.append(sid)
        for sid, job, res in zip(
            owners, jobs, caption_jobs(captioner, jobs, n=cfg.n, seed=cfg.seed)
        ):
            pct = list(job.facts.percentages)
            if res.ok:
                records.append(
                    {"id": sid, "status": "ok", "captions": list(res.captions), "pct": pct}
                )
            else:
                records.append(
                    {"id": sid, "status": "failed", "error": res.error or "failed", "pct": pct}
                )
        out[column] = records
    return out


def caption_batch_on_worker(task: BatchTask) -> dict[str, list[Record]]:
    """:func:`caption_batch` in a worker process: the dataset reader and each column's
    captioner are made once per process (and model), then reused by later batches."""
    cfg = task.config
    reader, _ = worker_cached(
        "caption dataset", cfg.dataset, lambda: open_dataset(Path(cfg.dataset))
    )
    specs = {s.column: s for s in cfg.streams}
    captioners: dict[str, Captioner] = {}
    for column, _ids in task.pending:
        spec = specs[column]
        identity = (str(spec), cfg.prompt_dir, tuple(sorted(_options(spec, cfg).items())))
        captioners[column], _ = worker_cached(
            f"captioner {column}", identity, lambda spec=spec: build_captioner(spec, cfg)
        )
    return caption_batch(task, reader, captioners)
