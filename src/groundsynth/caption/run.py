"""Captioning a dataset: the ARAS-style wide captions table, written incrementally.

:func:`caption_dataset` walks a dataset (:func:`~groundsynth.data.reader.open_dataset`,
split by split, in id order), derives each image's grounding facts from its mask and asks
one captioner per *stream spec* for captions. It writes

- ``DATASET/captions/<split>.csv``: ``filename, split, Tree, ..., Water`` (integer percent,
  from the masks) then one column per stream spec, columns sorted by name (ARAS400k's
  order); one row per image of the split;
- ``DATASET/captions/.journal/``: every result as it comes (:mod:`.journal`), the source of
  truth from which the tables are rebuilt, atomically, at the end of each run and when a
  run is interrupted with Ctrl-C (after ``kill -9``, at the end of the next run);
- ``DATASET/captions/run/``: ``config.yaml`` (resolved, no secrets), ``manifest.json``
  (counts, failures, versions, timings) and ``caption.log`` (appended run after run).

**Stream specs** read ``STREAM=BACKEND[:MODEL][@COLUMN]`` (:mod:`.spec`), e.g.
``hybrid=openai:gemma3:4b`` -> column ``hybrid_gemma3-4b``, ``text=template`` -> column
``text_template``. Template columns are keyed on the image id and seed only: two template
columns of one run hold the same captions.

**Several captions per image** (``n`` > 1): caption ``i`` ≥ 2 of column ``X`` goes to
column ``X_i`` (``text_template``, ``text_template_2``, ...); the corpus readers fold them
back into stream ``X``. An image's ``n`` captions of a column succeed or fail together.

**Failures and resuming.** A caption that fails (after the back end's retries) is
journalled as ``failed`` with its error message; its table cell is left empty (an empty
cell means "no caption": failed or not yet made — never an empty caption) and the next run
retries it. A rerun skips every (image, column) pair already captioned, so a run killed at
any moment (even ``kill -9``) loses at most the batch in flight and duplicates nothing.
The settings that shape a column's captions (back end, model, stream, prompt, n, seed,
decoding) are recorded per column; resuming a column with other settings is refused.

**Executors.** Each batch is a self-contained task (:mod:`.batches`) that returns its
records; this process appends them to the journal, whichever executor ran the batch. With
``executor="ray"`` the template and transformers columns are captioned on Ray workers
(batches come back in any order, which the journal and the tables do not see), then the
openai columns here. The tables are byte-identical to a local run's, and a run resumes with
either executor.
"""

from __future__ import annotations

import csv
import hashlib
import logging
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack, closing
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

from groundsynth.caption.base import Captioner
from groundsynth.caption.batches import (
    ON_WORKERS,
    BatchTask,
    batch_label,
    build_captioner,
    caption_batch,
    caption_batch_on_worker,
    for_workers,
)
from groundsynth.caption.facts import facts_from_mask
from groundsynth.caption.journal import CaptionJournal
from groundsynth.caption.prompts import load_template
from groundsynth.caption.spec import CaptionRunConfig, StreamSpec, model_label
from groundsynth.classes import CLASS_NAMES
from groundsynth.data.contract import PERCENT_COLUMNS, captions_csv
from groundsynth.data.reader import DatasetReader, Sample, open_dataset
from groundsynth.distributed import LocalExecutor, RayExecutor, make_executor
from groundsynth.errors import InputError, OutputConflictError
from groundsynth.io import atomic_open
from groundsynth.runs import start_run, to_plain

__all__ = [
    "CaptionRunConfig",
    "CaptionRunResult",
    "StreamSpec",
    "caption_dataset",
    "model_label",
    "rebuild_tables",
]

logger = logging.getLogger(__name__)

Progress = Callable[[int, int, str], None]


