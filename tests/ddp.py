"""Run a command as a 2-process Lightning DDP job on the CPU (gloo over loopback).

The command is started once; Lightning's subprocess launcher starts rank 1 by running the same
command line again with ``LOCAL_RANK=1`` (``MASTER_ADDR`` 127.0.0.1, a free port), as it does
for ``--devices 2 --strategy ddp`` on a workstation. The children are not under pytest-socket.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

#: The repository root (``python -m tests.<module>`` runs from here).
ROOT = Path(__file__).resolve().parents[1]
#: Variables of an outer distributed launch that would make the job join it.
_OUTER = ("LOCAL_RANK", "NODE_RANK", "RANK", "WORLD_SIZE", "GROUP_RANK", "LOCAL_WORLD_SIZE",
          "MASTER_PORT", "TORCHELASTIC_RUN_ID", "SLURM_NTASKS", "SLURM_JOB_ID")  # fmt: skip


def run_ddp(args: list[str], timeout: float = 300) -> subprocess.CompletedProcess[str]:
    """Run ``python ARGS`` from the repository root, one thread per process; raise with the
    output on failure."""
    env = {k: v for k, v in os.environ.items() if k not in _OUTER}
    env.update(
        OMP_NUM_THREADS="1",
        MKL_NUM_THREADS="1",
        MASTER_ADDR="127.0.0.1",
        PYTHONPATH=os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH")) if p),
        PYTHONWARNINGS="ignore",
    )
    res = subprocess.run(
        [sys.executable, *args], cwd=ROOT, env=env, capture_output=True, text=True,
        timeout=timeout, check=False,
    )  # fmt: skip
    if res.returncode != 0:
        raise AssertionError(
            f"DDP job {args} failed ({res.returncode}):\n{res.stdout[-4000:]}\n{res.stderr[-8000:]}"
        )
    return res
