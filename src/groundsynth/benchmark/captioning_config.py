"""Options of ``groundsynth benchmark captioning`` (see :mod:`.captioning_bench`)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

from groundsynth.benchmark.captioner import CaptionerSpec
from groundsynth.benchmark.captioning_module import CaptioningOptim
from groundsynth.benchmark.options import DataOptions, check_training
from groundsynth.benchmark.sweep import EXECUTION, check_sweep_options
from groundsynth.errors import InputError
from groundsynth.evaluate.captioning import METRICS
from groundsynth.runs import to_plain

__all__ = ["CAPTIONING_KEYS", "CaptioningBenchConfig", "CaptioningBenchResult"]

#: Config fields that do not change a run's numbers (may differ when resuming).
NOT_IDENTITY = ("out", "train", "seeds", "workers", "eval_batch_size", "progress", *EXECUTION)
#: Options added after benchmarks were made, and what a ``config.yaml`` without them means:
#: such folders and runs resume.
LATER_OPTIONS: dict[str, Any] = {"composition_weight": 0.0}
#: Keys every captioning benchmark's ``config.yaml`` has (tells it from another command's run).
CAPTIONING_KEYS = frozenset(
    {"real", "synthetic", "train", "val", "test", "model", "num_beams", "min_word_count"}
)


@dataclass(frozen=True)
class CaptioningBenchConfig(DataOptions):
    """Resolved options of a captioning benchmark (saved as ``config.yaml``).

    Data: ``real`` / ``synthetic`` — a dataset directory with captions tables, or a
    Karpathy JSON with its image folder in ``real_images`` / ``synthetic_images``;
    ``streams``: caption columns to use (None: all); ``train`` regimes, ``val`` set and
    ``test`` sets in the syntax of :mod:`groundsynth.benchmark.data`.
    Model (:class:`~groundsynth.benchmark.captioner.CaptionerSpec`): ``model`` (``tiny`` or a
    local checkpoint directory), ``image_size``, ``max_length`` (target tokens),
    ``min_word_count`` and ``max_vocab`` (the tiny model's vocabulary).
    Decoding at test time: ``num_beams`` (1: greedy), ``max_new_tokens``; validation decodes
    greedily. ``metrics``: COCO metric families scored on the test sets (``cider`` required:
    validation and the learning check use it; ``meteor`` starts a Java process, ~20 s).
    Training: ``seeds``, ``lr``, ``weight_decay``, ``warmup`` (fraction of the steps),
    ``batch_size``, ``max_epochs``, ``max_steps`` (-1: no limit), ``patience`` (early
    stopping, in validation rounds), ``val_every`` (epochs between validation rounds),
    ``composition_weight`` (weight of the composition loss: a head on the encoder's pooled
    output predicts each training image's class shares, read from its dataset's
    class-percentage or captions table; 0: off, as it is where no training image has them;
    see :mod:`~groundsynth.benchmark.captioning_module`).
    Hardware (Lightning passthrough): ``accelerator``, ``devices``, ``num_nodes``,
    ``strategy``, ``precision``, ``deterministic``.
    Where runs train (:mod:`~groundsynth.benchmark.sweep`; not part of a run's identity):
    ``executor`` (``local``: here, one after the other; ``processes``: worker processes on this
    machine, ``ray_cpus`` threads each; ``ray``: one Ray task per run, on one device),
    ``ray_address`` (``None``: a local cluster), ``ray_cpus`` / ``ray_gpus`` per run.
    """

    out: str
    real: str | None = None
    synthetic: str | None = None
    real_images: str | None = None
    synthetic_images: str | None = None
    streams: tuple[str, ...] | None = None
    train: tuple[str, ...] = ("real",)
    val: str = "real"
    test: str = "real"
    model: str = "tiny"
    image_size: int | None = None
    max_length: int = 64
    min_word_count: int = 2
    max_vocab: int = 20_000
    num_beams: int = 1
    max_new_tokens: int = 40
    metrics: tuple[str, ...] = METRICS
    seeds: tuple[int, ...] = (0, 1, 2)
    lr: float = 1e-3
    weight_decay: float = 0.01
    warmup: float = 0.1
    batch_size: int = 32
    eval_batch_size: int | None = None
    workers: int = 0
    max_epochs: int = 30
    max_steps: int = -1
    patience: int = 5
    val_every: int = 1
    composition_weight: float = 0.0
    accelerator: str = "auto"
    devices: str | int = "auto"
    num_nodes: int = 1
    strategy: str = "auto"
    precision: str = "32-true"
    deterministic: bool | Literal["warn"] = "warn"
    progress: bool = True
    executor: Literal["local", "processes", "ray"] = "local"
    ray_address: str | None = None
    ray_cpus: float = 1.0
    ray_gpus: float = 0.0

    def __post_init__(self) -> None:
        self.check_data()
        unknown = [m for m in self.metrics if m not in METRICS]
        if unknown or "cider" not in self.metrics:
            raise InputError(
                f"metrics must be among {list(METRICS)} and include cider (validation and the "
                f"learning check use it), got {list(self.metrics)}"
            )
        if self.batch_size < 1 or (self.eval_batch_size is not None and self.eval_batch_size < 1):
            raise InputError(
                f"batch_size and eval_batch_size must be >= 1, got {self.batch_size}, {self.eval_batch_size}"
            )
        if self.num_beams < 1 or self.max_new_tokens < 1:
            raise InputError(
                f"num_beams and max_new_tokens must be >= 1, got {self.num_beams}, {self.max_new_tokens}"
            )
        if self.model == "tiny" and self.max_new_tokens >= 128:
            raise InputError(
                f"the tiny captioner writes at most 127 tokens; got max_new_tokens={self.max_new_tokens}"
            )
        if not self.composition_weight >= 0 or math.isinf(self.composition_weight):
            raise InputError(
                f"composition_weight must be a finite number >= 0, got {self.composition_weight}"
            )
        check_training(self)
        check_sweep_options(self)
        self.spec()

    def spec(self) -> CaptionerSpec:
        return CaptionerSpec(
            self.model, self.image_size, self.max_length, self.min_word_count, self.max_vocab
        )

    def optim(self) -> CaptioningOptim:
        return CaptioningOptim(self.lr, self.weight_decay, self.warmup)

    def resolved(self) -> CaptioningBenchConfig:
        """Absolute paths, normalised regime names, metrics in the toolkit's order."""

        def absolute(p: str | None) -> str | None:
            return None if p is None else str(Path(p).resolve())

        return replace(
            self,
            out=str(Path(self.out).resolve()),
            real=absolute(self.real),
            synthetic=absolute(self.synthetic),
            real_images=absolute(self.real_images),
            synthetic_images=absolute(self.synthetic_images),
            model=self.model if self.model == "tiny" else str(Path(self.model).resolve()),
            train=tuple(r.name for r in self.regimes()),
            seeds=tuple(int(s) for s in self.seeds),
            metrics=tuple(m for m in METRICS if m in self.metrics),
        )

    def run_identity(self, regime: str, seed: int) -> dict[str, Any]:
        """What makes one run's numbers: shared settings plus its regime and seed."""
        d = {k: v for k, v in to_plain(self).items() if k not in NOT_IDENTITY}
        for key, default in LATER_OPTIONS.items():  # left out at its default, as before it
            if d.get(key) == default:
                d.pop(key)
        return {**d, "regime": regime, "seed": seed}


@dataclass
class CaptioningBenchResult:
    """Outcome of :func:`~groundsynth.benchmark.captioning_bench.run_captioning_benchmark`."""

    out: Path
    rows: list[dict[str, Any]]
    summary: list[dict[str, Any]]
    files: dict[str, str]
    trained: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    seconds: float = 0.0
