"""``groundsynth train-generator``: train a generator through Lightning, resumably.

The run directory holds::

    RUN/
      config.yaml  manifest.json  train-generator.log    (groundsynth.runs)
      checkpoints/step<k:08d>.pt                          every ``checkpoint_every`` steps
      samples/step<k:08d>.png                             sample grid at each checkpoint
      losses.csv                                          every step's losses
      checkpoints.json                                    per checkpoint: step, mean losses, grid
      curves.csv  curves.png  floor.json                  learning curves (generate.curves)

Rerunning the same command on the same directory resumes from the latest checkpoint (a larger
``--max-steps`` trains further); the weights then equal those of an uninterrupted run (bit for
bit on the CPU; on GPUs up to non-deterministic kernels). A directory holding another run's
config is refused.

With ``eval_every`` > 0 the generator is evaluated on held-out real data at the start and every
``eval_every`` steps (:mod:`groundsynth.generate.curves`); the last evaluation goes into the
manifest as ``learning``. With ``stop_on_plateau`` training stops early once that figure stops
improving (manifest ``stopped_early_at``); rerunning a run so stopped does not train further.
"""

from __future__ import annotations

import csv
import io
import logging
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
import yaml

from groundsynth.benchmark.interrupt import reraise_interrupt
from groundsynth.data.masks import encode_rgb_png
from groundsynth.data.reader import open_dataset
from groundsynth.errors import InputError, OutputConflictError
from groundsynth.generate.checkpoint import (
    checkpoint_path,
    list_checkpoints,
    load_checkpoint,
    save_checkpoint,
)
from groundsynth.generate.config import MAP_KINDS, TrainConfig
from groundsynth.generate.curves import (
    CurvesCallback,
    EvalSet,
    LearningCurves,
    learning_summary,
    plateau_step,
    read_curves,
    resolve_eval_set,
)
from groundsynth.generate.data import StreamSampler, TrainingItems
from groundsynth.generate.module import GeneratorModule
from groundsynth.io import write_bytes, write_json, write_text
from groundsynth.runs import start_run

__all__ = ["GENERATOR_KINDS", "TrainResult", "get_generator_kind", "train_generator"]

log = logging.getLogger(__name__)


def _conditional() -> type[GeneratorModule]:
    from groundsynth.generate.conditional.module import ConditionalGAN

    return ConditionalGAN


def _diffusion() -> type[GeneratorModule]:
    from groundsynth.generate.diffusion import DiffusionModule

    return DiffusionModule


def _conditional_diffusion() -> type[GeneratorModule]:
    from groundsynth.generate.conditional_diffusion import ConditionalDiffusionModule

    return ConditionalDiffusionModule


#: generator kind -> function returning its Lightning module class
GENERATOR_KINDS: dict[str, Callable[[], type[GeneratorModule]]] = {
    "conditional": _conditional,
    "diffusion": _diffusion,
    "conditional-diffusion": _conditional_diffusion,
}


def get_generator_kind(kind: str) -> type[GeneratorModule]:
    """The Lightning module class of generator ``kind``."""
    try:
        return GENERATOR_KINDS[kind]()
    except KeyError:
        raise InputError(
            f"unknown generator kind {kind!r}; valid: {', '.join(GENERATOR_KINDS)}"
        ) from None


@dataclass
class TrainResult:
    """What :func:`train_generator` did."""

    out: Path
    steps: int
    resumed_from: int | None
    checkpoints: list[Path]
    seconds: float
    manifest: dict[str, Any] = field(default_factory=dict)
    #: the step training stopped at on a plateau of the learning curve (``None``: it did not)
    stopped_early_at: int | None = None
    #: the last learning-curve evaluation (:func:`~groundsynth.generate.curves.learning_summary`)
    learning: dict[str, Any] | None = None

    @property
    def last_checkpoint(self) -> Path | None:
        return self.checkpoints[-1] if self.checkpoints else None


