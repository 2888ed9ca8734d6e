"""Options and result of ``groundsynth benchmark segmentation`` (see :mod:`.segmentation`)."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

from groundsynth.benchmark.data import (
    LoaderOptions,
)
from groundsynth.benchmark.learning import FLOOR_BASES
from groundsynth.benchmark.lightning_module import OptimConfig
from groundsynth.benchmark.model import ModelSpec
from groundsynth.benchmark.options import DataOptions
from groundsynth.benchmark.sweep import EXECUTION, check_sweep_options
from groundsynth.benchmark.weights import is_weights_name, resolve_weights
from groundsynth.errors import InputError
from groundsynth.runs import to_plain

__all__ = ["BenchmarkConfig", "BenchmarkResult"]

#: Config fields that do not change a run's numbers (may differ when resuming).
NOT_IDENTITY = (
    "out",
    "archs",
    "train",
    "seeds",
    "workers",
    "eval_batch_size",
    "progress",
    *EXECUTION,
)
#: Options added after benchmarks were made, and what a ``config.yaml`` without them means:
#: such folders and runs resume.
LATER_OPTIONS: dict[str, Any] = {"floor": "regime"}
#: Keys every benchmark's ``config.yaml`` has (tells it from another command's run).
BENCHMARK_KEYS = frozenset({"real", "synthetic", "train", "val", "test", "archs", "encoder"})


@dataclass(frozen=True)
class BenchmarkConfig(DataOptions):
    """Resolved options of a segmentation benchmark (saved as ``config.yaml``).

    Data: ``real`` / ``synthetic`` dataset directories; ``train`` regimes, ``val`` set and
    ``test`` sets in the syntax of :mod:`groundsynth.benchmark.data`. Model: ``archs`` (keys of
    :data:`~groundsynth.benchmark.model.ARCHITECTURES`), ``encoder``, ``encoder_depth``,
    ``decoder_width``, ``encoder_weights`` (a name of
    :func:`~groundsynth.benchmark.weights.list_weights`, a local file or ``None``),
    ``normalisation``.
    Learning check: ``floor`` -- each run's pixel floor is fitted on its regime's training set
    (``regime``) or, for regimes with a real part, on that part alone (``real``: one fit for
    them all; see :mod:`~groundsynth.benchmark.learning`).
    Training: ``seeds``, ``loss`` (dice / ce), ``lr``, ``weight_decay``, ``batch_size``,
    ``max_epochs``, ``max_steps`` (-1: no limit), ``patience`` (early stopping, in validation
    rounds), ``schedule`` (plateau / onecycle), ``plateau_patience`` / ``plateau_factor``
    (ReduceLROnPlateau), ``augment``,
    ``limit_train_batches`` / ``limit_val_batches`` (Lightning's, for quick runs).
    Hardware (Lightning passthrough): ``accelerator``, ``devices``, ``num_nodes``, ``strategy``,
    ``precision``, ``deterministic``.
    Where runs train (:mod:`~groundsynth.benchmark.sweep`; not part of a run's identity):
    ``executor`` (``local``: here, one after the other; ``processes``: worker processes on this
    machine, ``ray_cpus`` threads each; ``ray``: one Ray task per run, on one device),
    ``ray_address`` (``None``: a local cluster), ``ray_cpus`` / ``ray_gpus`` per run.
    """

    out: str
    real: str | None = None
    synthetic: str | None = None
    train: tuple[str, ...] = ("real",)
    val: str = "real"
    test: str = "real"
    archs: tuple[str, ...] = ("unet",)
    encoder: str = "resnet34"
    encoder_depth: int = 5
    decoder_width: int | None = None
    encoder_weights: str | None = None
    normalisation: Literal["imagenet", "none"] = "imagenet"
    seeds: tuple[int, ...] = (0, 1, 2)
    loss: Literal["dice", "ce"] = "dice"
    lr: float = 1e-3
    weight_decay: float = 1e-2
    batch_size: int = 24
    eval_batch_size: int | None = None
    workers: int = 2
    max_epochs: int = 20
    max_steps: int = -1
    patience: int = 5
    floor: Literal["regime", "real"] = "regime"
    plateau_patience: int = 2
    plateau_factor: float = 0.5
    schedule: Literal["plateau", "onecycle"] = "plateau"
    augment: Literal["none", "flips"] = "flips"
    limit_train_batches: float | int | None = None
    limit_val_batches: float | int | None = None
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
        self.check_data(" DIR")
        if not self.archs:
            raise InputError("no architecture given (e.g. --archs unet,fpn)")
        if len(set(self.archs)) != len(self.archs):
            raise InputError(f"an architecture is given twice: {list(self.archs)}")
        for arch in self.archs:
            spec = self.model_spec(arch)  # validates arch, encoder depth, normalisation
        if is_weights_name(self.encoder_weights):  # fits the encoder? (nothing downloaded)
            resolve_weights(str(self.encoder_weights), self.encoder, spec.in_channels)
        if not self.seeds or len(set(self.seeds)) != len(self.seeds):
            raise InputError(f"seeds must be distinct and at least one, got {list(self.seeds)}")
        self.optim()
        LoaderOptions(self.batch_size, self.eval_batch_size, self.workers)
        if self.max_epochs < 1 or (self.max_steps != -1 and self.max_steps < 1):
            raise InputError(
                f"max_epochs must be >= 1 and max_steps >= 1 or -1, got {self.max_epochs}, {self.max_steps}"
            )
        if self.limit_val_batches is not None and not self.limit_val_batches > 0:
            raise InputError(
                f"limit_val_batches must be > 0, got {self.limit_val_batches}: validation picks "
                "the tested checkpoint and drives early stopping (use e.g. 0.1 or 2 for quick runs)"
            )
        if self.floor not in FLOOR_BASES:
            raise InputError(f"floor must be one of {', '.join(FLOOR_BASES)}, got {self.floor!r}")
        if self.patience < 1 or self.num_nodes < 1:
            raise InputError(
                f"patience and num_nodes must be >= 1, got {self.patience}, {self.num_nodes}"
            )
        if self.deterministic not in (True, False, "warn"):
            raise InputError(
                f"deterministic must be true, false or 'warn', got {self.deterministic!r}"
            )
        check_sweep_options(self)

    # ------------------------------------------------------------ derived settings
    def model_spec(self, arch: str) -> ModelSpec:
        return ModelSpec(
            arch=arch,
            encoder=self.encoder,
            encoder_depth=self.encoder_depth,
            decoder_width=self.decoder_width,
            normalisation=self.normalisation,
        )

    def optim(self) -> OptimConfig:
        return OptimConfig(
            loss=self.loss,
            lr=self.lr,
            weight_decay=self.weight_decay,
            plateau_patience=self.plateau_patience,
            plateau_factor=self.plateau_factor,
            augment=self.augment,
            schedule=self.schedule,
        )

    def resolved(self) -> BenchmarkConfig:
        """Absolute paths, normalised regime names and architecture names."""

        def absolute(p: str | None) -> str | None:
            return None if p is None else str(Path(p).resolve())

        return replace(
            self,
            out=str(Path(self.out).resolve()),
            real=absolute(self.real),
            synthetic=absolute(self.synthetic),
            encoder_weights=str(self.encoder_weights).strip().lower()
            if is_weights_name(self.encoder_weights)
            else absolute(self.encoder_weights),
            train=tuple(r.name for r in self.regimes()),
            archs=tuple(self.model_spec(a).arch for a in self.archs),
            seeds=tuple(int(s) for s in self.seeds),
        )

    def run_identity(self, arch: str, regime: str, seed: int) -> dict[str, Any]:
        """What makes one run's numbers: shared settings plus its arch, regime and seed."""
        d = {k: v for k, v in to_plain(self).items() if k not in NOT_IDENTITY}
        for key, default in LATER_OPTIONS.items():  # left out at its default, as before it
            if d.get(key) == default:
                d.pop(key)
        return {**d, "arch": arch, "regime": regime, "seed": seed}


@dataclass
class BenchmarkResult:
    """Outcome of :func:`run_segmentation_benchmark`."""

    out: Path
    rows: list[dict[str, Any]]
    summary: list[dict[str, Any]]
    files: dict[str, str]
    trained: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    seconds: float = 0.0