@dataclass
class CaptionRunResult:
    """What a run did: tables written and, per split and column, its counts."""

    dataset: Path
    tables: dict[str, Path]
    columns: list[str]
    counts: dict[str, dict[str, dict[str, int]]] = field(default_factory=dict)
    failures: list[dict[str, str]] = field(default_factory=list)  # the first few
    seconds: float = 0.0

    @property
    def failed(self) -> int:
        return sum(c["failed"] for s in self.counts.values() for c in s.values())


def _identity(spec: StreamSpec, cfg: CaptionRunConfig) -> dict[str, Any]:
    """The settings that shape a column's captions (a resumed column must keep them)."""
    out: dict[str, Any] = {"stream": spec.stream, "backend": spec.backend, "n": cfg.n}
    out["seed"] = cfg.seed
    if spec.backend != "template":
        text = load_template(spec.stream, cfg.prompt_dir).text
        out |= {
            "model": spec.model,
            "prompt_sha256": hashlib.sha256(text.encode()).hexdigest(),
            "system_prompt": cfg.system_prompt,
            "temperature": cfg.temperature,
            "max_new_tokens": cfg.max_new_tokens,
        }
    return out


def _chunks(reader: DatasetReader, split: str, chunking: Any) -> Iterator[tuple[int, list[Sample]]]:
    """(chunk, samples) runs of a split, streamed (no image or mask loaded)."""
    current, run = -1, []
    for s in reader.iter_samples(split, load_image=False, load_mask=False):
        k = chunking.chunk_of(s.id)
        if k != current and run:
            yield current, run
            run = []
        current = k
        run.append(s)
    if run:
        yield current, run


class _Runner:
    """One run's state: the reader, journal, captioners, counts."""

    def __init__(self, cfg: CaptionRunConfig, reader: DatasetReader, journal: CaptionJournal):
        self.cfg, self.reader, self.journal = cfg, reader, journal
        self.specs = sorted(cfg.streams, key=lambda s: s.column)
        self.task_config = for_workers(cfg)
        self.captioners: dict[str, Captioner] = {}
        self.counts: dict[str, dict[str, dict[str, int]]] = {}
        self.failures: list[dict[str, str]] = []

    def _tasks(
        self, split: str, columns: list[str], progress: Callable[[int, str], None]
    ) -> Iterator[BatchTask]:
        """The split's batches still to caption in ``columns``, chunk by chunk."""
        cfg, journal, counts = self.cfg, self.journal, self.counts[split]
        chunking = journal.chunking(split, self.reader.ids(split), cfg.chunk_size)
        for chunk, samples in _chunks(self.reader, split, chunking):
            done = {
                c: {sid for sid, r in journal.read(split, c, chunk).items() if r["status"] == "ok"}
                for c in columns
            }
            for c in columns:
                counts[c]["done_before"] += sum(s.id in done[c] for s in samples)
            todo = [s.id for s in samples if any(s.id not in done[c] for c in columns)]
            progress(len(samples) - len(todo), "")
            for start in range(0, len(todo), cfg.batch_size):
                ids = tuple(todo[start : start + cfg.batch_size])
                pending = tuple((c, tuple(i for i in ids if i not in done[c])) for c in columns)
                yield BatchTask(self.task_config, split, chunk, ids, pending)

    def caption_split(
        self,
        split: str,
        executor: LocalExecutor | RayExecutor,
        columns: list[str],
        progress: Callable[[int, str], None],
    ) -> None:
        """Caption ``columns`` of ``split``; journal each batch's records as it comes back."""
        if executor.in_process:
            fn: Callable[[BatchTask], dict[str, list[dict[str, Any]]]] = partial(
                caption_batch, reader=self.reader, captioners=self.captioners
            )
        else:
            fn = caption_batch_on_worker
        work = executor.map_unordered(fn, self._tasks(split, columns, progress), label=batch_label)
        with closing(work):
            for task, records in work:
                for column, recs in records.items():
                    self._journal(split, column, task.chunk, recs)
                progress(len(task.ids), "")

    def _journal(self, split: str, column: str, chunk: int, records: list[dict[str, Any]]) -> None:
        counts = self.counts[split][column]
        for r in records:
            if r["status"] == "ok":
                counts["captioned"] += 1
                continue
            counts["failed"] += 1
            if len(self.failures) < 20:
                self.failures.append(
                    {"split": split, "id": r["id"], "column": column, "error": r["error"]}
                )
        self.journal.append(split, column, chunk, records)