# ----------------------------------------------------------------------------- run directory
def _previous_config(out: Path, config: TrainConfig) -> TrainConfig | None:
    """The config of the run already in ``out`` (``None`` if none); refuse another run's."""
    if not out.exists():
        return None
    if not out.is_dir():
        raise OutputConflictError(f"{out}: exists and is not a directory")
    cfg_path = out / "config.yaml"
    if not cfg_path.is_file():
        if any(out.iterdir()):
            raise OutputConflictError(
                f"{out}: folder is not empty and holds no generator run (no config.yaml); "
                "choose a new --out"
            )
        return None
    try:
        previous = TrainConfig.from_dict(yaml.safe_load(cfg_path.read_text(encoding="utf-8")))
    except (InputError, TypeError, KeyError, yaml.YAMLError) as exc:
        raise OutputConflictError(
            f"{cfg_path}: holds another stage's or an unreadable config ({exc}); choose a new --out"
        ) from None
    old, new = previous.identity(), config.identity()
    if old != new:
        diff = sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))
        raise OutputConflictError(
            f"{out}: holds a run with different options ({', '.join(diff)}); rerun with the same "
            "options to resume, or choose a new --out"
        )
    return previous


def _truncate_losses(path: Path, step: int) -> None:
    """Keep only the complete rows of ``losses.csv`` up to ``step`` (resuming)."""
    if not path.is_file():
        return
    lines = path.read_text(encoding="utf-8").splitlines()
    if not lines:
        return
    header, keep = lines[0], [lines[0]]
    width = len(header.split(","))
    for line in lines[1:]:
        parts = line.split(",")
        if len(parts) == width and parts[0].isdigit() and int(parts[0]) <= step:
            keep.append(line)
    write_text(path, "\n".join(keep) + "\n")


def _grid_png(rows: list[np.ndarray]) -> bytes | None:
    if not rows:
        return None
    width = max(r.shape[1] for r in rows)
    padded = [np.pad(r, ((0, 0), (0, width - r.shape[1]), (0, 0))) for r in rows]
    return encode_rgb_png(np.concatenate(padded, axis=0))


# ----------------------------------------------------------------------------- Lightning parts
class _StreamData(L.LightningDataModule):
    """The endless training stream, built per rank when Lightning asks for it."""

    def __init__(self, items: TrainingItems, config: TrainConfig, module: GeneratorModule) -> None:
        super().__init__()
        self.items, self.config, self.module = items, config, module

    def train_dataloader(self) -> torch.utils.data.DataLoader:
        sampler = StreamSampler(
            len(self.items),
            self.config.seed,
            start=self.module.samples_seen,
            rank=self.trainer.global_rank,
            world=self.trainer.world_size,
        )
        workers = self.config.num_workers
        return torch.utils.data.DataLoader(
            self.items,
            batch_size=self.config.batch_size,
            sampler=sampler,  # type: ignore[arg-type]
            drop_last=True,
            num_workers=workers,
            persistent_workers=workers > 0,
            pin_memory=torch.cuda.is_available(),
        )


class _Checkpointer(L.Callback):
    """Every ``checkpoint_every`` steps, at the last and when training stops early (so the run
    resumes where it stopped): checkpoint, losses, sample grid."""

    def __init__(self, out: Path, config: TrainConfig, items: TrainingItems) -> None:
        self.out, self.config, self.items = out, config, items
        self.saved: list[Path] = []

    def on_train_batch_end(self, trainer: L.Trainer, module: Any, *args: Any) -> None:
        step = module.steps_done
        due = step % self.config.checkpoint_every == 0 or step == self.config.max_steps
        if not due and not trainer.should_stop:
            return
        if trainer.is_global_zero:
            self.saved.append(save_run_checkpoint(self.out, module, self.config, self.items))
        trainer.strategy.barrier()


