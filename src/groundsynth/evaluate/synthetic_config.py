"""The options of ``evaluate synthetic``
(:func:`~groundsynth.evaluate.synthetic.evaluate_synthetic`): the resolved configuration a
run saves as ``config.yaml``, and what of it is the run's identity."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Literal

from groundsynth.data.reader import DatasetReader, open_dataset
from groundsynth.distributed import check_executor_options
from groundsynth.errors import InputError
from groundsynth.runs import to_plain

__all__ = ["EVAL_KEYS", "EXECUTION", "NOT_IDENTITY", "SyntheticEvalConfig", "resolve_config"]

#: Where and how the image work runs: neither in ``config.yaml`` nor in the run's identity.
EXECUTION = ("executor", "ray_address", "ray_cpus", "ray_gpus")
#: Options that do not change the results (may differ when rerunning into the same ``out``).
NOT_IDENTITY = ("out", "batch_size", "workers", "device", "chunk_size", *EXECUTION)
#: Keys every evaluation's ``config.yaml`` has (tells it from another command's run).
EVAL_KEYS = frozenset({"real", "synthetic", "real_splits", "synthetic_splits", "max_real"})


@dataclass(frozen=True)
class SyntheticEvalConfig:
    """Resolved options of :func:`evaluate_synthetic` (saved as the run's ``config.yaml``).

    Attributes:
        real, synthetic, out: dataset directories and the output directory.
        model: segmenter checkpoint (``None``: composition and captions only).
        real_splits: real splits (default: every split but ``synth``).
        synthetic_splits: synthetic splits (default: ``synth`` if present, else every split).
        max_samples: synthetic samples evaluated (a seeded subset; ``None``: all).
        max_real: real samples run through the segmenter (reference and features; a seeded
            subset; ``None``: all). Composition always uses every real sample.
        reservoir: feature vectors kept per set / generator for KID, PRDC, projections.
        projection_points: points per group in the projections and silhouette scores.
        batch_size, workers, device: inference settings (``device="auto"``: CUDA, MPS, CPU;
            on Ray, resolved on each worker; ``workers`` read images for a local run only).
        seed: seed of the subsets, reservoirs, KID subsets and projections.
        tsne, umap: which projections to draw (UMAP needs ``umap-learn``).
        inception_weights: local torchvision ``inception_v3`` state dict for Inception FID.
        captions: evaluate the synthetic set's captions when it has caption tables.
        kid_subsets, kid_subset_size, prdc_k: KID and PRDC settings.
        chunk_size: images per chunk run through the models (on Ray: per task); an
            interrupted evaluation resumes from its finished chunks.
        executor: ``local`` (this process) or ``ray`` (one Ray task per chunk; the segmenter
            must be a checkpoint path).
        ray_address: Ray cluster to join (``auto``, ``HOST:PORT``, ``ray://HOST:PORT``);
            ``None`` starts a local one for the run.
        ray_cpus, ray_gpus: CPUs and GPUs reserved per Ray task (``0.5``: two per GPU).
    """

    real: str
    synthetic: str
    out: str
    model: str | None = None
    real_splits: tuple[str, ...] | None = None
    synthetic_splits: tuple[str, ...] | None = None
    max_samples: int | None = None
    max_real: int | None = 5000
    reservoir: int = 5000
    projection_points: int = 1000
    batch_size: int = 32
    workers: int = 0
    device: str = "auto"
    seed: int = 0
    tsne: bool = True
    umap: bool = True
    inception_weights: str | None = None
    captions: bool = True
    kid_subsets: int = 50
    kid_subset_size: int = 1000
    prdc_k: int = 5
    chunk_size: int = 256
    executor: Literal["local", "ray"] = "local"
    ray_address: str | None = None
    ray_cpus: float = 1.0
    ray_gpus: float = 0.0

    def __post_init__(self) -> None:
        for name in ("max_samples", "max_real"):
            v = getattr(self, name)
            if v is not None and v < 1:
                raise InputError(f"{name} must be >= 1 or None, got {v}")
        for name in ("reservoir", "projection_points", "batch_size", "kid_subsets", "chunk_size"):
            if getattr(self, name) < 1:
                raise InputError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.kid_subset_size < 2:
            raise InputError(f"kid_subset_size must be >= 2, got {self.kid_subset_size}")
        if self.prdc_k < 1:
            raise InputError(f"prdc_k must be >= 1, got {self.prdc_k}")
        if self.workers < 0:
            raise InputError(f"workers must be >= 0, got {self.workers}")
        check_executor_options(self.executor, self.ray_address, self.ray_cpus, self.ray_gpus)
        out = Path(self.out).resolve()
        for name in ("real", "synthetic"):
            if Path(getattr(self, name)).resolve() == out:
                raise InputError(
                    f"--out {self.out} is the {name} dataset directory; write the evaluation "
                    "elsewhere (it would overwrite the dataset's config.yaml and manifest.json)"
                )

    def saved(self) -> dict[str, Any]:
        """What ``config.yaml`` holds: every option but the executor's."""
        return {k: v for k, v in to_plain(self).items() if k not in EXECUTION}


def _resolve_splits(
    reader: DatasetReader, wanted: tuple[str, ...] | None, default: Callable[[list[str]], list[str]]
) -> tuple[str, ...]:
    available = reader.splits()
    if wanted is None:
        chosen = default(available)
    else:
        unknown = [s for s in wanted if s not in available]
        if unknown:
            raise InputError(
                f"{reader.root}: no split(s) {unknown}; splits here: {', '.join(available)}"
            )
        chosen = list(wanted)
    if not chosen:
        raise InputError(f"{reader.root}: no samples (no split found)")
    return tuple(chosen)


def _real_default(splits: list[str]) -> list[str]:
    return [s for s in splits if s != "synth"] or splits


def _synthetic_default(splits: list[str]) -> list[str]:
    return ["synth"] if "synth" in splits else splits


def resolve_config(cfg: SyntheticEvalConfig) -> SyntheticEvalConfig:
    """``cfg`` with its splits resolved against the datasets (what ``config.yaml`` records).

    Raises:
        InputError: a dataset directory is unusable or a named split does not exist.
    """
    real_reader, synth_reader = open_dataset(cfg.real), open_dataset(cfg.synthetic)
    return replace(
        cfg,
        real_splits=_resolve_splits(real_reader, cfg.real_splits, _real_default),
        synthetic_splits=_resolve_splits(synth_reader, cfg.synthetic_splits, _synthetic_default),
    )
