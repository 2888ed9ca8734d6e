"""The Lightning base of every generator kind: step counting, seeded noise, exact resume.

Subclasses define their networks (:meth:`GeneratorModule.networks`), one optimisation step
(:meth:`GeneratorModule.train_step`, manual optimisation) and the images of a sample grid
(:meth:`GeneratorModule.grid_rows`). The base class

* counts optimisation steps itself (``steps_done``; Lightning's ``global_step`` counts every
  optimiser of a GAN) and the samples consumed by all ranks (``samples_seen``),
* under DDP records each step's losses averaged over ranks and averages the batch-norm
  statistics over ranks after every step, so the replicas stay identical (DDP itself syncs
  gradients only),
* hands each step a torch generator seeded by ``(seed, step, rank)``, so noise does not
  depend on how much randomness was drawn before (resumption is exact),
* builds and restores checkpoint payloads (networks, optimisers, step, RNG states),
* moves networks and batches to channels-last on CUDA when asked.
"""

from __future__ import annotations

import logging
from typing import Any

import lightning as L
import numpy as np
import torch
from torch import nn

from groundsynth.generate.config import TrainConfig
from groundsynth.generate.seeds import rng_state, set_rng_state, torch_generator
from groundsynth.runs import to_plain

__all__ = ["GeneratorModule"]

log = logging.getLogger(__name__)