def save_run_checkpoint(
    out: Path, module: GeneratorModule, config: TrainConfig, items: TrainingItems
) -> Path:
    """Append the losses since the last checkpoint, write the sample grid and the checkpoint,
    update ``checkpoints.json`` and drop checkpoints beyond ``keep_checkpoints``."""
    step = module.steps_done
    rows = module.pop_losses()
    losses_path = out / "losses.csv"
    names = list(module.loss_names)
    new_file = not losses_path.is_file()
    with open(losses_path, "a", encoding="utf-8", newline="") as fh:
        writer = csv.writer(fh, lineterminator="\n")  # as a resume's truncation writes it
        if new_file:
            writer.writerow(["step", *names])
        first = step - len(rows) + 1
        for i, row in enumerate(rows):
            writer.writerow([first + i, *(f"{row.get(n, float('nan')):.6g}" for n in names)])
    was_training = module.training
    module.eval()
    try:
        fixed = [items.arrays(i, None) for i in range(min(config.grid_rows, len(items)))]
        grid = _grid_png(module.grid_rows(fixed)) if fixed else None
    finally:
        module.train(was_training)
    grid_file = None
    if grid is not None:
        grid_file = Path("samples") / f"step{step:08d}.png"
        write_bytes(out / grid_file, grid)
    path = save_checkpoint(checkpoint_path(out, step), module.checkpoint_payload(out.name))
    index_path = out / "checkpoints.json"
    index = _read_index(index_path)
    index = [e for e in index if e["step"] < step]
    index.append(
        {
            "step": step,
            "file": str(path.relative_to(out)),
            "grid": None if grid_file is None else str(grid_file),
            "time": time.strftime("%Y-%m-%dT%H:%M:%S"),
            "mean_losses": {n: float(np.mean([r[n] for r in rows])) for n in names} if rows else {},
        }
    )
    write_json(index_path, index)
    if config.keep_checkpoints:
        for _, old in list_checkpoints(out)[: -config.keep_checkpoints]:
            old.unlink()
    log.info("checkpoint at step %d: %s", step, path)
    return path


def _read_index(path: Path) -> list[dict[str, Any]]:
    import json

    if not path.is_file():
        return []
    try:
        return list(json.loads(path.read_text(encoding="utf-8")))
    except ValueError:
        log.warning("%s: unreadable checkpoint index, starting a new one", path)
        return []


def _check_holdout(out: Path, previous: TrainConfig, eval_set: EvalSet | None, reader: Any) -> None:
    """Refuse to resume with other training samples held out for evaluation than the run's."""
    before = resolve_eval_set(reader, previous)
    held_before = before.held_out_of_training if before is not None else ()
    held_now = eval_set.held_out_of_training if eval_set is not None else ()
    if held_before != held_now:
        raise OutputConflictError(
            f"{out}: the dataset has no val or test split, so learning curves hold the tail of "
            f"the training split out of training; the run held out {len(held_before)} samples, "
            f"these options {len(held_now)}. Rerun with the run's --eval-every, --eval-split and "
            "--eval-samples, or choose a new --out"
        )


def _on_cuda(config: TrainConfig) -> bool:
    acc = config.accelerator.lower()
    return acc in ("cuda", "gpu") or (acc == "auto" and torch.cuda.is_available())


def resolve_precision(config: TrainConfig) -> str:
    """``auto`` -> bf16-mixed (16-mixed without bf16) on CUDA, 32-true elsewhere."""
    if config.precision != "auto":
        return config.precision
    if _on_cuda(config):
        return "bf16-mixed" if torch.cuda.is_bf16_supported() else "16-mixed"
    return "32-true"


def _devices(devices: str) -> Any:
    return int(devices) if devices.isdigit() else devices


def _strategy(config: TrainConfig) -> str:
    # GAN steps leave one network's parameters without gradients, as do a cascade's steps
    # that train its base alone: DDP must allow it.
    skips = config.kind == "conditional" or getattr(config.model, "cascade_every", 1) > 1
    if skips and config.strategy == "ddp":
        return "ddp_find_unused_parameters_true"
    return config.strategy


