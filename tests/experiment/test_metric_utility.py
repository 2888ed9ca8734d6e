"""End to end at tiny scale: ``experiment metric-utility`` builds its family of sets, measures
them and their utility, and correlates the two -- every figure checked against a recomputation
from the files the steps wrote."""

from __future__ import annotations

import importlib.util
import json

import numpy as np
import pandas as pd
import pytest
from scipy import stats
from typer.testing import CliRunner

from groundsynth.cli import app
from groundsynth.data.reader import open_dataset
from groundsynth.errors import InputError
from groundsynth.evaluate.pixel_floor import PixelFloor, score_floor
from groundsynth.experiment.metric_utility import (
    METRICS,
    MetricUtilityConfig,
    choose_checkpoints,
    gains_from_rows,
    run_metric_utility,
)
from groundsynth.experiment.transfer import TransferConfig, _Experiment
from tests.experiment.test_transfer import _region


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("utility")
    a = _region(tmp, "A", 0, "temperate")
    b = _region(tmp, "B", 1, "arid")
    exp = _Experiment(
        TransferConfig(source=str(a), target=str(b), out=str(tmp / "gens"), preset="tiny",
                       progress=False)
    )  # fmt: skip
    gens = (exp.train("conditional-diffusion"), exp.train("diffusion"))
    clip = {}
    if importlib.util.find_spec("open_clip") is not None:
        from tests.evaluate.tiny_clip import tiny_open_clip

        (tmp / "clip").mkdir()
        config, ckpt = tiny_open_clip(tmp / "clip")
        clip = {"clip_model": str(config), "clip_pretrained": str(ckpt)}
    cfg = MetricUtilityConfig(
        real=str(a), target=str(b), generators=tuple(map(str, gens)), out=str(tmp / "mu"),
        preset="tiny", seeds=(0, 1), budget=0.3, checkpoints=2, resamples=200, progress=False,
        tasks=("segmentation", "retrieval"), **clip,
    )  # fmt: skip
    return run_metric_utility(cfg), tmp / "mu", cfg


def test_choose_checkpoints():
    assert choose_checkpoints([6, 12, 18, 20], 2) == [6, 20]
    assert choose_checkpoints([100, 200, 300, 400, 500], 3) == [100, 300, 500]
    assert choose_checkpoints([6, 12, 18, 20], 1) == [20]
    assert choose_checkpoints([6, 12, 18, 20], 0) == [6, 12, 18, 20]
    assert choose_checkpoints([5, 10], 3) == [5, 10]


def test_family_of_sets(study):
    result, out, cfg = study
    sets = pd.read_csv(out / "sets.csv")
    # 2 generators x 2 checkpoints x (unfiltered, filtered) + 1 targeted (conditional only)
    assert len(sets) == 9
    assert sets["targeted"].sum() == 1
    assert set(sets.loc[sets["targeted"], "kind"]) == {"grounded"}
    assert sorted(sets["generator"].unique()) == ["conditional-diffusion", "diffusion"]
    steps = sets.groupby("generator")["step"].unique()
    assert sorted(steps["conditional-diffusion"]) == [10, 20]
    # the tiny preset's ungrounded model is a cascade: 2 steps per step of its 64 px U-Net
    assert sorted(steps["diffusion"]) == [20, 40]
    n = result["set_size"]
    assert n == round(0.3 * open_dataset(cfg.real).len("train"))
    for name in sets["set"]:
        reader = open_dataset(out / "sets" / name)
        assert sum(reader.len(s) for s in reader.splits()) == n, name
    # unfiltered: the pool's first n; filtered: its best n by the filter's score
    g = "conditional-diffusion-s20"
    pool = open_dataset(out / "raw" / f"{g}-pool")
    ids = pool.ids("synth")
    assert open_dataset(out / "sets" / g).ids("synth") == ids[:n]
    scores = pd.read_parquet(out / "raw" / f"{g}-pool-scores" / "scores" / "per_sample.parquet")
    best = scores.sort_values(["miou", "id"], ascending=[False, True])["id"].head(n)
    assert open_dataset(out / "sets" / f"{g}-filtered").ids("synth") == sorted(best)
    u = "diffusion-s40"
    meta = pd.read_parquet(out / "raw" / f"{u}-labelled" / "metadata.parquet")
    best = meta.sort_values(["confidence", "id"], ascending=[False, True])["id"].head(n)
    assert open_dataset(out / "sets" / f"{u}-filtered").ids("synth") == sorted(best)
    # filtering picked better samples by its own score
    assert (
        meta.set_index("id").loc[sorted(best), "confidence"].mean()
        >= meta.set_index("id")
        .loc[open_dataset(out / "sets" / u).ids("synth"), "confidence"]
        .mean()
    )


