"""The pieces of ``generate`` that work on chunks: the samples of one batch, the local loop,
and one chunk as a Ray task.

A chunk is ``chunk_size`` consecutive sample indices ``start..stop-1``; its batches never
straddle two chunks, so what a chunk holds depends on the chunk alone -- not on where a run
started or which executor ran it. Each sample's files are written (atomically) by whoever
generates it; the chunk record ``.chunks/chunk_<k>.json`` (:mod:`.writer`) is written by the
driver once all the chunk's files exist, whichever executor ran the chunk.

On Ray (:mod:`groundsynth.distributed`) a worker loads the generator once per process
(keyed by checkpoint, digest and device) and builds the layouts of conditional kinds once
(keyed by the masks dataset, layout options, size and seed); layout ``i`` and the noise of
sample ``i`` depend only on ``(seed, i)`` (:mod:`.seeds`), never on the worker.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from groundsynth.data.composition import class_fractions
from groundsynth.data.contract import image_path, mask_path
from groundsynth.data.masks import encode_mask_png, encode_rgb_png
from groundsynth.distributed import make_executor, worker_cached
from groundsynth.generate.config import MAP_KINDS
from groundsynth.generate.layouts import Layout, make_layouts
from groundsynth.generate.loading import LoadedGenerator, load_generator, resolve_device
from groundsynth.generate.seeds import derive_seed
from groundsynth.generate.writer import MASK_FROM_MAP, base_row, sample_id, write_record
from groundsynth.io import write_bytes

if TYPE_CHECKING:
    from groundsynth.generate.sampling import GenerateConfig

__all__ = [
    "AUTOCAST",
    "Chunk",
    "ChunkTask",
    "chunk_batches",
    "generate_chunk",
    "generate_here",
    "generate_on_ray",
]

#: ``(chunk index, first sample, one past the last sample)``
Chunk = tuple[int, int, int]
#: ``tick(samples done)``, called as samples are written (per batch here, per chunk on Ray)
Tick = Callable[[int], None]

#: autocast dtype of each resolved precision
AUTOCAST: dict[str, torch.dtype | None] = {"32": None, "bf16": torch.bfloat16, "16": torch.float16}


def chunk_batches(batch_size: int, chunks: list[Chunk]) -> list[list[int]]:
    """Sample indices of each batch: ``batch_size`` at most, cut at each chunk's end."""
    out = []
    for _, start, stop in chunks:
        for b in range(start, stop, batch_size):
            out.append(list(range(b, min(b + batch_size, stop))))
    return out


class _LayoutItems:
    """Layouts by sample index, for a DataLoader (layouts built in worker processes)."""

    def __init__(self, strategy: Any) -> None:
        self.strategy = strategy

    def __getitem__(self, index: int) -> tuple[int, Layout]:
        return index, self.strategy.layout(index)


def _generate_batch(
    config: GenerateConfig,
    gen: LoadedGenerator,
    items: list[tuple[int, Layout | None]],
    out: Path,
    autocast: torch.dtype | None,
    channels_last: bool,
) -> list[dict[str, Any]]:
    """Generate one batch (``(index, layout)`` pairs), write its files, return its rows."""
    seeds = [derive_seed(config.seed, "sample", i) for i, _ in items]
    painted = gen.kind in MAP_KINDS
    masks = np.stack([lay.mask for _, lay in items]) if painted else None  # type: ignore[union-attr]
    images = gen.images(
        seeds,
        masks,
        image_size=config.image_size,
        sampler=config.sampler,
        steps=config.steps,
        guidance=config.guidance,
        autocast=autocast,
        channels_last=channels_last,
    )
    return [
        _write_sample(out, config, gen.origin, index, seed, image, lay)
        for (index, lay), seed, image in zip(items, seeds, images)
    ]


def generate_here(
    config: GenerateConfig,
    gen: LoadedGenerator,
    layouts: Any,
    todo: list[Chunk],
    out: Path,
    autocast: torch.dtype | None,
    channels_last: bool,
    tick: Tick,
) -> dict[str, Any]:
    """Generate the ``todo`` chunks in this process (layouts prepared by ``num_workers``
    DataLoader processes); record each chunk once its last batch is written."""
    batches = chunk_batches(config.batch_size, todo)
    loader: Any
    if layouts is not None:
        loader = torch.utils.data.DataLoader(
            _LayoutItems(layouts),  # type: ignore[arg-type]
            batch_sampler=batches,
            num_workers=config.num_workers,
            collate_fn=list,
        )
    else:
        loader = ([(i, None) for i in batch] for batch in batches)
    # which chunk each batch belongs to, and whether it is the chunk's last batch
    owners = []
    for chunk in todo:
        n_batches = len(chunk_batches(config.batch_size, [chunk]))
        owners += [(chunk, b == n_batches - 1) for b in range(n_batches)]
    rows: list[dict[str, Any]] = []
    for items, ((k, start, stop), last) in zip(loader, owners, strict=True):
        rows += _generate_batch(config, gen, items, out, autocast, channels_last)
        tick(len(items))
        if last:
            write_record(out, k, start, stop, rows)
            rows = []
    return {"name": "local"}