class GeneratorModule(L.LightningModule):
    """Base class; see the module docstring."""

    kind: str = ""
    #: names of the losses returned by :meth:`train_step`, in CSV column order
    loss_names: tuple[str, ...] = ()

    def __init__(self, config: TrainConfig) -> None:
        super().__init__()
        self.config = config
        self.automatic_optimization = False
        self.steps_done = 0
        self.samples_seen = 0
        self.use_channels_last = False
        self._pending: dict[str, Any] | None = None
        self.loss_history: list[dict[str, torch.Tensor]] = []

    # ------------------------------------------------------------------ for subclasses
    def networks(self) -> dict[str, nn.Module]:
        """The networks saved in checkpoints, by name."""
        raise NotImplementedError

    def prepare(self, items: Any) -> None:
        """Measure what the model needs from its training items before a fresh start (not on
        resume: it comes back with the checkpoint). Default: nothing."""

    def optimizer_names(self) -> tuple[str, ...]:
        """Names of the optimisers of :meth:`configure_optimizers`, in order."""
        raise NotImplementedError

    def train_step(self, batch: dict[str, torch.Tensor], gen: torch.Generator) -> dict[str, Any]:
        """One optimisation step on ``batch``; return the losses (detached tensors)."""
        raise NotImplementedError

    def grid_rows(self, rows: list[tuple[np.ndarray, np.ndarray | None]]) -> list[np.ndarray]:
        """One (H, W', 3) uint8 row of the sample grid per ``(image, mask)`` training sample."""
        raise NotImplementedError

    def sampling_network(self) -> nn.Module:
        """The network that samples, as :func:`~groundsynth.generate.loading.load_generator`
        loads it from a checkpoint: the one network named ``*_ema`` when there is one (the
        EMA weights), else the first of :meth:`networks`."""
        nets = self.networks()
        ema = [net for name, net in nets.items() if name.endswith("_ema")]
        return ema[0] if len(ema) == 1 else next(iter(nets.values()))

    # ------------------------------------------------------------------ Lightning hooks
    def on_fit_start(self) -> None:
        cl = self.config.channels_last
        self.use_channels_last = cl == "on" or (cl == "auto" and self.device.type == "cuda")
        if self.use_channels_last:
            self.to(memory_format=torch.channels_last)

    def on_train_start(self) -> None:
        pending, self._pending = self._pending, None
        if pending is None:
            return
        optimizers = self.trainer.optimizers
        states = pending["optimizers"]
        for name, opt in zip(self.optimizer_names(), optimizers, strict=True):
            opt.load_state_dict(states[name])
        if pending.get("rng") is not None:
            set_rng_state(pending["rng"])

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        if self.use_channels_last:
            batch = {
                k: v.contiguous(memory_format=torch.channels_last) if v.dim() == 4 else v
                for k, v in batch.items()
            }
        gen = torch_generator(
            self.device, self.config.seed, "train", self.steps_done, self.global_rank
        )
        losses = self._mean_over_ranks(self.train_step(batch, gen))
        self.steps_done += 1
        self.samples_seen += batch["image"].shape[0] * self.trainer.world_size
        self.loss_history.append(losses)
        self.log_dict(
            {k: v for k, v in losses.items() if k in self.loss_names[:2]},
            prog_bar=True,
            on_step=True,
            on_epoch=False,
            logger=False,
        )

    def _mean_over_ranks(self, losses: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Under DDP: the step's losses averaged over ranks (the global batch's losses, every
        rank having an equal batch), and the floating-point buffers (batch-norm statistics)
        averaged in place likewise. DDP averages gradients only, so without this each rank
        would keep the statistics of its own batches and the recorded losses would be rank
        zero's alone. One all-reduce per step; nothing happens on one process."""
        if self._trainer is None or self.trainer.world_size < 2:
            return losses
        names = list(losses)
        buffers = [b for b in self.buffers() if b.is_floating_point()]
        flat = torch.cat(
            [
                torch.stack([losses[n].detach().double().reshape(()) for n in names]),
                *(b.detach().double().reshape(-1) for b in buffers),
            ]
        )
        flat = self.trainer.strategy.reduce(flat, reduce_op="mean")
        pooled = {n: flat[i].to(losses[n].dtype) for i, n in enumerate(names)}
        offset = len(names)
        with torch.no_grad():
            for b in buffers:
                b.copy_(flat[offset : offset + b.numel()].view_as(b))
                offset += b.numel()
        return pooled

    def noise_like(self, shape: tuple[int, ...], gen: torch.Generator) -> torch.Tensor:
        """Standard normal noise of ``shape`` on this module's device, from ``gen``."""
        return torch.randn(shape, generator=gen, device=self.device)

    # ------------------------------------------------------------------ checkpoints
    def checkpoint_payload(self, run_name: str) -> dict[str, Any]:
        """Everything a checkpoint holds (see :mod:`groundsynth.generate.checkpoint`)."""
        optimizers = {}
        if self._trainer is not None and self.trainer.optimizers:
            for name, opt in zip(self.optimizer_names(), self.trainer.optimizers, strict=True):
                optimizers[name] = opt.state_dict()
        return {
            "kind": self.kind,
            "step": self.steps_done,
            "samples_seen": self.samples_seen,
            "run_name": run_name,
            "config": to_plain(self.config),
            "networks": {
                name: {k: v.detach().clone().cpu() for k, v in net.state_dict().items()}
                for name, net in self.networks().items()
            },
            "optimizers": optimizers,
            "rng": rng_state(),
        }

    def restore(self, payload: dict[str, Any]) -> None:
        """Load networks and counters now; optimisers and RNG states when training starts."""
        for name, net in self.networks().items():
            net.load_state_dict(payload["networks"][name])
        self.steps_done = int(payload["step"])
        self.samples_seen = int(payload["samples_seen"])
        self._pending = {"optimizers": payload["optimizers"], "rng": payload.get("rng")}
        log.info("restored %s generator at step %d", self.kind, self.steps_done)

    def pop_losses(self) -> list[dict[str, float]]:
        """The losses of the steps since the last call, as floats (one dict per step)."""
        history, self.loss_history = self.loss_history, []
        if not history:
            return []
        names = list(history[0])
        table = torch.stack([torch.stack([h[n].float() for n in names]) for h in history]).cpu()
        return [dict(zip(names, row)) for row in table.tolist()]
