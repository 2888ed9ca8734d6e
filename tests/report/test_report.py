from __future__ import annotations

import json
import re

import pandas as pd
import pytest
from typer.testing import CliRunner

from groundsynth.cli import app
from groundsynth.data.build import BuildConfig, build_dataset
from groundsynth.evaluate.captions import evaluate_captions
from groundsynth.report import WORLDCOVER_CAVEAT, detect_kind, make_report
from tests.data.rasters import make_pair


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("report")
    lc, img = make_pair(tmp)
    ds = build_dataset(
        BuildConfig(imagery=(str(img),), landcover=(str(lc),), out=str(tmp / "ds"), size=64)
    ).out
    corpus = tmp / "corpus.json"
    corpus.write_text(json.dumps({"images": [
        {"filename": "a.png", "split": "test", "sentences": [{"raw": "many buildings near a river"}] * 2},
        {"filename": "b.png", "split": "test", "sentences": [{"raw": "a dense forest"}, {"raw": "green trees"}]},
    ]}))  # fmt: skip
    evaluate_captions(corpus, tmp / "caps")
    bench = tmp / "bench"
    bench.mkdir()
    pd.DataFrame(
        {"arch": ["unet", "fpn"], "regime": ["real", "real"], "f1_mean": [0.5, 0.6]}
    ).to_csv(bench / "results.csv", index=False)
    return ds, tmp / "caps", bench


def test_kinds_are_detected(runs):
    ds, caps, bench = runs
    assert [detect_kind(p) for p in runs] == ["dataset", "captions", "table"]


def test_report_is_self_contained_with_every_section(runs, tmp_path):
    out = make_report(list(runs), tmp_path / "r.html")
    page = out.read_text()
    assert page.startswith("<!DOCTYPE html>")
    assert WORLDCOVER_CAVEAT.split(",")[0] in page
    for heading in ("Dataset: ds", "Captions: corpus.json", "Results: bench"):
        assert heading in page
    assert "redundancy %" in page and "25.000" in page  # 4 captions, 3 distinct
    assert len(re.findall(r'src="data:image/png;base64,', page)) >= 3
    assert "<script" not in page.lower()
    # no external reference of any kind
    assert not re.search(r'(src|href)="(?!data:|#)', page)
    assert "http://" not in page and "https://" not in page


def test_report_cli(runs, tmp_path):
    res = CliRunner().invoke(app, ["report", *map(str, runs), "--out", str(tmp_path / "r.html")])
    assert res.exit_code == 0, res.output
    assert (tmp_path / "r.html").stat().st_size > 10_000
    res = CliRunner().invoke(app, ["report", str(tmp_path / "missing")])
    assert res.exit_code == 2 and "no such run directory" in res.output