def _passes(
    cfg: CaptionRunConfig, specs: list[StreamSpec]
) -> list[tuple[LocalExecutor | RayExecutor, list[str]]]:
    """``(executor, columns)`` to caption in turn: every column here, or on Ray the columns
    of :data:`~.batches.ON_WORKERS` back ends, then the others (openai) here."""
    local = make_executor("local")
    if cfg.executor == "local":
        return [(local, [s.column for s in specs])]
    remote = [s.column for s in specs if s.backend in ON_WORKERS]
    here = [s.column for s in specs if s.backend not in ON_WORKERS]
    if here:
        logger.info(
            "columns %s are captioned here, not on Ray (their back end already spreads its "
            "requests over servers)",
            ", ".join(here),
        )
    ray = make_executor("ray", cfg.ray_address, cfg.ray_cpus, cfg.ray_gpus)
    return [(e, cols) for e, cols in ((ray, remote), (local, here)) if cols]


def caption_dataset(
    config: CaptionRunConfig, *, progress: Progress | None = None
) -> CaptionRunResult:
    """Caption ``config.dataset`` (or resume doing so) and rebuild its captions tables."""
    t0 = time.perf_counter()
    root = Path(config.dataset)
    reader = open_dataset(root)
    available = reader.splits()
    splits = list(config.splits) or available
    unknown = [s for s in splits if s not in available]
    if unknown:
        raise InputError(f"{root}: no split(s) {unknown}; splits here: {', '.join(available)}")
    journal = CaptionJournal(root / "captions" / ".journal")
    with journal.lock():
        for split in splits:
            table = captions_csv(root, split)
            if table.exists() and not journal.has_split(split):
                raise OutputConflictError(
                    f"{table} exists and was not written by `groundsynth caption` (no journal "
                    f"for split {split!r}); move it away to caption this dataset here"
                )
        for spec in config.streams:
            journal.register(spec.column, _identity(spec, config))
        runner = _Runner(config, reader, journal)
        for spec in runner.specs:
            runner.captioners[spec.column] = build_captioner(spec, config)
        passes = _passes(config, runner.specs)
        plain = to_plain(config)
        plain["streams"] = [str(s) for s in config.streams]
        plain["backends"] = {
            c: (cap.describe() if hasattr(cap, "describe") else {"backend": cap.name})
            for c, cap in runner.captioners.items()
        }
        run = start_run(root / "captions" / "run", "caption", plain, seeds={"seed": config.seed})
        try:
            total = sum(reader.len(s) for s in splits) * len(passes)
            seen = 0

            def step(k: int, info: str) -> None:
                nonlocal seen
                seen += k
                if progress is not None:
                    failed = sum(c["failed"] for s in runner.counts.values() for c in s.values())
                    progress(seen, total, f"{failed} failed" if failed else info)

            with ExitStack() as stack:
                for executor, _ in passes:
                    stack.enter_context(executor)
                for split in splits:
                    logger.info("captioning split %s (%d images)", split, reader.len(split))
                    runner.counts[split] = {
                        s.column: {"captioned": 0, "failed": 0, "done_before": 0}
                        for s in runner.specs
                    }
                    for executor, columns in passes:
                        runner.caption_split(split, executor, columns, step)
                executors = [{**e.describe(), "columns": cols} for e, cols in passes]
            tables = rebuild_tables(
                root, splits, reader=reader, journal=journal, counts=runner.counts
            )
        except KeyboardInterrupt:
            # what was captioned is journalled: write the tables now, so the dataset holds
            # them until the rerun completes (a second Ctrl-C leaves the old tables intact)
            try:
                rebuild_tables(root, splits, reader=reader, journal=journal)
            except Exception as exc:  # noqa: BLE001 - the interruption is what to report
                logger.warning("captions tables not rebuilt after the interruption: %s", exc)
            run.close()
            raise
        except BaseException:
            run.close()
            raise
        finally:
            for cap in runner.captioners.values():
                close = getattr(cap, "close", None)
                if close is not None:
                    close()
        result = CaptionRunResult(
            dataset=root,
            tables=tables,
            columns=[s.column for s in runner.specs],
            counts=runner.counts,
            failures=runner.failures,
            seconds=round(time.perf_counter() - t0, 3),
        )
        if result.failed:
            logger.warning(
                "%d captions failed (recorded in the journal; rerun to retry them)", result.failed
            )
        run.finish(
            inputs=[root],
            outputs={
                "tables": {s: str(p) for s, p in tables.items()},
                "counts": result.counts,
                "failed": result.failed,
                "failures_sample": result.failures,
            },
            digest=list(tables.values()),
            extra={"executor": executors},
        )
    return result


