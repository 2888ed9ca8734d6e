"""Configuration of a generator training run (``groundsynth train-generator``).

:class:`TrainConfig` holds what every generator kind shares (data, steps, checkpoints,
devices, precision, seed) and the kind's own model options in ``model``
(:class:`~groundsynth.generate.conditional.config.ConditionalConfig`,
:class:`~groundsynth.generate.diffusion.DiffusionConfig` or
:class:`~groundsynth.generate.conditional_diffusion.ConditionalDiffusionConfig`). It is saved resolved as the run's
``config.yaml`` and inside every checkpoint, so a checkpoint alone rebuilds its model.
"""

from __future__ import annotations

from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any, Literal

from groundsynth.errors import InputError
from groundsynth.runs import to_plain

__all__ = [
    "DIFFUSION_KINDS",
    "KINDS",
    "MAP_KINDS",
    "PRECISIONS",
    "TrainConfig",
    "model_config_from_dict",
]

#: generator kinds: ``conditional`` (SPADE GAN, map -> image, grounded), ``diffusion``
#: (unconditional DDPM), ``conditional-diffusion`` (the same DDPM conditioned on the map)
KINDS = ("conditional", "diffusion", "conditional-diffusion")
#: kinds that paint a map (their samples' masks are the maps)
MAP_KINDS = ("conditional", "conditional-diffusion")
#: kinds sampled by a diffusion sampler (``--sampler``, ``--steps``)
DIFFUSION_KINDS = ("diffusion", "conditional-diffusion")
PRECISIONS = ("auto", "32-true", "16-mixed", "bf16-mixed", "16-true", "bf16-true", "64-true")
FITS = ("crop", "resize")

#: options that may change when a run is resumed (they do not change the model being trained)
RESUMABLE_CHANGES = (
    "max_steps",
    "checkpoint_every",
    "keep_checkpoints",
    "grid_rows",
    "num_workers",
    "accelerator",
    "devices",
    "num_nodes",
    "strategy",
    "precision",
    "channels_last",
    # learning curves: evaluation only (a held-out tail of the training split, the one case
    # where they change the training samples, is checked apart; see generate.curves)
    "eval_every",
    "eval_split",
    "eval_samples",
    "eval_segmenter",
    "stop_on_plateau",
    "plateau_patience",
    "plateau_min_delta",
)


def model_config_from_dict(kind: str, data: dict[str, Any] | None) -> Any:
    """The model config of ``kind`` from a plain dict (``None``: the kind's defaults)."""
    if kind == "conditional":
        from groundsynth.generate.conditional.config import ConditionalConfig

        return ConditionalConfig() if data is None else ConditionalConfig.from_dict(data)
    if kind == "diffusion":
        from groundsynth.generate.diffusion import DiffusionConfig

        return DiffusionConfig() if data is None else DiffusionConfig.from_dict(data)
    if kind == "conditional-diffusion":
        from groundsynth.generate.conditional_diffusion import ConditionalDiffusionConfig

        cls = ConditionalDiffusionConfig
        return cls() if data is None else cls.from_dict(data)
    raise InputError(f"unknown generator kind {kind!r}; valid: {', '.join(KINDS)}")


