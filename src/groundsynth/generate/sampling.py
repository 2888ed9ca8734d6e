"""``groundsynth generate``: a trained generator -> a synthetic dataset in the data contract.

* **conditional** and **conditional-diffusion** models paint layouts (see
  :mod:`groundsynth.generate.layouts`); each sample's mask is its conditioning map, and its
  layout provenance goes into the metadata. Conditional-diffusion samples follow the map
  with classifier-free guidance ``guidance`` (default: the model's).
* **diffusion** models sample images only (no masks yet; see :mod:`.writer`).

Sample ``i`` depends only on ``(seed, i)``: its layout on ``derive_seed(seed, "layout", i)``,
its noise on ``derive_seed(seed, "sample", i)`` (drawn on the CPU). So rerunning after an
interruption skips the recorded chunks and rewrites nothing differently, and the batch size or
device changes results only by floating-point rounding (at most one grey level, rarely).
``--model`` takes a run directory (its latest checkpoint) or a checkpoint file; the EMA weights
are used.

``executor="ray"`` generates each chunk as a Ray task (:mod:`groundsynth.distributed`,
:mod:`.sample_chunks`): the worker loads the generator once (kept per worker process), writes
the chunk's files and returns its rows; this process records each chunk as it finishes. The
executor options are not part of the run's identity: a run begun on one executor resumes on
the other, and the files are byte-identical (given the same device and thread settings).
They go to the manifest (``executor``: name, resources, tasks, worker processes, model
loads), not to ``config.yaml``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

import torch

from groundsynth.data.masks import resolve_png_encoder
from groundsynth.distributed import check_executor_options
from groundsynth.errors import InputError, OutputConflictError
from groundsynth.generate.config import DIFFUSION_KINDS, MAP_KINDS
from groundsynth.generate.layouts import LayoutConfig, make_layouts
from groundsynth.generate.loading import LoadedGenerator, load_generator, resolve_device
from groundsynth.generate.sample_chunks import AUTOCAST, generate_here, generate_on_ray
from groundsynth.generate.writer import read_record, record_path, write_tables
from groundsynth.io import remove_temporaries
from groundsynth.runs import check_run_dir, file_digest, start_run, to_plain

__all__ = [
    "GenerateConfig",
    "GenerateResult",
    "LoadedGenerator",
    "generate_dataset",
    "load_generator",
    "resolve_device",
]

log = logging.getLogger(__name__)

#: ``progress(done, total)`` in samples
Progress = Callable[[int, int], None]

#: where and how the work runs: neither in ``config.yaml`` nor in the run's identity
_EXECUTION = ("executor", "ray_address", "ray_cpus", "ray_gpus")
#: options that may change between a run and its resumption
_NOT_IDENTITY = ("n", "batch_size", "device", "num_workers", "out", *_EXECUTION)


@dataclass(frozen=True)
class GenerateConfig:
    """Options of ``groundsynth generate``.

    Attributes:
        model: run directory (latest checkpoint) or checkpoint file.
        out: dataset directory to write (or resume).
        n: number of samples.
        layouts: layouts to paint (conditional models; default ``train-masks``).
        masks: dataset holding the source masks of the layouts (default: the model's
            training dataset).
        split: split name of the samples in ``out``.
        seed: seed of layouts and noise.
        batch_size: samples per forward pass (does not change results beyond rounding).
        device: ``auto`` (CUDA when available), ``cpu``, ``cuda[:N]`` -- on Ray, resolved on
            each worker (``auto`` is CUDA for tasks with ``ray_gpus`` > 0, else the CPU).
        precision: ``auto`` (bf16 autocast on CUDA, fp32 elsewhere -- on Ray, on the device
            the tasks use; resolved when the run starts, so a resumed run keeps it), ``32``,
            ``bf16`` or ``16``. Channels-last memory is used on CUDA.
        sampler, steps: diffusion sampler (``ddim``/``dpm-solver``) and its steps (diffusion
            kinds; default: the model's).
        guidance: classifier-free guidance scale (conditional-diffusion; default: the
            model's; 1: the conditional model alone, 0: the unconditional one).
        image_size: output size (default: the training size; a multiple of 32).
        chunk_size: samples per resumable chunk (on Ray: per task).
        num_workers: processes preparing layouts (local only).
        png_encoder: ``auto`` (fpng when installed), ``fpng`` or ``pil``.
        executor: ``local`` (this process) or ``ray`` (one Ray task per chunk).
        ray_address: Ray cluster to join (``auto``, ``HOST:PORT``, ``ray://HOST:PORT``);
            ``None`` starts a local one for the run.
        ray_cpus: CPUs reserved per Ray task.
        ray_gpus: GPUs reserved per Ray task (``0.5``: two tasks share a GPU).
    """

    model: str
    out: str
    n: int
    layouts: LayoutConfig | None = None
    masks: str | None = None
    split: str = "synth"
    seed: int = 0
    batch_size: int = 16
    device: str = "auto"
    precision: Literal["auto", "32", "bf16", "16"] = "auto"
    sampler: str | None = None
    steps: int | None = None
    guidance: float | None = None
    image_size: int | None = None
    chunk_size: int = 256
    num_workers: int = 0
    png_encoder: str = "auto"
    executor: Literal["local", "ray"] = "local"
    ray_address: str | None = None
    ray_cpus: float = 1.0
    ray_gpus: float = 0.0
    # filled in by resolution
    kind: str | None = None
    checkpoint: str | None = None
    origin: str | None = None

    def __post_init__(self) -> None:
        if isinstance(self.layouts, dict):
            object.__setattr__(self, "layouts", LayoutConfig(**self.layouts))
        if self.n < 1:
            raise InputError(f"--n must be >= 1, got {self.n}")
        for name in ("batch_size", "chunk_size"):
            if getattr(self, name) < 1:
                raise InputError(f"--{name.replace('_', '-')} must be >= 1")
        if self.num_workers < 0 or self.seed < 0:
            raise InputError("--num-workers and --seed must be >= 0")
        if self.precision not in ("auto", "32", "bf16", "16"):
            raise InputError(f"--precision must be auto, 32, bf16 or 16, got {self.precision!r}")
        if self.steps is not None and self.steps < 1:
            raise InputError(f"--steps must be >= 1, got {self.steps}")
        if self.guidance is not None and not self.guidance >= 0:
            raise InputError(f"--guidance must be >= 0, got {self.guidance}")
        if self.image_size is not None and (self.image_size < 8 or self.image_size % 8):
            raise InputError(f"--image-size must be a multiple of 8, got {self.image_size}")
        if not self.split or "/" in self.split:
            raise InputError(f"--split must be a plain folder name, got {self.split!r}")
        try:
            resolve_png_encoder(self.png_encoder)
        except ValueError as exc:
            raise InputError(str(exc)) from None
        check_executor_options(self.executor, self.ray_address, self.ray_cpus, self.ray_gpus)
        if self.executor == "ray" and self.device.startswith("cuda") and not self.ray_gpus > 0:
            raise InputError(
                f"--device {self.device} on Ray needs a GPU per task: give --ray-gpus (e.g. 1 "
                "or 0.5), or --device auto/cpu"
            )

    def resolved(self, gen: LoadedGenerator) -> GenerateConfig:
        """Paths made absolute, the model's defaults filled in, consistency checked."""
        layouts, masks, sampler, steps = self.layouts, self.masks, self.sampler, self.steps
        model = gen.train_config.model
        if gen.kind in MAP_KINDS:
            layouts = layouts or LayoutConfig()
            if masks is None and not Path(gen.train_config.dataset).is_dir():
                raise InputError(
                    f"the model's training dataset {gen.train_config.dataset} is gone; give the "
                    "dataset to draw layouts from with --masks DATASET"
                )
            masks = str(Path(masks or gen.train_config.dataset).resolve())
        elif layouts is not None or masks is not None:
            raise InputError(
                f"{gen.checkpoint}: a {gen.kind} model is unconditional; --layouts, --target "
                "and --masks are for conditional models"
            )
        if gen.kind in DIFFUSION_KINDS:
            from groundsynth.generate.diffusion import check_sampler

            sampler = check_sampler(sampler or model.sampler)
            steps = steps or model.inference_steps
        elif sampler is not None or steps is not None:
            raise InputError(f"--sampler/--steps are for diffusion models, not {gen.kind} ones")
        guidance = self.guidance
        if gen.kind == "conditional-diffusion":
            guidance = model.guidance if guidance is None else float(guidance)
        elif guidance is not None:
            raise InputError(f"--guidance is for conditional-diffusion models, not {gen.kind} ones")
        return replace(
            self,
            out=str(Path(self.out).resolve()),
            layouts=layouts,
            masks=masks,
            sampler=sampler,
            steps=steps,
            guidance=guidance,
            image_size=self.image_size or gen.train_config.image_size,
            png_encoder=resolve_png_encoder(self.png_encoder),
            kind=gen.kind,
            checkpoint=str(gen.checkpoint),
            origin=gen.origin,
            model=str(Path(self.model).resolve()),
        )

    def identity(self) -> dict[str, Any]:
        plain = to_plain(self)
        for k in _NOT_IDENTITY:
            plain.pop(k, None)
        return plain

    def saved(self) -> dict[str, Any]:
        """What ``config.yaml`` holds: every option but the executor's."""
        return {k: v for k, v in to_plain(self).items() if k not in _EXECUTION}


@dataclass
class GenerateResult:
    """What :func:`generate_dataset` did."""

    out: Path
    n: int
    written: int
    resumed: int
    origin: str
    seconds: float
    tables: dict[str, Any] = field(default_factory=dict)
    unsatisfied: int = 0
    manifest: dict[str, Any] = field(default_factory=dict)


def _check_output(out: Path, config) -> None:
    check_run_dir(out, config.identity(), what="generated dataset", ignore=_NOT_IDENTITY)


def _precision(precision: str, device_type: str) -> str:
    """``auto`` -> ``bf16`` on CUDA, ``32`` elsewhere."""
    if precision == "auto":
        return "bf16" if device_type == "cuda" else "32"
    return precision


def _task_device_type(config: GenerateConfig) -> str:
    """The kind of device Ray tasks will sample on (``cuda`` or ``cpu``, ...)."""
    if config.device == "auto":
        return "cuda" if config.ray_gpus > 0 else "cpu"
    try:
        return torch.device(config.device).type
    except RuntimeError as exc:
        raise InputError(
            f"unknown device {config.device!r} ({exc}); use auto, cpu or cuda[:N]"
        ) from None


def generate_dataset(config: GenerateConfig, *, progress: Progress | None = None) -> GenerateResult:
    """Generate (or resume generating) ``config.n`` samples into ``config.out``."""
    t0 = time.perf_counter()
    on_ray = config.executor == "ray"
    # on Ray the workers sample; here the generator is only read (on the CPU) to resolve
    device = resolve_device("cpu" if on_ray else config.device)
    gen = load_generator(config.model, device)
    task_device = _task_device_type(config) if on_ray else device.type
    config = replace(config.resolved(gen), precision=_precision(config.precision, task_device))
    out = Path(config.out)
    _check_output(out, config)
    n, size = config.n, int(config.image_size)  # type: ignore[arg-type]
    chunks = [
        (k, s, min(s + config.chunk_size, n)) for k, s in enumerate(range(0, n, config.chunk_size))
    ]
    recorded = sorted((out / ".chunks").glob("chunk_*.json")) if out.exists() else []
    stops = [rec["stop"] for p in recorded if (rec := read_record(out, int(p.stem.split("_")[1])))]
    if stops and max(stops) > n:
        raise OutputConflictError(
            f"{out}: holds {max(stops)} samples, more than --n {n}; use --n {max(stops)} or "
            "more, or a new --out"
        )
    run = start_run(out, "generate", config.saved(), seeds={"seed": config.seed})
    try:
        todo = []
        for k, start, stop in chunks:
            rec = read_record(out, k)
            if rec is None or (rec["start"], rec["stop"]) != (start, stop):
                todo.append((k, start, stop))
        done = sum(stop - start for _, start, stop in chunks) - sum(b - a for _, a, b in todo)
        if progress is not None:
            progress(done, n)
        if done:
            log.info("resuming: %d of %d samples already written", done, n)
        # what a stopped run's writers left half-made (a cancelled Ray task, kill -9)
        stale = remove_temporaries(out / config.split / "images", out / config.split / "masks")
        if stale:
            log.info("removed %d temporary file(s) a stopped run left", stale)
        layouts = None
        if gen.kind in MAP_KINDS:
            layouts = make_layouts(config.layouts, config.masks, size, config.seed)  # type: ignore[arg-type]
        if gen.kind == "conditional":
            gen.train_config.model.generator.check_size(size)
        else:
            gen.train_config.model.resolved(size)  # the U-Net's downsamplings
        written = 0

        def tick(k: int) -> None:
            nonlocal written
            written += k
            if progress is not None:
                progress(done + written, n)

        if not todo:
            executor: dict[str, Any] = {"name": config.executor, "tasks": 0}
        elif on_ray:
            sha256 = file_digest(str(config.checkpoint))
            executor = generate_on_ray(config, todo, out, sha256, tick)
        else:
            channels_last = device.type == "cuda"
            if channels_last:
                gen.network.to(memory_format=torch.channels_last)
            autocast = AUTOCAST[config.precision]
            executor = generate_here(config, gen, layouts, todo, out, autocast, channels_last, tick)
        tables = write_tables(out, config.split, _all_rows(out, chunks))
        unsatisfied = sum(1 for r in _all_rows(out, chunks) if r.get("layout_satisfied") is False)
        if unsatisfied:
            log.warning(
                "%d of %d layouts do not meet the target %s (the closest candidates were used)",
                unsatisfied,
                n,
                config.layouts.target if config.layouts else None,
            )
        outputs = {
            "samples": n,
            "written_now": written,
            "resumed": done,
            "origin": gen.origin,
            "guidance": config.guidance,
            "tables": tables,
            "target_unsatisfied": unsatisfied,
        }
        manifest = run.finish(
            inputs=[config.checkpoint] + ([config.masks] if config.masks else []),
            outputs=outputs,
            digest=[out / "metadata.parquet"],
            extra={
                "chunks": {"total": len(chunks), "resumed": len(chunks) - len(todo)},
                "executor": executor,
            },
        )
    except BaseException:
        run.close()
        raise
    return GenerateResult(
        out=out,
        n=n,
        written=written,
        resumed=done,
        origin=gen.origin,
        seconds=time.perf_counter() - t0,
        tables=tables,
        unsatisfied=unsatisfied,
        manifest=manifest,
    )


def _all_rows(out: Path, chunks: list[tuple[int, int, int]]):
    for k, _, _ in chunks:
        rec = read_record(out, k)
        if rec is None:
            raise OutputConflictError(f"{record_path(out, k)}: chunk record vanished; rerun")
        yield from rec["rows"]