# ----------------------------------------------------------------------------- Ray
@dataclass(frozen=True)
class ChunkTask:
    """One chunk, self-contained: what a Ray worker needs to generate it."""

    config: GenerateConfig  # resolved: absolute paths, the model's defaults, the precision
    chunk: Chunk
    checkpoint_sha256: str


def _load(config: GenerateConfig, device: torch.device) -> LoadedGenerator:
    gen = load_generator(str(config.checkpoint), device)
    if device.type == "cuda":
        gen.network.to(memory_format=torch.channels_last)
    return gen


def generate_chunk(task: ChunkTask) -> dict[str, Any]:
    """A worker's task: generate and write a chunk's samples; return their rows and how the
    generator was had."""
    config = task.config
    device = resolve_device(config.device)
    identity = (config.checkpoint, task.checkpoint_sha256, str(device))
    gen, loaded = worker_cached("generate generator", identity, lambda: _load(config, device))
    layouts = None
    if gen.kind in MAP_KINDS:
        size = int(config.image_size)  # type: ignore[arg-type]
        key = (config.masks, config.layouts, size, config.seed)
        layouts, _ = worker_cached(
            "generate layouts",
            key,
            lambda: make_layouts(config.layouts, config.masks, size, config.seed),  # type: ignore[arg-type]
        )
    autocast, channels_last = AUTOCAST[config.precision], device.type == "cuda"
    out = Path(config.out)
    rows: list[dict[str, Any]] = []
    for batch in chunk_batches(config.batch_size, [task.chunk]):
        items = [(i, layouts.layout(i) if layouts is not None else None) for i in batch]
        rows += _generate_batch(config, gen, items, out, autocast, channels_last)
    return {"rows": rows, "pid": os.getpid(), "model_loaded": loaded}


def _chunk_label(task: ChunkTask) -> str:
    k, start, stop = task.chunk
    return f"chunk {k} (samples {start}..{stop - 1})"


def generate_on_ray(
    config: GenerateConfig, todo: list[Chunk], out: Path, sha256: str, tick: Tick
) -> dict[str, Any]:
    """Generate ``todo`` as one Ray task per chunk; record each chunk here as it finishes."""
    tasks = (ChunkTask(config, chunk, sha256) for chunk in todo)
    pids: set[int] = set()
    loads = n_tasks = 0
    with make_executor("ray", config.ray_address, config.ray_cpus, config.ray_gpus) as executor:
        work = executor.map_unordered(generate_chunk, tasks, label=_chunk_label)
        with closing(work):
            for task, result in work:
                k, start, stop = task.chunk
                write_record(out, k, start, stop, result["rows"])
                pids.add(result["pid"])
                loads += bool(result["model_loaded"])
                n_tasks += 1
                tick(stop - start)
        described = executor.describe()
    return {**described, "tasks": n_tasks, "worker_processes": len(pids), "model_loads": loads}


def _write_sample(
    out: Path,
    config: GenerateConfig,
    origin: str,
    index: int,
    seed: int,
    image: np.ndarray,
    layout: Layout | None,
) -> dict[str, Any]:
    sid = sample_id(index, config.n)
    write_bytes(
        image_path(out, config.split, sid), encode_rgb_png(image, encoder=config.png_encoder)
    )
    fractions = None
    if layout is not None:
        write_bytes(mask_path(out, config.split, sid), encode_mask_png(layout.mask))
        fractions = class_fractions(layout.mask)
    row = base_row(sid, config.split, origin, fractions)
    row["sample_seed"] = int(seed)
    if layout is not None:
        row.update(
            {
                "mask_origin": MASK_FROM_MAP,
                "layout": layout.strategy,
                "layout_source": ";".join(layout.sources),
                "layout_transform": layout.transform,
                "layout_satisfied": layout.satisfied,
            }
        )
    return row