@dataclass(frozen=True)
class TrainConfig:
    """Options of a generator training run.

    Attributes:
        kind: ``conditional`` (map -> image), ``diffusion`` (unconditional) or
            ``conditional-diffusion`` (map -> image, the diffusion model with the map).
        dataset: dataset directory to train on (groundsynth or ARAS400k layout).
        out: run directory (config, checkpoints, sample grids, losses, log).
        split: split of ``dataset`` to train on.
        image_size: training image size (a multiple of 32 for the default architectures).
        fit: how patches larger than ``image_size`` are brought to it: ``crop`` (random
            crop, keeps the ground resolution) or ``resize`` (changes it).
        augment: random flips and 90-degree rotations of image and map.
        max_steps: total optimisation steps (a resumed run continues up to it).
        batch_size: samples per step and device.
        checkpoint_every: steps between checkpoints (each with a sample grid and losses).
        keep_checkpoints: keep only the latest this many checkpoints (0: keep all).
        grid_rows: training samples shown in each sample grid.
        seed: seed of initialisation, data order, augmentation and noise.
        num_workers: data-loading worker processes.
        accelerator, devices, num_nodes, strategy: passed to Lightning's Trainer (``auto`` by
            default: a GPU when there is one, else the CPU; one node). Under DDP every rank
            trains on ``batch_size`` samples per step.
        precision: Lightning precision; ``auto`` is ``bf16-mixed`` (or ``16-mixed``) on CUDA
            and ``32-true`` elsewhere.
        channels_last: channels-last memory format; ``auto`` is on for CUDA only.
        eval_every: steps between learning-curve evaluations (also one at the start and one at
            the last step; ``None``: ``checkpoint_every``; 0: none). See
            :mod:`groundsynth.generate.curves`.
        eval_split: held-out split evaluated on; ``val`` falls back to ``test``, then to a tail
            of the training split held out of training.
        eval_samples: held-out samples evaluated on (a fixed, seeded subset).
        eval_segmenter: a real-trained segmenter (``segmenter.pt``) that reads the samples back
            and whose encoder gives the features (``None``: the pixel floor and a fixed
            descriptor).
        stop_on_plateau: stop once the main figure (label fidelity for kinds that paint a map,
            FD otherwise) has not improved by more than ``plateau_min_delta`` for
            ``plateau_patience`` evaluations.
        model: the kind's model options (``None``: its defaults).
    """

    kind: Literal["conditional", "diffusion", "conditional-diffusion"]
    dataset: str
    out: str
    split: str = "train"
    image_size: int = 256
    fit: Literal["crop", "resize"] = "crop"
    augment: bool = True
    max_steps: int = 100_000
    batch_size: int = 16
    checkpoint_every: int = 5_000
    keep_checkpoints: int = 0
    grid_rows: int = 4
    seed: int = 0
    num_workers: int = 2
    accelerator: str = "auto"
    devices: str = "auto"
    num_nodes: int = 1
    strategy: str = "auto"
    precision: str = "auto"
    channels_last: Literal["auto", "on", "off"] = "auto"
    eval_every: int | None = None
    eval_split: str = "val"
    eval_samples: int = 64
    eval_segmenter: str | None = None
    stop_on_plateau: bool = False
    plateau_patience: int = 5
    plateau_min_delta: float = 0.0
    model: Any = None

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise InputError(f"unknown generator kind {self.kind!r}; valid: {', '.join(KINDS)}")
        model = self.model
        if model is None or isinstance(model, dict):
            object.__setattr__(self, "model", model_config_from_dict(self.kind, model))
        elif type(model).__name__ != _MODEL_CLASS[self.kind]:
            raise InputError(
                f"--kind {self.kind} needs a {_MODEL_CLASS[self.kind]}, got {type(model).__name__}"
            )
        if self.fit not in FITS:
            raise InputError(f"fit must be one of {', '.join(FITS)}, got {self.fit!r}")
        if self.image_size < 8:
            raise InputError(f"--image-size must be >= 8, got {self.image_size}")
        for name in ("max_steps", "batch_size", "checkpoint_every", "num_nodes"):
            if getattr(self, name) < 1:
                raise InputError(
                    f"--{name.replace('_', '-')} must be >= 1, got {getattr(self, name)}"
                )
        for name in ("keep_checkpoints", "grid_rows", "num_workers", "seed"):
            if getattr(self, name) < 0:
                raise InputError(
                    f"--{name.replace('_', '-')} must be >= 0, got {getattr(self, name)}"
                )
        if self.precision not in PRECISIONS:
            raise InputError(
                f"unknown precision {self.precision!r}; valid: {', '.join(PRECISIONS)}"
            )
        if self.channels_last not in ("auto", "on", "off"):
            raise InputError(f"channels_last must be auto, on or off, got {self.channels_last!r}")
        if self.eval_every is not None and self.eval_every < 0:
            raise InputError(f"--eval-every must be >= 0 (0: no evaluation), got {self.eval_every}")
        if self.eval_samples < 2:
            raise InputError(f"--eval-samples must be >= 2, got {self.eval_samples}")
        if not self.eval_split or "/" in self.eval_split:
            raise InputError(f"--eval-split must be a split name, got {self.eval_split!r}")
        if self.plateau_patience < 1 or not self.plateau_min_delta >= 0:
            raise InputError(
                f"--plateau-patience must be >= 1 and --plateau-min-delta >= 0, got "
                f"{self.plateau_patience} and {self.plateau_min_delta}"
            )
        if self.stop_on_plateau and self.eval_every == 0:
            raise InputError("--stop-on-plateau needs evaluations; give --eval-every > 0")

    def resolved(self) -> TrainConfig:
        """Absolute paths and the model's size-dependent defaults filled in."""
        return replace(
            self,
            dataset=str(Path(self.dataset).resolve()),
            out=str(Path(self.out).resolve()),
            devices=str(self.devices),
            eval_every=self.checkpoint_every if self.eval_every is None else self.eval_every,
            eval_segmenter=None
            if self.eval_segmenter is None
            else str(Path(self.eval_segmenter).resolve()),
            model=self.model.resolved(self.image_size),
        )

    def identity(self) -> dict[str, Any]:
        """The options that must match for a run directory to be resumed."""
        plain = to_plain(self)
        for name in (*RESUMABLE_CHANGES, "out"):
            plain.pop(name, None)
        return plain

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainConfig:
        """Rebuild from the plain dict saved in config.yaml / checkpoints."""
        known = {f.name for f in fields(cls)}
        unknown = set(data).difference(known)
        if unknown:
            raise InputError(f"unknown training option(s): {sorted(unknown)}")
        data = dict(data)
        data.setdefault("eval_every", 0)  # runs from before learning curves had none
        data["model"] = model_config_from_dict(data["kind"], data.get("model"))
        return cls(**data)


_MODEL_CLASS = {
    "conditional": "ConditionalConfig",
    "diffusion": "DiffusionConfig",
    "conditional-diffusion": "ConditionalDiffusionConfig",
}
