"""The grounding filter on a tiny synthetic set: 16 samples, maps of 0, 5, 10, 15 corrupted
(rotated), captions of odd samples inconsistent, confidence 1 - i/16 (see test_synthetic)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from groundsynth.errors import InputError, OutputConflictError

torch = pytest.importorskip("torch")
pytest.importorskip("segmentation_models_pytorch")

from groundsynth.data.validate import validate_dataset  # noqa: E402
from groundsynth.evaluate.filter import (  # noqa: E402
    DECISIONS,
    PASSED,
    SUMMARY,
    FilterConfig,
    ShareRule,
    filter_synthetic,
)
from tests.evaluate.test_synthetic import (  # noqa: E402
    CORRUPTED,
    ColourSegmenter,
    make_synthetic,
)

ALL = [f"{i:06d}" for i in range(16)]
GOOD_MAP = [i for i in ALL if int(i) not in CORRUPTED]
GOOD_CAPTION = [i for i in ALL if int(i) % 2 == 0]


@pytest.fixture(scope="module")
def synth(tmp_path_factory) -> Path:
    return make_synthetic(tmp_path_factory.mktemp("filter") / "synth")


@pytest.fixture(scope="module")
def manifest(synth, tmp_path_factory) -> tuple[Path, dict]:
    """Scores computed on the fly with the (exact) colour segmenter; manifest mode."""
    torch.manual_seed(0)
    out = tmp_path_factory.mktemp("manifest") / "out"
    summary = filter_synthetic(
        synth,
        out,
        model=ColourSegmenter(),
        min_label_fidelity=0.9,
        min_caption_consistency=1.0,
        device="cpu",
    )
    return out, summary


@pytest.fixture(scope="module")
def scores(manifest) -> Path:
    return manifest[0] / "scores" / "per_sample.parquet"


def passed_ids(out: Path) -> list[str]:
    return pd.read_csv(out / PASSED, dtype=str)["id"].tolist()


def test_manifest_counts_and_reasons(manifest):
    out, s = manifest
    expected = sorted(set(GOOD_MAP) & set(GOOD_CAPTION))
    assert passed_ids(out) == expected
    assert (s["samples"], s["passed"], s["failed"]) == (16, len(expected), 16 - len(expected))
    assert s["failures_by_reason"] == {"caption_consistency<1": 8, "label_fidelity<0.9": 4}
    # 0 and 10 fail only on their map; 5 and 15 fail both rules
    assert s["failed_by_this_reason_only"] == {"caption_consistency<1": 6, "label_fidelity<0.9": 2}
    assert s["by_origin"] == {
        "ganA": {"samples": 8, "passed": 6},
        "ganB": {"samples": 8, "passed": 0},
    }
    decisions = pd.read_parquet(out / DECISIONS).set_index("id")
    assert len(decisions) == 16
    assert decisions.loc["000005", "reasons"] == "label_fidelity<0.9;caption_consistency<1"
    assert decisions.loc["000002", "passed"] and decisions.loc["000002", "reasons"] == ""
    assert json.loads((out / SUMMARY).read_text())["passed"] == len(expected)
    assert (out / "config.yaml").is_file() and (out / "manifest.json").is_file()
    assert not (out / "synth").exists()  # manifest mode copies nothing


@pytest.mark.parametrize("mode", ["copy", "link"])
def test_dataset_modes_validate(synth, scores, tmp_path, mode):
    out = tmp_path / mode
    s = filter_synthetic(synth, out, scores=scores, min_label_fidelity=0.9, mode=mode)
    assert s["passed"] == 12 and passed_ids(out) == GOOD_MAP
    images = sorted(p.stem for p in (out / "synth" / "images").iterdir())
    assert images == GOOD_MAP
    assert sorted(pd.read_parquet(out / "metadata.parquet")["id"]) == GOOD_MAP
    pct = pd.read_csv(out / "class_percentages" / "synth.csv", dtype={"filename": str})
    caps = pd.read_csv(out / "captions" / "synth.csv", dtype={"filename": str})
    assert len(pct) == len(caps) == 12 and "template" in caps.columns
    report = validate_dataset(out)
    assert report.ok, report.summary()
    img = out / "synth" / "images" / "000001.png"
    assert os.path.samefile(img, synth / "synth" / "images" / "000001.png") == (mode == "link")
    assert s["files"]["files"] == {"copied" if mode == "copy" else "linked": 24}
    # rerun: nothing is copied again
    again = filter_synthetic(synth, out, scores=scores, min_label_fidelity=0.9, mode=mode)
    assert again["files"]["files"] == {"already_present": 24}
    assert again["passed"] == 12
    with pytest.raises(OutputConflictError, match="another configuration"):
        filter_synthetic(synth, out, scores=scores, min_label_fidelity=0.5, mode=mode)


def test_confidence_share_rules_and_missing_scores(synth, scores, tmp_path):
    df = pd.read_parquet(scores)
    s = filter_synthetic(
        synth, tmp_path / "a", scores=scores, min_confidence=0.5, class_share=["Water<=25%"]
    )
    ok = (df["confidence"] >= 0.5) & (df["frac_Water"] <= 0.25)
    assert passed_ids(tmp_path / "a") == sorted(df.loc[ok, "id"])
    assert s["rules"] == ["confidence>=0.5", "Water<=0.25"]
    assert s["failures_by_reason"].get("confidence<0.5") == int((df["confidence"] < 0.5).sum())
    if (df["frac_Water"] > 0.25).any():
        assert s["failures_by_reason"]["Water>0.25"] == int((df["frac_Water"] > 0.25).sum())
    # scores with a missing caption score and a missing sample
    holes = df[df["id"] != "000003"].copy()
    holes.loc[holes["id"] == "000002", "caption_consistency"] = np.nan
    holes.to_parquet(tmp_path / "holes.parquet", index=False)
    s = filter_synthetic(
        synth, tmp_path / "b", scores=tmp_path / "holes.parquet", min_caption_consistency=1.0
    )
    assert s["failures_by_reason"]["caption_consistency:missing"] == 1
    assert s["failures_by_reason"]["scores:missing"] == 1
    assert s["samples"] == 16 and "000002" not in passed_ids(tmp_path / "b")
    s = filter_synthetic(
        synth,
        tmp_path / "c",
        scores=tmp_path / "holes.parquet",
        min_caption_consistency=1.0,
        on_missing="pass",
    )
    assert {"000002", "000003"} <= set(passed_ids(tmp_path / "c"))


def test_rules_and_config_errors(synth, scores, tmp_path):
    assert ShareRule.parse("water <= 90%") == ShareRule("Water", "<=", 0.9)
    assert str(ShareRule.parse("builtup>=0.05")) == "Built-up>=0.05"
    assert ShareRule.parse("Tree>0.5").failure() == "Tree<=0.5"
    for bad in ("Water=0.9", "Lava<=0.5", "Water<=1.5"):
        with pytest.raises(InputError):
            ShareRule.parse(bad)
    with pytest.raises(InputError, match="no filter rule"):
        FilterConfig(synthetic=str(synth), out=str(tmp_path / "x"))
    with pytest.raises(InputError, match="needs label-fidelity scores"):
        FilterConfig(synthetic=str(synth), out=str(tmp_path / "x"), min_label_fidelity=0.5)
    with pytest.raises(InputError, match="mode"):
        FilterConfig(synthetic=str(synth), out="x", min_confidence=0.1, mode="move")  # type: ignore[arg-type]
    (tmp_path / "foreign").mkdir()
    (tmp_path / "foreign" / "data.txt").write_text("mine")
    with pytest.raises(OutputConflictError, match="no config.yaml"):
        filter_synthetic(synth, tmp_path / "foreign", scores=scores, min_confidence=0.5)
    # scores without label fidelity cannot drive a label-fidelity rule
    no_miou = pd.read_parquet(scores).assign(miou=None)
    no_miou.to_parquet(tmp_path / "no_miou.parquet", index=False)
    with pytest.raises(InputError, match="no sample has a 'miou' value"):
        filter_synthetic(
            synth, tmp_path / "y", scores=tmp_path / "no_miou.parquet", min_label_fidelity=0.5
        )


def test_aras_layout_without_model(synth, tmp_path):
    """No metadata, one captions CSV for every split (as released): composition and caption
    scores come from the tables; the copied dataset validates."""
    import shutil

    root = tmp_path / "aras"
    shutil.copytree(synth / "synth", root / "synth")
    table = pd.read_csv(synth / "captions" / "synth.csv", dtype={"filename": str})
    extra = table.head(2).assign(split="test", filename=["x1.png", "x2.png"])
    (root / "captions").mkdir()
    pd.concat([table, extra]).to_csv(root / "captions" / "aras_captions.csv", index=False)
    s = filter_synthetic(
        root,
        tmp_path / "out",
        min_caption_consistency=1.0,
        class_share=["Barren<=0.5"],
        mode="copy",
    )
    df = pd.read_parquet(tmp_path / "out" / "scores" / "per_sample.parquet")
    assert len(df) == 16 and df["miou"].isna().all()
    ok = (df["caption_consistency"] == 1.0) & (df["frac_Barren"] <= 0.5)
    assert passed_ids(tmp_path / "out") == sorted(df.loc[ok, "id"]) and s["passed"] == ok.sum()
    report = validate_dataset(tmp_path / "out")
    assert report.ok, report.summary()
    caps = pd.read_csv(tmp_path / "out" / "captions" / "synth.csv")
    assert set(caps["split"]) == {"synth"} and len(caps) == s["passed"]


def test_cli_filter_then_validate(synth, scores, tmp_path):
    from typer.testing import CliRunner

    from groundsynth.cli import app

    runner = CliRunner()
    res = runner.invoke(app, ["filter", "--help"], terminal_width=200)
    assert res.exit_code == 0 and "Example" in res.output
    out = tmp_path / "out"
    args = ["filter", str(synth), "--scores", str(scores), "--min-label-fidelity", "0.9"]
    args += ["--min-caption-consistency", "1.0", "--out", str(out), "--mode", "link"]
    res = runner.invoke(app, [*args, "--no-progress"], terminal_width=200)
    assert res.exit_code == 0, res.output
    assert "6 of 16 samples pass" in res.output and "label_fidelity<0.9" in res.output
    res = runner.invoke(app, ["validate", str(out), "--no-progress"])
    assert res.exit_code == 0, res.output
    res = runner.invoke(app, ["filter", str(synth), "--out", str(tmp_path / "o2"), "--no-progress"])
    assert res.exit_code == 2 and "no filter rule" in res.output


def test_refused_rules_write_nothing_so_a_corrected_rerun_works(synth, scores, tmp_path):
    """A rule whose score is missing everywhere is refused before the run folder exists."""
    no_captions = pd.read_parquet(scores).assign(caption_consistency=None)
    no_captions.to_parquet(tmp_path / "no_captions.parquet", index=False)
    out = tmp_path / "out"
    with pytest.raises(InputError, match="no sample has a 'caption_consistency' value"):
        filter_synthetic(
            synth, out, scores=tmp_path / "no_captions.parquet", min_caption_consistency=0.5
        )
    assert not out.exists()
    s = filter_synthetic(synth, out, scores=tmp_path / "no_captions.parquet", min_confidence=0.5)
    assert s["rules"] == ["confidence>=0.5"]
    # scores computed here: a dataset without caption tables cannot score captions
    from tests.evaluate.test_synthetic import make_real

    plain = make_real(tmp_path / "plain")
    with pytest.raises(InputError, match="no 'caption_consistency' score can be computed"):
        filter_synthetic(plain, tmp_path / "o2", min_caption_consistency=0.5)
    assert not (tmp_path / "o2").exists()
    s = filter_synthetic(plain, tmp_path / "o2", class_share=["Water<=0.9"])
    assert s["samples"] == 16
