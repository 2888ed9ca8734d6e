"""Generator training under Lightning DDP: 2 CPU processes (gloo over loopback).

DDP averages gradients; the replicas must also end every step identical in their buffers
(batch-norm statistics), and ``losses.csv`` must hold the losses of the global batch (the mean
over ranks), not rank zero's alone. Each rank of ``tests.generate.ddp_worker`` dumps its
networks and the losses its own batches gave.
"""

from __future__ import annotations

import pytest
import torch

from groundsynth.generate.checkpoint import load_checkpoint
from groundsynth.generate.training import read_losses
from tests.ddp import run_ddp

STEPS, BATCH, WORLD = 3, 2, 2  # batch: tests.generate.tiny.train_config's


def _same_state(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize("kind", ["conditional", "diffusion"])
def test_ddp_training_keeps_replicas_identical_and_pools_losses(tiny_dataset, tmp_path, kind):
    out = tmp_path / "run"
    res = run_ddp(
        ["-m", "tests.generate.ddp_worker", kind, str(tiny_dataset), str(out), str(STEPS)]
    )
    assert "MEMBER: 2/2" in res.stdout + res.stderr
    ranks = [torch.load(f"{out}.rank{r}.pt", weights_only=False) for r in range(WORLD)]
    assert [r["rank"] for r in ranks] == [0, 1] and {r["world"] for r in ranks} == {WORLD}
    for r in ranks:
        assert r["steps_done"] == STEPS and r["samples_seen"] == STEPS * BATCH * WORLD
        assert len(r["local_losses"]) == STEPS

    # replicas identical (parameters and buffers: batch-norm statistics, EMA copies)
    zero, one = ranks[0]["networks"], ranks[1]["networks"]
    assert zero.keys() == one.keys()
    for name in zero:
        assert _same_state(zero[name], one[name]), name
    ckpt = load_checkpoint(out / "checkpoints" / f"step{STEPS:08d}.pt")
    assert ckpt["samples_seen"] == STEPS * BATCH * WORLD
    for name in zero:
        assert _same_state(ckpt["networks"][name], zero[name]), name

    # losses.csv: the mean over ranks of each rank's own loss (ranks saw different samples)
    rows = read_losses(out)
    assert [row["step"] for row in rows] == list(range(1, STEPS + 1))
    main = "g_loss" if kind == "conditional" else "loss"
    for step, row in enumerate(rows):
        a, b = ranks[0]["local_losses"][step], ranks[1]["local_losses"][step]
        assert abs(a[main] - b[main]) > 1e-4 * abs(a[main])  # different batches per rank
        for key in a:
            assert row[key] == pytest.approx((a[key] + b[key]) / 2, rel=2e-5, abs=1e-6), key
