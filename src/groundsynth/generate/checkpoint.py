"""Generator checkpoints: plain state dicts, loadable with ``torch.load(weights_only=True)``.

A run directory keeps them as ``checkpoints/step<k:08d>.pt``; each holds::

    format, version, kind, step, samples_seen, run_name,
    config     -- the run's resolved TrainConfig as plain values (rebuilds the model)
    networks   -- {name: state_dict}: e.g. generator, generator_ema, discriminator
    optimizers -- {name: optimiser state_dict}
    rng        -- global RNG states (torch, CUDA, numpy, Python)

so training resumes exactly (same weights as an uninterrupted run) and a checkpoint file
alone is enough to generate. Files are written atomically.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import torch

from groundsynth.errors import InputError
from groundsynth.io import atomic_path

__all__ = [
    "CHECKPOINT_FORMAT",
    "checkpoint_path",
    "list_checkpoints",
    "load_checkpoint",
    "resolve_checkpoint",
    "save_checkpoint",
]

CHECKPOINT_FORMAT = "groundsynth-generator"
CHECKPOINT_VERSION = 1
_NAME = re.compile(r"^step(\d+)\.pt$")


def checkpoint_path(run_dir: str | os.PathLike[str], step: int) -> Path:
    """Where the checkpoint of ``step`` lives in ``run_dir``."""
    return Path(run_dir) / "checkpoints" / f"step{step:08d}.pt"


def list_checkpoints(run_dir: str | os.PathLike[str]) -> list[tuple[int, Path]]:
    """``(step, path)`` of the run's checkpoints, by step."""
    folder = Path(run_dir) / "checkpoints"
    if not folder.is_dir():
        return []
    found = []
    for p in folder.iterdir():
        m = _NAME.match(p.name)
        if m and p.is_file():
            found.append((int(m.group(1)), p))
    return sorted(found)


def save_checkpoint(path: str | os.PathLike[str], payload: dict[str, Any]) -> Path:
    """Atomically write ``payload`` (see the module docstring) with ``torch.save``."""
    payload = {"format": CHECKPOINT_FORMAT, "version": CHECKPOINT_VERSION, **payload}
    with atomic_path(path, suffix=".pt") as tmp:
        torch.save(payload, tmp)
    return Path(path)


def load_checkpoint(path: str | os.PathLike[str], map_location: Any = "cpu") -> dict[str, Any]:
    """Read a checkpoint written by :func:`save_checkpoint` (``weights_only=True``)."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: checkpoint file not found")
    try:
        payload = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # torch raises several types for corrupt or foreign files
        raise InputError(f"{path}: cannot read checkpoint ({exc})") from exc
    if not isinstance(payload, dict) or payload.get("format") != CHECKPOINT_FORMAT:
        raise InputError(
            f"{path}: not a groundsynth generator checkpoint (written by "
            "`groundsynth train-generator`)"
        )
    if payload.get("version", 0) > CHECKPOINT_VERSION:
        raise InputError(
            f"{path}: checkpoint version {payload['version']} is newer than this groundsynth "
            f"reads ({CHECKPOINT_VERSION}); upgrade groundsynth"
        )
    return payload


def resolve_checkpoint(model: str | os.PathLike[str]) -> Path:
    """A checkpoint file from ``model``: a checkpoint file, or a run directory (its latest
    checkpoint)."""
    path = Path(model)
    if path.is_file():
        return path
    if path.is_dir():
        found = list_checkpoints(path)
        if not found:
            raise InputError(
                f"{path}: run directory has no checkpoints/step*.pt yet; train longer than "
                "--checkpoint-every steps or give a checkpoint file"
            )
        return found[-1][1]
    raise InputError(f"{path}: no such run directory or checkpoint file")
