from __future__ import annotations

import json
import re

import pandas as pd
import pytest

from groundsynth.data.build import BuildConfig, build_dataset
from groundsynth.data.sample_world import SampleWorldConfig, make_sample_world
from groundsynth.experiment.transfer import TransferConfig, run_transfer
from groundsynth.report import make_report


def _region(tmp, name: str, seed: int, region: str):
    world = make_sample_world(
        tmp / f"world_{name}", SampleWorldConfig(size=512, seed=seed, region=region)
    )
    cfg = BuildConfig(
        imagery=(str(world.imagery),), landcover=(str(world.landcover),), out=str(tmp / name),
        size=64, block_size=1, max_label_nodata=0.2,
    )  # fmt: skip
    return build_dataset(cfg).out


@pytest.fixture(scope="module")
def experiment(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("transfer")
    a = _region(tmp, "A", 0, "temperate")
    b = _region(tmp, "B", 1, "arid")
    cfg = TransferConfig(
        source=str(a), target=str(b), out=str(tmp / "exp"), budgets=(0.5,), seeds=(0, 1),
        preset="tiny", min_label_fidelity=0.0, progress=False,
    )  # fmt: skip
    return run_transfer(cfg), tmp / "exp"


def test_table_has_every_regime_domain_and_ci_column(experiment):
    result, out = experiment
    table = pd.read_csv(out / "results.csv")
    regimes = set(table["regime"])
    assert regimes == {
        "real",
        "real,synthetic/ungrounded:0.5",
        "real,synthetic/grounded:0.5",
        "synthetic/grounded:0.5",
        "synthetic/ungrounded:0.5",
    }
    assert set(table["domain"]) == {"in-domain (A test)", "cross-region (B)"}
    for col in (
        "f1_mean",
        "f1_ci95_low",
        "f1_ci95_high",
        "iou_mean",
        "iou_ci95_low",
        "iou_ci95_high",
    ):
        assert col in table.columns
    assert (table["n_seeds"] == 2).all()
    diffs = pd.read_csv(out / "differences.csv")
    assert {
        "mean", "ci95_low", "ci95_high", "ci_method", "boot95_low", "boot95_high", "wins", "n",
        "p_sign_flip",
    } <= set(diffs.columns)  # fmt: skip
    assert (diffs["ci_method"] == "t").all() and (diffs["n"] == 2).all()
    assert ((diffs["p_sign_flip"] == 0.5) | (diffs["p_sign_flip"] == 1.0)).all()  # 2 seeds
    assert len(diffs) == 2 * 2 * 2  # 2 comparisons x 2 domains x 2 metrics
    doc = json.loads((out / "experiment.json").read_text())
    assert doc["synthetic_sizes"]["grounded"] > 0
    assert doc["grounding_filter"] == {"threshold": 0.0, "rule": "given"}


def test_rerun_resumes_without_training_again(experiment, caplog):
    result, out = experiment
    cfg = TransferConfig(
        source=result["source"], target=result["target"], out=str(out), budgets=(0.5,), seeds=(0, 1),
        preset="tiny", min_label_fidelity=0.0, progress=False,
    )  # fmt: skip
    again = run_transfer(cfg)
    assert again["table"] == result["table"]


def test_report_of_the_experiment_is_self_contained(experiment, tmp_path):
    _, out = experiment
    page = make_report([out], tmp_path / "r.html").read_text()
    for heading in (
        "Experiment: grounded vs ungrounded augmentation",
        "Grounded − ungrounded (paired by seed)",
        "The synthetic sets",
        "Synthetic data: grounded_raw",  # the experiment's evaluations, without listing them
        "Synthetic data: ungrounded",
    ):
        assert heading in page
    assert "cross-region (B)" in page and "sign-flip p" in page and "WorldCover" in page
    assert not re.search(r'(src|href)="(?!data:|#)', page)
    assert "<script" not in page.lower()