# ----------------------------------------------------------------------------- entry point
def train_generator(
    config: TrainConfig, *, progress: bool = True, callbacks: Sequence[L.Callback] = ()
) -> TrainResult:
    """Train (or resume training) a generator as described by ``config``.

    ``callbacks`` are extra Lightning callbacks (e.g. timing or monitoring); they run after the
    learning-curve and checkpointing callbacks.
    """
    t0 = time.perf_counter()
    config = config.resolved()
    out = Path(config.out)
    previous = _previous_config(out, config)
    reader = open_dataset(config.dataset)
    eval_set = resolve_eval_set(reader, config)
    if previous is not None:
        _check_holdout(out, previous, eval_set, reader)
    items = TrainingItems(
        reader,
        config.split,
        config.image_size,
        fit=config.fit,
        augment=config.augment,
        with_masks=config.kind in MAP_KINDS,
        exclude=eval_set.held_out_of_training if eval_set is not None else (),
    )
    module = get_generator_kind(config.kind)(config)
    resumed_from = None
    found = list_checkpoints(out) if previous is not None else []
    if found:
        payload = load_checkpoint(found[-1][1])
        module.restore(payload)
        resumed_from = module.steps_done
    else:
        module.prepare(items)
    if previous is not None:
        _truncate_losses(out / "losses.csv", module.steps_done)
        _truncate_losses(out / "curves.csv", module.steps_done)
    curves = LearningCurves(config, reader, eval_set, out) if eval_set is not None else None
    curves_cb = [CurvesCallback(curves)] if curves is not None else []
    stopped_early_at = None  # a run stopped on a plateau (at its last evaluation) is finished
    last_row = curves.rows[-1]["step"] if curves is not None and curves.rows else None
    if curves is not None and last_row == module.steps_done < config.max_steps:
        stopped_early_at = plateau_step(curves.rows, config)
    precision = resolve_precision(config)
    checkpointer = _Checkpointer(out, config, items)
    remaining = 0 if stopped_early_at is not None else config.max_steps - module.steps_done
    trainer = L.Trainer(
        accelerator=config.accelerator,
        devices=_devices(config.devices),
        num_nodes=config.num_nodes,
        strategy=_strategy(config),
        precision=precision,  # type: ignore[arg-type]
        max_epochs=1,
        limit_train_batches=max(remaining, 1),
        num_sanity_val_steps=0,
        logger=False,
        enable_checkpointing=False,
        enable_model_summary=False,
        enable_progress_bar=progress,
        use_distributed_sampler=False,
        benchmark=_on_cuda(config),
        callbacks=[*curves_cb, checkpointer, *callbacks],
        default_root_dir=str(out),
    )
    run = (
        start_run(out, "train-generator", config, seeds={"seed": config.seed})
        if trainer.is_global_zero
        else None
    )
    try:
        if resumed_from is not None:
            log.info("resuming %s at step %d of %d", out, resumed_from, config.max_steps)
        if eval_set is not None and eval_set.note:
            log.warning("learning curves: %s", eval_set.note)
        if curves is not None:
            log.info("%s", curves.describe())
        if stopped_early_at is not None:
            log.info(
                "%s: stopped early at step %d (learning curve plateau); not training further",
                out,
                stopped_early_at,
            )
        elif remaining > 0:
            log.info(
                "training a %s generator on %d samples of %s/%s for %d steps (precision %s)",
                config.kind,
                len(items),
                config.dataset,
                config.split,
                remaining,
                precision,
            )
            with warnings.catch_warnings():
                # the EMA copy is in eval mode on purpose; Lightning's own deprecation noise
                warnings.filterwarnings("ignore", message=r".*module\(s\) in eval mode.*")
                warnings.filterwarnings("ignore", message=r".*LeafSpec.*")
                with reraise_interrupt(trainer):  # Ctrl-C: resumable, the CLI says so
                    trainer.fit(module, datamodule=_StreamData(items, config, module))
            if curves_cb and curves_cb[0].stopped_at is not None:
                stopped_early_at = curves_cb[0].stopped_at
            elif module.steps_done < config.max_steps:
                raise InputError(
                    f"training stopped at step {module.steps_done} of {config.max_steps}; "
                    "rerun the same command to resume from the latest checkpoint"
                )
        else:
            log.info("%s: already trained for %d steps", out, module.steps_done)
        checkpoints = [p for _, p in list_checkpoints(out)]
        learning = learning_summary(read_curves(out), config)
        manifest: dict[str, Any] = {}
        if run is not None:
            manifest = run.finish(
                inputs=[config.dataset],
                outputs={
                    "steps": module.steps_done,
                    "checkpoints": [str(p.relative_to(out)) for p in checkpoints],
                    "precision": precision,
                    "samples": len(items),
                    "learning": learning,
                },
                extra={"resumed_from": resumed_from, "stopped_early_at": stopped_early_at},
            )
    except BaseException:
        if run is not None:
            run.close()
        raise
    return TrainResult(
        out=out,
        steps=module.steps_done,
        resumed_from=resumed_from,
        checkpoints=checkpoints,
        seconds=time.perf_counter() - t0,
        manifest=manifest,
        stopped_early_at=stopped_early_at,
        learning=learning,
    )


def read_losses(out: str | Path) -> list[dict[str, float]]:
    """The rows of a run's ``losses.csv`` as dicts (``step`` as int)."""
    path = Path(out) / "losses.csv"
    if not path.is_file():
        return []
    rows = list(csv.DictReader(io.StringIO(path.read_text(encoding="utf-8"))))
    return [{k: (int(v) if k == "step" else float(v)) for k, v in r.items()} for r in rows]
