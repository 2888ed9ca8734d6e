"""Learning curves of ``groundsynth train-generator``: the generator judged on held-out real
data while it trains.

At the start of training (step 0, or the step a run resumes at), every ``eval_every`` steps and
at the last step, rank zero evaluates the sampling weights (EMA) on a fixed held-out set:

* **label fidelity** (kinds that paint a map): one sample per held-out map, from fixed seeds,
  read back by the pixel floor (:mod:`groundsynth.evaluate.pixel_floor`, fitted once on the
  training split and cached as ``floor.json``) and, given ``eval_segmenter``, by a
  real-trained segmenter; the macro IoU of the read-back against the maps, pooled over the set
  (:func:`~groundsynth.benchmark.metrics.metrics_from_confusion`). Its **ceiling** is the same
  reader on the real held-out images (computed once).
* **FD**: the Fréchet distance between the samples' and the held-out real images' features,
  with the **real-halves FD** (the median over random splits of the held-out set in two
  halves, :class:`~groundsynth.evaluate.fidelity.HalfSplits`; computed once) as its reference; and k-NN precision / recall (k = 5) against the held-out set. Features: the
  segmenter's pooled encoder features when given, else the coarse fixed descriptor of
  :mod:`groundsynth.evaluate.descriptor`. Each half has half the samples, so at equal quality
  the real-halves FD runs somewhat above a sample-vs-real FD; read ``fd_ratio`` near 1 as
  "indistinguishable at this sample size".

The held-out set is ``eval_split`` (``val`` by default, else ``test``); a dataset with neither
gives up the last ``min(eval_samples, max(2, n / 10))`` samples of its training split, which
are then held out of training (the log says so). At most ``eval_samples`` samples are used, a
seeded subset, read and generated in batches of ``batch_size``: nothing scales with the
dataset. Evaluation runs without gradients in eval mode (each submodule's mode is restored
afterwards) and saves and restores the global RNG states: the training stream does not change.

Files in the run directory: ``curves.csv`` (one row per evaluation, :data:`CURVE_COLUMNS`;
rows beyond a resumed step are dropped), ``curves.png`` (redrawn at each evaluation) and
``floor.json``. With ``stop_on_plateau``, training stops once the main figure (label fidelity
for kinds that paint a map, FD otherwise) has not improved by more than ``plateau_min_delta``
for ``plateau_patience`` evaluations (:func:`plateau_step`); a rerun finds the plateau in
``curves.csv`` and does not train further.
"""

from __future__ import annotations

import contextlib
import logging
import math
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch

from groundsynth.benchmark.metrics import confusion_update, metrics_from_confusion
from groundsynth.classes import CLASS_NAMES, NUM_CLASSES
from groundsynth.data.reader import DatasetReader
from groundsynth.errors import InputError, OutputConflictError
from groundsynth.evaluate.descriptor import image_descriptor
from groundsynth.evaluate.fidelity import FeatureStats, HalfSplits, frechet_distance, prdc
from groundsynth.evaluate.pixel_floor import PixelFloor, sample_pixels
from groundsynth.generate.config import MAP_KINDS, TrainConfig
from groundsynth.generate.curve_records import (
    CURVE_COLUMNS,
    PRDC_K,
    _append_row,
    _main_column,
    _short,
    evaluations_since_best,
    learning_summary,
    plateau_step,
    plot_curves,
    read_curves,
)
from groundsynth.generate.data import TrainingItems
from groundsynth.generate.loading import LoadedGenerator
from groundsynth.generate.seeds import derive_seed, numpy_rng, rng_state, set_rng_state

__all__ = [
    "CURVE_COLUMNS",
    "CurvesCallback",
    "EvalSet",
    "LearningCurves",
    "eval_seeds",
    "evaluations_since_best",
    "learning_summary",
    "plateau_step",
    "plot_curves",
    "read_curves",
    "resolve_eval_set",
]

log = logging.getLogger(__name__)

#: Training images (at most) the pixel floor is fitted on, a seeded subset beyond.
FLOOR_IMAGES = 2000


# ----------------------------------------------------------------------------- held-out set
@dataclass(frozen=True)
class EvalSet:
    """The fixed held-out samples: ``ids`` of ``split``; ``held_out_of_training`` are ids of
    the training split left out of training (the fallback when there is no held-out split)."""

    split: str
    ids: tuple[str, ...]
    held_out_of_training: tuple[str, ...] = ()
    note: str = ""