def rebuild_tables(
    dataset: str | Path,
    splits: Sequence[str] | None = None,
    *,
    reader: DatasetReader | None = None,
    journal: CaptionJournal | None = None,
    counts: dict[str, dict[str, dict[str, int]]] | None = None,
) -> dict[str, Path]:
    """Write ``captions/<split>.csv`` from the journal, atomically, chunk by chunk.

    Every image of the split gets a row; a column's cell is empty when the image has no
    caption there (failed or not made). ``counts`` (if given) receives ``missing`` per
    split and column.
    """
    root = Path(dataset)
    reader = reader or open_dataset(root)
    journal = journal or CaptionJournal(root / "captions" / ".journal")
    known = journal.columns()
    out: dict[str, Path] = {}
    for split in splits or reader.splits():
        if not journal.has_split(split):
            continue
        cols = journal.split_columns(split)
        ns = {c: int(known.get(c, {}).get("n", 1)) for c in cols}
        header = [*PERCENT_COLUMNS]
        for c in cols:
            header += [c] + [f"{c}_{i}" for i in range(2, ns[c] + 1)]
        missing = dict.fromkeys(cols, 0)
        ids = reader.ids(split)
        chunking = journal.chunking(split, ids, 1)
        path = captions_csv(root, split)
        with atomic_open(path, "w", encoding="utf-8", newline="") as fh:
            writer = csv.writer(fh)
            writer.writerow(header)
            for chunk, chunk_ids in chunking.groups(ids):
                recs = {c: journal.read(split, c, chunk) for c in cols}
                for sid in chunk_ids:
                    row: list[Any] = [f"{sid}.png", split, *_percentages(reader, split, sid, recs)]
                    for c in cols:
                        r = recs[c].get(sid)
                        texts = r["captions"] if r is not None and r["status"] == "ok" else []
                        missing[c] += not texts
                        row += [texts[i] if i < len(texts) else "" for i in range(ns[c])]
                    writer.writerow(row)
        if counts is not None:  # for the columns of this run
            for c, m in missing.items():
                if c in counts.get(split, {}):
                    counts[split][c]["missing"] = m
        logger.info("wrote %s (%d rows, columns %s)", path, len(ids), ", ".join(cols))
        out[split] = path
    return out


def _percentages(
    reader: DatasetReader, split: str, sid: str, recs: dict[str, dict[str, dict[str, Any]]]
) -> list[Any]:
    for by_id in recs.values():
        r = by_id.get(sid)
        if r is not None and r.get("pct"):
            return list(r["pct"])
    try:  # an image none of the journalled columns has reached yet
        return list(facts_from_mask(reader.read_mask(split, sid), sid).percentages)
    except InputError as exc:
        logger.warning("%s/%s: no class percentages (%s)", split, sid, exc)
        return [""] * len(CLASS_NAMES)
