"""One rank of a 2-process DDP generator run (``python -m tests.generate.ddp_worker``).

Usage: ``python -m tests.generate.ddp_worker KIND DATASET OUT STEPS``. Trains the tiny ``KIND``
generator on the CPU with ``devices=2, strategy=ddp``; each rank writes ``OUT.rank<r>.pt``
with its networks after training and the losses its own batches gave at every step (recorded
by wrapping the kind's ``train_step``).
"""

from __future__ import annotations

import sys
import warnings
from pathlib import Path

import lightning as L
import torch

from groundsynth.generate.training import get_generator_kind, train_generator
from tests.generate.tiny import train_config


def main(kind: str, dataset: str, out: str, steps: int) -> None:
    torch.set_num_threads(1)
    cls = get_generator_kind(kind)
    local: list[dict[str, float]] = []
    original = cls.train_step

    def recording_step(self, batch, gen):
        losses = original(self, batch, gen)
        local.append({k: float(v) for k, v in losses.items()})
        return losses

    cls.train_step = recording_step  # type: ignore[method-assign]

    class Dump(L.Callback):
        def on_train_end(self, trainer, module):
            payload = {
                "rank": trainer.global_rank,
                "world": trainer.world_size,
                "steps_done": module.steps_done,
                "samples_seen": module.samples_seen,
                "local_losses": local,
                "networks": {
                    name: {k: v.detach().clone() for k, v in net.state_dict().items()}
                    for name, net in module.networks().items()
                },
            }
            torch.save(payload, f"{out}.rank{trainer.global_rank}.pt")

    config = train_config(
        kind, Path(dataset), Path(out), max_steps=steps, checkpoint_every=steps,
        accelerator="cpu", devices="2", strategy="ddp", grid_rows=1,
    )  # fmt: skip
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        train_generator(config, progress=False, callbacks=[Dump()])


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]))