def _subset(ids: list[str], n: int, seed: int) -> tuple[str, ...]:
    if len(ids) <= n:
        return tuple(ids)
    chosen = np.sort(numpy_rng(seed, "eval-set").choice(len(ids), size=n, replace=False))
    return tuple(ids[i] for i in chosen)


def resolve_eval_set(reader: DatasetReader, config: TrainConfig) -> EvalSet | None:
    """The held-out set of ``config`` (``None`` when ``eval_every`` is 0); see the module
    docstring for the fallbacks."""
    if not config.eval_every:
        return None
    splits = reader.splits()
    wanted = config.eval_split
    if wanted not in splits and wanted != "val":
        raise InputError(
            f"{reader.root}: no split {wanted!r} to evaluate on; splits: {', '.join(splits)}"
        )
    for name in (wanted, "test") if wanted == "val" else (wanted,):
        if name in splits and reader.len(name):
            note = "" if name == wanted else f"no {wanted!r} split: evaluating on {name!r}"
            if name == config.split:
                note = (
                    f"evaluating on the training split {name!r} itself (samples seen in training)"
                )
            return EvalSet(
                name, _subset(reader.ids(name), config.eval_samples, config.seed), note=note
            )
    ids = reader.ids(config.split)
    k = min(config.eval_samples, max(2, len(ids) // 10))
    if len(ids) - k < 2:
        raise InputError(
            f"{reader.root}: no 'val' or 'test' split, and split {config.split!r} has only "
            f"{len(ids)} samples, too few to hold {k} out for evaluation; add a val split or "
            "give --eval-every 0"
        )
    tail = tuple(ids[-k:])
    note = (
        f"no 'val' or 'test' split: evaluating on the last {k} samples of {config.split!r}, "
        "held out of training"
    )
    return EvalSet(config.split, tail, held_out_of_training=tail, note=note)


def eval_seeds(config: TrainConfig, n: int) -> list[int]:
    """The noise seeds of the ``n`` evaluation samples (the same at every evaluation)."""
    return [derive_seed(config.seed, "eval", i) for i in range(n)]


# ----------------------------------------------------------------------------- evaluator
@contextlib.contextmanager
def _evaluating(module: torch.nn.Module) -> Iterator[None]:
    """Eval mode without gradients; every submodule's mode and the RNG states restored."""
    modes = [(m, m.training) for m in module.modules()]
    state = rng_state()
    module.eval()
    try:
        with torch.no_grad():
            yield
    finally:
        for m, mode in modes:
            m.training = mode
        set_rng_state(state)


def _batches(n: int, size: int) -> Iterator[range]:
    for start in range(0, n, size):
        yield range(start, min(n, start + size))


class LearningCurves:
    """Evaluates a training module on the held-out set and keeps ``curves.csv`` (see the
    module docstring). The readers, features and reference figures are set up at the first
    evaluation, on the module's device."""

    def __init__(
        self, config: TrainConfig, reader: DatasetReader, eval_set: EvalSet, out: Path
    ) -> None:
        self.config, self.reader, self.eval_set, self.out = config, reader, eval_set, out
        self.map_kind = config.kind in MAP_KINDS
        if config.eval_segmenter is not None and not Path(config.eval_segmenter).is_file():
            raise InputError(f"--eval-segmenter {config.eval_segmenter}: file not found")
        self.items = TrainingItems(
            reader, eval_set.split, config.image_size, fit=config.fit, augment=False,
            with_masks=self.map_kind,
        )  # fmt: skip
        self.items.ids = list(eval_set.ids)
        self.path = out / "curves.csv"
        if self.path.is_file():
            header = self.path.read_text(encoding="utf-8").split("\n", 1)[0]
            if header != ",".join(CURVE_COLUMNS):
                raise OutputConflictError(
                    f"{self.path}: holds other columns ({header}); move it away to resume"
                )
        self.rows = read_curves(out)
        self.floor: PixelFloor | None = None
        self.segmenter: Any = None
        self.features = "descriptor"
        self.reference: dict[str, float | None] | None = None
        self.real_stats: FeatureStats | None = None

    def describe(self) -> str:
        readers = "pixel floor" + (" and segmenter" if self.config.eval_segmenter else "")
        feats = "segmenter encoder" if self.config.eval_segmenter else "fixed descriptor"
        what = f"label fidelity ({readers}), " if self.map_kind else ""
        return (
            f"learning curves every {self.config.eval_every} steps on {len(self.eval_set.ids)} "
            f"held-out samples of {self.eval_set.split!r}: {what}FD ({feats})"
        )

    # ------------------------------------------------------------------ set-up
    def _fit_floor(self) -> PixelFloor | None:
        path = self.out / "floor.json"
        if path.is_file():
            try:
                return PixelFloor.load(path)
            except InputError as exc:
                log.warning("%s; fitting it again", exc)
        cfg = self.config
        train = TrainingItems(
            self.reader, cfg.split, cfg.image_size, fit=cfg.fit, augment=False,
            exclude=self.eval_set.held_out_of_training,
        )  # fmt: skip
        n = len(train)
        idx = range(n) if n <= FLOOR_IMAGES else np.sort(
            numpy_rng(cfg.seed, "floor").choice(n, FLOOR_IMAGES, replace=False)
        )  # fmt: skip
        try:
            x, y = sample_pixels((train.arrays(int(i), None) for i in idx), seed=cfg.seed)
        except InputError as exc:
            if self.map_kind:
                raise
            log.warning("no pixel floor (%s): the descriptor's class shares are zeros", exc)
            return None
        floor = PixelFloor.fit(x, y)
        floor.info.update(
            {"dataset": str(self.reader.root), "splits": [cfg.split], "seed": cfg.seed,
             "images": len(idx), "image_size": cfg.image_size}
        )  # fmt: skip
        floor.save(path)
        return floor

    def _load_segmenter(self, device: torch.device) -> Any:
        from groundsynth.benchmark.model import load_segmenter
        from groundsynth.runs import file_digest

        path = str(self.config.eval_segmenter)
        model, _ = load_segmenter(path, map_location=device)
        if model.spec.in_channels != 3 or model.spec.classes != NUM_CLASSES:
            raise InputError(
                f"--eval-segmenter {path}: takes {model.spec.in_channels} bands and predicts "
                f"{model.spec.classes} classes; need an RGB segmenter of the {NUM_CLASSES} classes"
            )
        self.features = f"segmenter:{file_digest(path)[:12]}"
        return model.eval().requires_grad_(False)

    def _setup(self, device: torch.device) -> None:
        t0 = time.perf_counter()
        self.floor = self._fit_floor()
        if self.config.eval_segmenter:
            self.segmenter = self._load_segmenter(device)
        n = len(self.eval_set.ids)
        real = FeatureStats(max_samples=n)
        splits = HalfSplits(seed=derive_seed(self.config.seed, "eval-halves"))
        cms = {r: np.zeros((NUM_CLASSES, NUM_CLASSES), np.int64) for r in self._readers()}
        for batch in _batches(n, self.config.batch_size):
            arrays = [self.items.arrays(i, None) for i in batch]
            images = np.stack([a for a, _ in arrays])
            feats = self._features(images)
            real.update(feats)
            splits.update(feats)
            if self.map_kind:
                masks = np.stack([m for _, m in arrays])
                for r, pred in self._read_back(images).items():
                    cms[r] += confusion_update(pred, masks, NUM_CLASSES)
        ref: dict[str, float | None] = {f"ceiling_{r}": _iou(cm) for r, cm in cms.items()}
        ref["fd_real_halves"] = splits.median()
        self.reference, self.real_stats = ref, real
        log.info("learning-curve references in %.1f s: %s", time.perf_counter() - t0,
                 ", ".join(f"{k} {_short(v)}" for k, v in ref.items()))  # fmt: skip

    def _readers(self) -> list[str]:
        if not self.map_kind:
            return []
        return ["floor", "segmenter"] if self.config.eval_segmenter else ["floor"]

    def _to_tensor(self, images: np.ndarray) -> torch.Tensor:
        x = torch.from_numpy(images).permute(0, 3, 1, 2).float().div_(255.0)
        return x.to(next(self.segmenter.parameters()).device)

    def _read_back(self, images: np.ndarray) -> dict[str, np.ndarray]:
        out = {"floor": self.floor.predict(images)}  # type: ignore[union-attr]
        if self.segmenter is not None:
            out["segmenter"] = self.segmenter(self._to_tensor(images)).argmax(1).cpu().numpy()
        return out

    def _features(self, images: np.ndarray) -> np.ndarray:
        if self.segmenter is not None:
            return self.segmenter.features(self._to_tensor(images)).double().cpu().numpy()
        return image_descriptor(images, self.floor)

    # ------------------------------------------------------------------ evaluation
    def evaluate(self, module: Any) -> dict[str, Any]:
        """One row of ``curves.csv`` for the module's current sampling weights."""
        with _evaluating(module):
            if self.reference is None or self.real_stats is None:
                self._setup(module.device)
            t0 = time.perf_counter()
            net = module.sampling_network()
            dtype = next(net.parameters()).dtype
            gen = LoadedGenerator(
                kind=module.kind, network=net, train_config=self.config,
                step=module.steps_done, run_name=self.out.name, checkpoint=self.out,
            )  # fmt: skip
            autocast = dtype if dtype in (torch.float16, torch.bfloat16) else None
            n = len(self.eval_set.ids)
            seeds = eval_seeds(self.config, n)
            fake = FeatureStats(max_samples=n)
            cms = {r: np.zeros((NUM_CLASSES, NUM_CLASSES), np.int64) for r in self._readers()}
            for batch in _batches(n, self.config.batch_size):
                masks = None
                if self.map_kind:
                    masks = np.stack([self.items.arrays(i, None)[1] for i in batch])
                images = gen.images([seeds[i] for i in batch], masks, autocast=autocast)
                fake.update(self._features(images))
                if masks is not None:
                    for r, pred in self._read_back(images).items():
                        cms[r] += confusion_update(pred, masks, NUM_CLASSES)
        real, ref = self.real_stats, dict(self.reference)
        fd = frechet_distance(fake.mean, fake.cov, real.mean, real.cov) if n >= 2 else math.nan
        pr: dict[str, Any] = {"precision": math.nan, "recall": math.nan}
        if n > PRDC_K:
            pr = prdc(real.sample(), fake.sample(), k=PRDC_K)
        row = {
            "step": module.steps_done,
            **{f"label_fidelity_{r}": _iou(cm) for r, cm in cms.items()},
            **ref,
            "fd": fd,
            "precision": pr["precision"],
            "recall": pr["recall"],
            "features": self.features,
            "seconds": round(time.perf_counter() - t0, 3),
        }
        return row

    def record(self, module: Any) -> bool:
        """Evaluate at the module's step unless ``curves.csv`` has that step; append the row,
        redraw ``curves.png``; return whether training should stop (plateau)."""
        step = module.steps_done
        if not self.rows or self.rows[-1]["step"] < step:
            row = self.evaluate(module)
            _append_row(self.path, row)
            self.rows.append(read_curves(self.out)[-1])
            summary = learning_summary(self.rows, self.config) or {}
            lf = "" if summary.get("label_fidelity") is None else (
                f"label fidelity {_short(summary['label_fidelity'])} (ceiling "
                f"{_short(summary['ceiling'])}), "
            )  # fmt: skip
            log.info("evaluation at step %d: %sFD %s (real halves %s) in %.1f s", step, lf,
                     _short(row["fd"]), _short(row["fd_real_halves"]), row["seconds"])  # fmt: skip
            try:
                plot_curves(self.rows, self.out / "curves.png", title=self.out.name)
            except ImportError as exc:  # matplotlib missing: the CSV still has it all
                log.warning("curves.png not drawn: %s", exc)
        return plateau_step(self.rows, self.config) is not None


def _iou(cm: np.ndarray) -> float:
    return float(metrics_from_confusion(cm, CLASS_NAMES)["iou"])


class CurvesCallback(L.Callback):
    """Runs :meth:`LearningCurves.record` at the start and every ``eval_every`` steps (and at
    the last) on rank zero, and stops training on a plateau (``stopped_at``). Place it before
    the checkpointing callback, which saves a checkpoint when training stops early."""

    def __init__(self, curves: LearningCurves) -> None:
        self.curves = curves
        self.stopped_at: int | None = None

    def _record(self, trainer: L.Trainer, module: Any) -> None:
        stop = self.curves.record(module) if trainer.is_global_zero else False
        stop = bool(trainer.strategy.broadcast(stop, src=0))
        if stop and module.steps_done < self.curves.config.max_steps:
            self.stopped_at = module.steps_done
            trainer.should_stop = True
            log.info(
                "stopping early at step %d: no improvement of %s by more than %g in %d evaluations",
                module.steps_done,
                _main_column(self.curves.config),
                self.curves.config.plateau_min_delta,
                self.curves.config.plateau_patience,
            )

    def on_train_start(self, trainer: L.Trainer, module: Any) -> None:
        self._record(trainer, module)

    def on_train_batch_end(self, trainer: L.Trainer, module: Any, *args: Any) -> None:
        cfg = self.curves.config
        step = module.steps_done
        if step % cfg.eval_every == 0 or step == cfg.max_steps:
            self._record(trainer, module)
