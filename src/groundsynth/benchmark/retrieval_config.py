"""Options of ``groundsynth benchmark retrieval`` (see :mod:`.retrieval_bench`)."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

from groundsynth.benchmark.dual_encoder import DualEncoderSpec
from groundsynth.benchmark.options import DataOptions, check_training
from groundsynth.benchmark.retrieval_module import RetrievalOptim
from groundsynth.benchmark.sweep import EXECUTION, check_sweep_options
from groundsynth.errors import InputError
from groundsynth.runs import to_plain

__all__ = ["RETRIEVAL_KEYS", "RetrievalBenchConfig", "RetrievalBenchResult"]

#: Config fields that do not change a run's numbers (may differ when resuming).
NOT_IDENTITY = ("out", "train", "seeds", "workers", "eval_batch_size", "progress", *EXECUTION)
#: Keys every retrieval benchmark's ``config.yaml`` has (tells it from another command's run).
RETRIEVAL_KEYS = frozenset({"real", "synthetic", "train", "val", "test", "model", "pretrained"})


@dataclass(frozen=True)
class RetrievalBenchConfig(DataOptions):
    """Resolved options of a retrieval benchmark (saved as ``config.yaml``).

    Data: ``real`` / ``synthetic`` — a dataset directory with captions tables, or a
    Karpathy JSON with its image folder in ``real_images`` / ``synthetic_images``;
    ``streams``: caption columns to use (None: all); ``train`` regimes, ``val`` set and
    ``test`` sets in the syntax of :mod:`groundsynth.benchmark.data`.
    Model (:class:`~groundsynth.benchmark.dual_encoder.DualEncoderSpec`): ``model``,
    ``pretrained``, ``image_size``, ``context_length``.
    Training: ``seeds``, ``lr``, ``weight_decay``, ``warmup`` (fraction of the steps),
    ``batch_size``, ``max_epochs``, ``max_steps`` (-1: no limit), ``patience`` (early
    stopping, in validation rounds), ``val_every`` (epochs between validation rounds).
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
    pretrained: str | None = None
    image_size: int | None = None
    context_length: int = 77
    seeds: tuple[int, ...] = (0, 1, 2)
    lr: float = 5e-4
    weight_decay: float = 0.1
    warmup: float = 0.1
    batch_size: int = 32
    eval_batch_size: int | None = None
    workers: int = 0
    max_epochs: int = 30
    max_steps: int = -1
    patience: int = 5
    val_every: int = 1
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
        if self.batch_size < 2:
            raise InputError(f"batch_size must be >= 2 (contrastive pairs), got {self.batch_size}")
        if self.eval_batch_size is not None and self.eval_batch_size < 1:
            raise InputError(f"eval_batch_size must be >= 1, got {self.eval_batch_size}")
        check_training(self)
        check_sweep_options(self)
        self.spec()

    def spec(self) -> DualEncoderSpec:
        return DualEncoderSpec(self.model, self.pretrained, self.image_size, self.context_length)

    def optim(self) -> RetrievalOptim:
        return RetrievalOptim(self.lr, self.weight_decay, self.warmup)

    def resolved(self) -> RetrievalBenchConfig:
        """Absolute paths, normalised regime names."""

        def absolute(p: str | None) -> str | None:
            return None if p is None else str(Path(p).resolve())

        pretrained = self.pretrained
        if pretrained is not None and Path(pretrained).exists():
            pretrained = absolute(pretrained)
        return replace(
            self,
            out=str(Path(self.out).resolve()),
            real=absolute(self.real),
            synthetic=absolute(self.synthetic),
            real_images=absolute(self.real_images),
            synthetic_images=absolute(self.synthetic_images),
            pretrained=pretrained,
            train=tuple(r.name for r in self.regimes()),
            seeds=tuple(int(s) for s in self.seeds),
        )

    def run_identity(self, regime: str, seed: int) -> dict[str, Any]:
        """What makes one run's numbers: shared settings plus its regime and seed."""
        d = {k: v for k, v in to_plain(self).items() if k not in NOT_IDENTITY}
        return {**d, "regime": regime, "seed": seed}


@dataclass
class RetrievalBenchResult:
    """Outcome of :func:`~groundsynth.benchmark.retrieval_bench.run_retrieval_benchmark`."""

    out: Path
    rows: list[dict[str, Any]]
    summary: list[dict[str, Any]]
    files: dict[str, str]
    trained: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    seconds: float = 0.0
