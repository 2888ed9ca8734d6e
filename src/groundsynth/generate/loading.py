"""Loading a trained generator for sampling: a run directory or a checkpoint file -> the
network with its EMA weights, in eval mode, on a device."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from groundsynth.classes import NUM_CLASSES
from groundsynth.errors import InputError
from groundsynth.generate.checkpoint import load_checkpoint, resolve_checkpoint
from groundsynth.generate.config import TrainConfig
from groundsynth.generate.data import one_hot, to_uint8

__all__ = ["LoadedGenerator", "load_generator", "resolve_device"]


def resolve_device(device: str) -> torch.device:
    """``auto`` -> ``cuda`` when available, else ``cpu``; others as given."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except RuntimeError as exc:
        raise InputError(f"unknown device {device!r} ({exc}); use auto, cpu or cuda[:N]") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise InputError(f"device {device!r} asked for but CUDA is not available; use auto or cpu")
    return dev


@dataclass
class LoadedGenerator:
    """A trained generator ready to sample (EMA weights, eval mode)."""

    kind: str
    network: nn.Module
    train_config: TrainConfig
    step: int
    run_name: str
    checkpoint: Path

    @property
    def origin(self) -> str:
        """``"<kind>:<run name>@step<k>"``, the ``origin`` of its samples."""
        return f"{self.kind}:{self.run_name}@step{self.step}"

    @property
    def device(self) -> torch.device:
        return next(self.network.parameters()).device

    @torch.no_grad()
    def images(
        self,
        seeds: list[int],
        masks: np.ndarray | None = None,
        *,
        image_size: int | None = None,
        sampler: str | None = None,
        steps: int | None = None,
        guidance: float | None = None,
        autocast: torch.dtype | None = None,
        channels_last: bool = False,
    ) -> np.ndarray:
        """(B, S, S, 3) uint8 images, one per seed (and per mask for the kinds that paint a
        map). ``sampler``, ``steps``: diffusion kinds; ``guidance``: conditional-diffusion
        (default: the model's)."""
        device = self.device
        fmt = torch.channels_last if channels_last else torch.contiguous_format
        if self.kind == "conditional":
            from groundsynth.generate.conditional.module import sample_noise

            if masks is None or len(masks) != len(seeds):
                raise InputError("a conditional generator needs one mask per seed")
            onehot = one_hot(torch.from_numpy(np.asarray(masks)).to(device), NUM_CLASSES)
            z = sample_noise(self.train_config.model.generator.z_dim, seeds, device)
            with torch.autocast(device.type, dtype=autocast, enabled=autocast is not None):
                out = self.network(onehot.contiguous(memory_format=fmt), z)
            return to_uint8(out.float())
        if self.kind == "conditional-diffusion":
            from groundsynth.generate.conditional_diffusion import sample_from_maps

            if masks is None or len(masks) != len(seeds):
                raise InputError("a conditional-diffusion generator needs one mask per seed")
            out = sample_from_maps(
                self.network,
                self.train_config.model,
                seeds,
                torch.from_numpy(np.asarray(masks)),
                guidance=guidance,
                sampler=sampler,
                steps=steps,
                autocast=autocast,
            )
            return to_uint8(out)
        from groundsynth.generate.diffusion import sample_images

        size = image_size or self.train_config.image_size
        out = sample_images(
            self.network,
            self.train_config.model,
            seeds,
            size,
            sampler=sampler,
            steps=steps,
            autocast=autocast,
        )
        return to_uint8(out)


def load_generator(model: str | Path, device: str | torch.device = "cpu") -> LoadedGenerator:
    """Load the sampling network (EMA weights when kept) of a run directory or checkpoint."""
    path = resolve_checkpoint(model)
    payload = load_checkpoint(path)
    config = TrainConfig.from_dict(payload["config"])
    nets = payload["networks"]
    if config.kind == "conditional":
        from groundsynth.generate.conditional.module import build_generator

        network = build_generator(config.model)
        network.load_state_dict(nets["generator_ema"])
    else:
        from groundsynth.generate.conditional_diffusion import build_conditional_unet
        from groundsynth.generate.diffusion import build_network

        if config.kind == "conditional-diffusion":
            network = build_conditional_unet(config.model, config.image_size)
        else:
            network = build_network(config.model, config.image_size)
        network.load_state_dict(nets.get("unet_ema", nets["unet"]))
    dev = resolve_device(device) if isinstance(device, str) else device
    network.to(dev).eval().requires_grad_(False)
    return LoadedGenerator(
        kind=config.kind,
        network=network,
        train_config=config,
        step=int(payload["step"]),
        run_name=str(payload.get("run_name") or path.parent.parent.name),
        checkpoint=path.resolve(),
    )