def test_metrics_match_their_sources(study):
    result, out, cfg = study
    sets = pd.read_csv(out / "sets.csv").set_index("set")
    floor = PixelFloor.from_dict(
        json.loads((out / "benchmark" / "floors" / "real.json").read_text())
    )
    for name in ("conditional-diffusion-s10", "diffusion-s40-filtered"):
        summary = json.loads((out / "evaluation" / name / "summary.json").read_text())
        ff = summary["feature_fidelity"]["synthetic"]
        assert sets.loc[name, "fd"] == pytest.approx(ff["frechet_distance"])
        assert sets.loc[name, "coverage"] == pytest.approx(ff["prdc"]["coverage"])
        assert sets.loc[name, "composition_jsd"] == pytest.approx(
            summary["composition"]["jsd_pixel_share"]
        )
        lf = summary["label_fidelity"]["synthetic"]["pooled"]["miou"]
        assert sets.loc[name, "lf_segmenter"] == pytest.approx(lf)
        read = score_floor(floor, out / "sets" / name, "synth")["iou"]
        assert sets.loc[name, "lf_floor"] == pytest.approx(read)
    assert set(METRICS) - {"clipscore"} <= set(sets.columns)
    assert sets[[m for m in METRICS if m in sets.columns]].notna().all().all()
    if cfg.clip_model is not None:
        from groundsynth.evaluate.captions import evaluate_captions
        from groundsynth.evaluate.clipscore import ClipScoreConfig

        clip = ClipScoreConfig(model=cfg.clip_model, pretrained=cfg.clip_pretrained)
        direct = evaluate_captions(out / "sets" / "diffusion-s20", clip=clip)
        assert sets.loc["diffusion-s20", "clipscore"] == pytest.approx(
            direct["clipscore"]["pooled"]["mean"]
        )
        assert "clipscore" in result["metrics"]
    assert ((sets["caption_consistency"] >= 0) & (sets["caption_consistency"] <= 1)).all()


def test_gains_are_paired_differences_of_the_runs(study):
    result, out, _ = study
    gains = pd.read_csv(out / "gains_long.csv")
    assert len(gains) == 9 * 2 * 4  # sets x seeds x (2 tasks x 2 domains)
    retrieval = {}
    for p in (out / "retrieval" / "runs").glob("*/seed*/metrics.json"):
        m = json.loads(p.read_text())
        retrieval[(m["regime"], m["seed"])] = m["test"]
    for row in (
        gains[gains["domain"].str.startswith("retrieval: ")].sample(4, random_state=1).itertuples()
    ):
        test_set = "real/test" if "in-domain" in row.domain else "synthetic/target"
        with_set = retrieval[(f"real,synthetic/{row.set}", row.seed)][test_set]["mean_recall"]
        alone = retrieval[("real", row.seed)][test_set]["mean_recall"]
        assert row.gain == pytest.approx((with_set - alone) / 100)
    gains = gains[~gains["domain"].str.startswith("retrieval: ")]
    runs = {}
    for p in (out / "benchmark" / "runs").glob("*/*/seed*/metrics.json"):
        m = json.loads(p.read_text())
        runs[(m["regime"], m["seed"])] = m["test"]
    for row in gains.sample(6, random_state=0).itertuples():
        test_set = "real/test" if row.domain.startswith("in-domain") else "synthetic/target"
        with_set = runs[(f"real,synthetic/{row.set}", row.seed)][test_set]["iou"]
        alone = runs[("real", row.seed)][test_set]["iou"]
        assert row.gain == pytest.approx(with_set - alone)
    # a fabricated case: the gain is per seed and per test set, never across them
    rows = [
        {"regime": "real", "seed": 0, "test_set": "real/test", "iou": 0.5},
        {"regime": "real", "seed": 1, "test_set": "real/test", "iou": 0.7},
        {"regime": "real,synthetic/x", "seed": 0, "test_set": "real/test", "iou": 0.6},
        {"regime": "real,synthetic/x", "seed": 1, "test_set": "real/test", "iou": 0.6},
    ]
    g = gains_from_rows(rows, ["x"]).set_index("seed")["gain"]
    assert g[0] == pytest.approx(0.1) and g[1] == pytest.approx(-0.1)


