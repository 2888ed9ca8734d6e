"""The device check's learning-curve script runs (tiny preset, CPU) and reports per
evaluation what a GPU session would read: label fidelity against the real ceiling, FD."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]


def test_gpu_check_script_is_valid_bash_and_runs_the_full_preset_curves():
    script = ROOT / "benchmarks" / "gpu_check.sh"
    subprocess.run(["bash", "-n", str(script)], check=True)
    text = script.read_text()
    assert "benchmarks/learning_curves.py" in text and "--preset full" in text


def test_learning_curves_script_trains_the_experiment_s_generators(tmp_path):
    out = tmp_path / "lc"
    args = [sys.executable, str(ROOT / "benchmarks" / "learning_curves.py"), "--preset", "tiny",
            "--size", "256", "--image-size", "32", "--eval-every", "4", "--seconds", "1",
            "--max-steps", "4", "--kinds", "conditional-diffusion,diffusion", "--device", "cpu",
            "--eval-samples", "4", "--out", str(out)]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    res = subprocess.run(args, capture_output=True, text=True, env=env, timeout=600)
    assert res.returncode == 0, res.stderr[-2000:]
    summary = json.loads((out / "learning_curves.json").read_text())
    assert set(summary) == {"conditional-diffusion", "diffusion"}
    for entry in summary.values():
        assert entry["steps"] == 4 and [r["step"] for r in entry["curve"]] == ["0", "4"]
        assert all(math.isfinite(float(r["fd"])) for r in entry["curve"])
        assert "step=4" in res.stdout and f"fd={entry['curve'][-1]['fd'][:8]}" in res.stdout
    grounded = summary["conditional-diffusion"]["curve"][-1]
    assert 0 <= float(grounded["label_fidelity_floor"]) <= 1
    assert 0 < float(grounded["ceiling_floor"]) <= 1
    # each kind as the experiment trains it: the preset's map prior and cascade reach the runs
    cdiff = yaml.safe_load((out / "tiny-conditional-diffusion" / "config.yaml").read_text())
    diff = yaml.safe_load((out / "tiny-diffusion" / "config.yaml").read_text())
    assert cdiff["model"]["mean_prior"] is True and cdiff["model"]["map_dropout"] == 0.1
    assert diff["model"]["cascade_size"] == 16 and diff["model"]["standardise"] is True