def test_correlations_equal_scipy_on_the_written_tables(study):
    result, out, _ = study
    sets = pd.read_csv(out / "sets.csv").set_index("set")
    gains = pd.read_csv(out / "gains_long.csv")
    corr = pd.read_csv(out / "correlations.csv")
    for domain, g in gains.groupby("domain"):
        mean_gain = g.groupby("set")["gain"].mean()
        for metric in ("lf_floor", "fd", "caption_consistency"):
            row = corr[(corr["domain"] == domain) & (corr["metric"] == metric)].iloc[0]
            x = sets.loc[mean_gain.index, metric]
            if x.nunique() < 2:
                assert bool(row["constant"])
                continue
            assert row["spearman"] == pytest.approx(stats.spearmanr(x, mean_gain).statistic)
            assert row["kendall"] == pytest.approx(stats.kendalltau(x, mean_gain).statistic)
            assert row["oriented_spearman"] == pytest.approx(METRICS[metric][0] * row["spearman"])
    assert set(result["best"]) == set(result["domains"])
    assert result["domains"] == [
        "in-domain (A test)", "cross-region (B)",
        "retrieval: in-domain (A test)", "retrieval: cross-region (B)",
    ]  # fmt: skip
    for domain in result["domains"]:
        assert (out / f"scatter_{_slug(domain)}.png").is_file()


def _slug(domain: str) -> str:
    from groundsynth.experiment.utility_plots import domain_slug

    return domain_slug(domain)


def test_rerun_resumes_without_redoing(study):
    result, out, cfg = study
    marker = out / "sets" / "diffusion-s20" / "metrics.json"
    before = marker.stat().st_mtime_ns
    again = run_metric_utility(cfg)
    assert marker.stat().st_mtime_ns == before
    assert again["correlations"] == result["correlations"]
    assert json.loads((out / "manifest.json").read_text())["outputs"]["sets"] == 9


def test_bad_inputs_are_named(tmp_path, study):
    _, out, cfg = study
    with pytest.raises(InputError, match="no-such-run"):
        MetricUtilityConfig(real=cfg.real, generators=(str(tmp_path / "no-such-run"),),
                            out=str(tmp_path / "x"))  # fmt: skip
    empty = tmp_path / "empty-run"
    empty.mkdir()
    with pytest.raises(InputError, match="no checkpoints"):
        run_metric_utility(
            MetricUtilityConfig(real=cfg.real, generators=(str(empty),), out=str(tmp_path / "y"))
        )


def test_cli_help_states_the_options_and_the_cost():
    res = CliRunner().invoke(app, ["experiment", "metric-utility", "--help"], env={"COLUMNS": "80"})
    assert res.exit_code == 0
    assert "--generators" in res.output and "--tasks" in res.output
    assert "14 minutes" in res.output  # the measured cost on 2 cores


def test_report_shows_the_study(study, tmp_path):
    _, out, _ = study
    from groundsynth.report import make_report

    page = make_report([out], tmp_path / "r.html").read_text()
    assert "label fidelity (pixel floor)" in page
    assert np.isfinite(pd.read_csv(out / "utility.csv")["gain_mean"]).all()
