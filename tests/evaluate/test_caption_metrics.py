"""Caption metrics: consistency on hand-written captions, diversity against brute force."""

from __future__ import annotations

import json
import math
import random
from pathlib import Path

import pandas as pd
import pytest

from groundsynth.classes import CLASS_NAMES
from groundsynth.errors import InputError
from groundsynth.evaluate.caption_consistency import (
    ConsistencyAccumulator,
    ConsistencySettings,
    score_caption,
)
from groundsynth.evaluate.caption_diversity import CaptionDiversity
from groundsynth.evaluate.caption_lexicon import Lexicon, load_lexicon
from groundsynth.evaluate.captions import (
    METRICS_JSON,
    SCORES_PARQUET,
    evaluate_captions,
    load_compositions,
)

LEX = load_lexicon()
TREE, SHRUB, GRASS, CROP, BUILT, BARREN, WATER = range(7)
# Crop 60 %, Tree 30 %, Grass 8 %, Built-up 2 %; no shrub, bare land or water.
MAP = (0.30, 0.0, 0.08, 0.60, 0.02, 0.0, 0.0)


def score(text: str, fractions=MAP):
    return score_caption(LEX.parse(text), fractions)


def names(indices) -> set[str]:
    return {CLASS_NAMES[i] for i in indices}


def test_plain_consistent_caption() -> None:
    s = score("Mostly farmland, with some woodland and a few houses.")
    assert names(s.mentioned) == {"Crop", "Tree", "Built-up"}
    assert (s.precision, s.recall, s.hallucination, s.dominant_named) == (1.0, 1.0, False, True)
    assert (s.n_quantities, s.n_quantities_true) == (3, 3)
    assert s.consistent


def test_negation_is_not_a_mention() -> None:
    s = score("Fields and trees with no water and without bare ground.")
    assert names(s.mentioned) == {"Crop", "Tree"}
    assert names(s.negated) == {"Water", "Barren"}
    assert not s.hallucination and s.consistent
    s = score("Cropland and woodland, but no trees in the north.")
    assert TREE in s.mentioned and not s.negated  # named positively elsewhere
    conflict = score("Farmland without any trees.")
    assert conflict.negation_conflict and not conflict.consistent  # Tree is 30 %
    assert names(score("Neither trees nor water; just fields.").negated) == {"Tree", "Water"}
    assert WATER in score("Houses not far from a river.").mentioned  # an idiom, no negation
    assert names(score("Little to no water, mostly fields.").negated) == {"Water"}


def test_absent_lake_is_a_hallucination() -> None:
    s = score("A lake surrounded by farmland and forest.")
    assert names(s.hallucinated) == {"Water"} and s.hallucination
    assert s.precision == pytest.approx(2 / 3)
    assert not s.consistent


def test_tree_lined_is_not_tree() -> None:
    s = score("A tree-lined road crossing cropland.")
    assert names(s.mentioned) == {"Crop"}
    assert s.recall == pytest.approx(1 / 2)  # major classes: Crop and Tree
    assert set(score("Fields and a road lined with trees.").mentioned) == {CROP}
    assert set(score("Forested hills above tree-covered fields.").mentioned) == {TREE, CROP}


def test_crop_versus_cropland_and_whole_words() -> None:
    for text in ("cropland", "crops", "a crop field", "crop fields", "arable land"):
        assert set(score(text).mentioned) == {CROP}, text
    assert set(score("A cropped view of woodland.").mentioned) == {TREE}
    assert score("treeless waterfront").mentioned == ()
    assert set(score("grassy fields").mentioned) == {GRASS}  # grassland, not cropland
    assert set(score("a football field and buildings").mentioned) == {BUILT}


def test_dominant_class_must_be_named() -> None:
    s = score("Some woodland and grassland.")
    assert not s.dominant_named and s.recall == pytest.approx(1 / 2) and not s.consistent
    tie = (0.5, 0, 0, 0.5, 0, 0, 0)
    assert score("Woodland.", tie).dominant_named and score("Fields.", tie).dominant_named


def test_quantity_agreement() -> None:
    assert score("Farmland covers about 57 % of the scene, with woodland.").consistent
    bad = score("Farmland covers about 40 % of the scene, with woodland.")
    assert (bad.n_quantities, bad.n_quantities_true) == (1, 0) and not bad.consistent
    assert score("About 30 percent woodland and 60% cropland.").n_quantities_true == 2
    assert score("Cropland (55-65 %) and woodland (30 %).").n_quantities_true == 2
    assert score("A little farmland and mostly woodland.").n_quantities_true == 0
    # "half" after "northern" is a place, not a share
    assert score("Woodland in the northern half, farmland elsewhere.").n_quantities == 0
    # a percentage does not attach across "and" / "with" to the previous class
    s = score("Farmland and 30 % woodland.")
    assert s.n_quantities_true == 1


# Tree 80 %, Grass 20 %; nothing else.
FOREST = (0.80, 0.0, 0.20, 0.0, 0.0, 0.0, 0.0)


def quantities(text: str) -> list[tuple[int, str, float, float]]:
    return [(q.cls, q.phrase, q.low, q.high) for q in LEX.parse(text).quantities]


@pytest.mark.parametrize("cue", ["more than", "over", "above", "at least", "greater than"])
def test_lower_bounds_are_open_intervals(cue: str) -> None:
    text = f"Forest covers {cue} 70% of the image, with grassland."
    assert quantities(text) == [(TREE, f"{cue} 70%", 0.70, 1.0)]
    s = score(text, FOREST)  # before: judged as exactly 70 %, 10 points off
    assert (s.n_quantities, s.n_quantities_true) == (1, 1) and s.consistent
    assert score(f"Forest covers {cue} 90 % of the image.", FOREST).n_quantities_true == 0
    assert score(f"Forest covers {cue} 84 % of the image.", FOREST).n_quantities_true == 1  # ±5


@pytest.mark.parametrize(
    "cue", ["less than", "under", "below", "up to", "at most", "no more than", "not more than"]
)
def test_upper_bounds_are_open_intervals_and_claim_no_presence(cue: str) -> None:
    text = f"Mostly forest with grassland; {cue} 10 % of the image is water."
    assert (WATER, f"{cue} 10 %", 0.0, 0.10) in quantities(text)
    s = score(text, FOREST)  # no water at all: the bound holds and claims nothing
    assert WATER not in s.negated and not s.hallucination and s.precision == 1.0
    assert (s.n_quantities, s.n_quantities_true) == (2, 2) and s.consistent
    wet = (0.55, 0.0, 0.15, 0.0, 0.0, 0.0, 0.30)
    assert score(f"Forest and grassland, {cue} 10 % water.", wet).n_quantities_true == 0
    assert score(f"Forest and grassland, {cue} 40 % water.", wet).n_quantities_true == 1
    # a bound that needs the class present still claims it: "more than 10 % water"
    assert score("Mostly forest with grassland and more than 10 % water.", FOREST).hallucination


def test_fraction_words_hyphenated_and_bounded() -> None:
    same = [("two-thirds", "two thirds"), ("three-quarters", "three quarters")]
    same += [("one-third", "a third"), ("one-quarter", "a quarter"), ("one-half", "half")]
    for hyphenated, spaced in same:
        (q,) = LEX.parse(f"Farmland covers {hyphenated} of the image.").quantities
        (ref,) = LEX.parse(f"Farmland covers {spaced} of the image.").quantities
        assert (q.cls, q.phrase, q.low, q.high) == (CROP, hyphenated, ref.low, ref.high)
    assert quantities("Forest covers a quarter of the tile.") == [(TREE, "a quarter", 0.17, 0.33)]
    assert quantities("Half of the image is forest.") == [(TREE, "half", 0.4, 0.6)]
    assert quantities("More than half of the image is forest.") == [
        (TREE, "more than half", 0.4, 1.0)
    ]
    assert quantities("Grass covers less than one-third.") == [
        (GRASS, "less than one-third", 0.0, 0.42)
    ]
    s = score("Forest covers at least three-quarters of the scene, grass under a quarter.", FOREST)
    assert (s.n_quantities, s.n_quantities_true) == (2, 2) and s.consistent
    # comparatives bound fractions and percentages only; elsewhere they are prepositions
    assert quantities("Houses under a few trees.") == [(TREE, "a few", 0.0, 0.2)]
    assert quantities("Fields above a river.") == []


@pytest.mark.parametrize(
    "text",
    [
        "Forest and grassland; water is absent.",
        "Forest and grassland, free from water.",
        "Forest and grassland, zero water.",
        "Forest and grassland with no water.",
        "Forest and grassland. Water: none.",
        "Forest and grassland. Water is entirely absent.",
        "Forest and grassland; open water is not visible.",
    ],
)
def test_more_negations_are_not_mentions(text: str) -> None:
    s = score(text, FOREST)
    assert names(s.mentioned) == {"Tree", "Grass"} and names(s.negated) == {"Water"}
    assert not s.hallucination and s.consistent


def test_after_negation_stops_at_breakers_and_punctuation() -> None:
    p = LEX.parse("Water and trees absent.")  # "and" ends the scope: only trees are absent
    assert p.mentioned == {WATER} and p.negated == {TREE}
    p = LEX.parse("Water, grassland: none.")
    assert p.mentioned == {WATER} and p.negated == {GRASS}
    assert LEX.parse("Woodland where buildings are absent.").negated == {BUILT}


def test_caption_without_classes() -> None:
    s = score("A satellite image.")
    assert math.isnan(s.precision) and s.recall == 0 and not s.consistent
    assert s.row()["mentioned"] == ""


def test_settings_and_input_validation() -> None:
    strict = ConsistencySettings(recall_share=0.02)
    s = score_caption(LEX.parse("Farmland and woodland."), MAP, strict)
    assert s.recall == pytest.approx(2 / 4)
    with pytest.raises(InputError):
        ConsistencySettings(presence=0.2, recall_share=0.1)
    with pytest.raises(InputError, match="7 non-negative"):
        score("farmland", (1, 2))
    with pytest.raises(InputError, match="sum"):
        score("farmland", (0,) * 7)


def test_accumulator_per_stream_and_pooled() -> None:
    acc = ConsistencyAccumulator()
    acc.update("a", score("Mostly farmland with some woodland."))  # consistent
    acc.update("a", score("A lake and farmland."))  # hallucination, no Tree
    acc.update("b", score("A satellite image."))  # no mentions
    out = acc.compute()
    a, pooled = out["per_stream"]["a"], out["pooled"]
    assert a["captions"] == 2 and a["consistent_rate"] == 0.5
    assert a["mention_precision"] == pytest.approx((1 + 0.5) / 2)
    assert a["hallucination_rate"] == 0.5
    assert pooled["captions"] == 3 and pooled["captions_without_mentions"] == 1
    assert pooled["mention_recall"] == pytest.approx((1 + 0.5 + 0) / 3)
    assert pooled["quantity_agreement"] == 1.0 and pooled["quantities"] == 2


def test_lexicon_file_errors(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="twice"):
        Lexicon({"classes": {"Tree": ["wood"], "Water": ["wood"]}})
    with pytest.raises(InputError, match="unknown class"):
        Lexicon({"classes": {"Forest": ["wood"]}})
    with pytest.raises(InputError, match="not found"):
        load_lexicon(tmp_path / "none.yaml")
    with pytest.raises(InputError, match="comparatives"):
        Lexicon({"classes": {"Tree": ["wood"]}, "comparatives": {"beyond": ["past"]}})
    own = tmp_path / "mine.yaml"
    own.write_text("classes:\n  Water: [loch]\n")
    assert load_lexicon(own).parse("A loch.").mentioned == {WATER}


# -- diversity ---------------------------------------------------------------------------


def brute_words(text: str) -> list[str]:
    for ch in ",.;:!?()":
        text = text.replace(ch, " ")
    return text.lower().split()


def brute_distinct(texts: list[str], n: int) -> tuple[int, int]:
    grams = [tuple(w[i : i + n]) for w in map(brute_words, texts) for i in range(len(w) - n + 1)]
    return len(set(grams)), len(grams)


def test_redundancy_on_a_hand_made_list() -> None:
    d = CaptionDiversity()
    d.update(["A lake.", "A lake.", " A lake. ", "a lake.", "A lake"], stream="x")
    d.update(["A lake.", "Fields."], stream="y")
    out = d.compute()
    # exact strings: case and punctuation count, surrounding spaces do not
    assert out["per_stream"]["x"]["distinct_captions"] == 3
    assert out["per_stream"]["x"]["redundancy"] == pytest.approx(1 - 3 / 5)
    assert out["per_stream"]["y"]["redundancy"] == 0
    assert out["pooled"]["distinct_captions"] == 4
    assert out["pooled"]["redundancy"] == pytest.approx(1 - 4 / 7)


def test_distinct_n_against_brute_force() -> None:
    rng = random.Random(3)
    vocab = ["farmland", "Woodland", "a", "lake", "built-up", "some", "the", "north", "river"]
    texts = []
    for _ in range(400):
        words = rng.choices(vocab, k=rng.randint(1, 9))
        texts.append(" ".join(words) + rng.choice([".", "", " !", ", and more."]))
    streams = {"s1": texts[:250], "s2": texts[250:]}
    d = CaptionDiversity(batch_size=17)
    for name, ts in streams.items():
        for i in range(0, len(ts), 40):
            d.update(ts[i : i + 40], stream=name)
    out = d.compute()
    for name, ts in [*streams.items(), ("pooled", texts)]:
        got = out["pooled"] if name == "pooled" else out["per_stream"][name]
        for n in range(1, 5):
            distinct, total = brute_distinct(ts, n)
            assert got[f"distinct_ngrams_{n}"] == distinct and got[f"ngrams_{n}"] == total
            assert got[f"distinct_{n}"] == pytest.approx(distinct / total)
        assert got["vocabulary"] == len({w for t in ts for w in brute_words(t)})
        assert got["mean_length"] == pytest.approx(sum(len(brute_words(t)) for t in ts) / len(ts))
        assert got["redundancy"] == pytest.approx(1 - len({t.strip() for t in ts}) / len(ts))


def test_ngrams_do_not_cross_captions() -> None:
    d = CaptionDiversity()
    d.update(["a b", "c d"])
    out = d.compute()["pooled"]
    assert (out["ngrams_2"], out["ngrams_3"], out["distinct_ngrams_2"]) == (2, 0, 2)


# -- the API -----------------------------------------------------------------------------


def write_table(path: Path) -> Path:
    rows = [
        ["p1.png", "train", 30, 0, 8, 60, 2, 0, 0,
         "Mostly farmland, with some woodland.", "A lake and farmland."],
        ["p2.png", "val", 0, 0, 0, 0, 0, 50, 50,
         "Bare ground and a lake.", ""],
    ]  # fmt: skip
    cols = ["filename", "split", *CLASS_NAMES, "hybrid_x", "vision_y"]
    pd.DataFrame(rows, columns=cols).to_csv(path, index=False)
    return path


def test_evaluate_captions_table(tmp_path: Path) -> None:
    src = write_table(tmp_path / "captions.csv")
    out = tmp_path / "out"
    summary = evaluate_captions(src, out)
    assert summary["format"] == "table" and summary["captions"] == 3
    assert summary["skipped"] == {"empty": 1, "no_composition": 0}
    assert summary["images"] == 2 and summary["streams"] == ["hybrid_x", "vision_y"]
    cons = summary["consistency"]
    assert cons["per_stream"]["hybrid_x"]["consistent_rate"] == 1.0
    assert cons["per_stream"]["vision_y"]["hallucination_rate"] == 1.0
    assert cons["pooled"]["consistent_rate"] == pytest.approx(2 / 3)
    assert summary["mentions"]["hybrid_x"]["Water"] == 1
    assert json.loads((out / METRICS_JSON).read_text())["captions"] == 3
    scores = pd.read_parquet(out / SCORES_PARQUET)
    assert list(scores["caption_id"]) == ["p1.png#hybrid_x", "p1.png#vision_y", "p2.png#hybrid_x"]
    assert list(scores["hallucinated"]) == ["", "Water", ""]
    assert scores["consistent"].tolist() == [True, False, True]
    assert not list(out.glob(".*"))  # no temporary files left
    only = evaluate_captions(src, streams=["vision_y"])
    assert only["captions"] == 1 and only["streams"] == ["vision_y"]


def test_evaluate_captions_with_compositions(tmp_path: Path) -> None:
    corpus = {"images": [{"filename": "a.tif", "sentences": [{"raw": "Woodland and a lake."}]},
                         {"filename": "b.tif", "sentences": [{"raw": "Fields."}]}]}  # fmt: skip
    src = tmp_path / "dataset.json"
    src.write_text(json.dumps(corpus))
    plain = evaluate_captions(src)
    assert plain["consistency"] is None and plain["mentions"]["dataset"]["Water"] == 1
    comps = {"a": (0.5, 0, 0, 0, 0, 0, 0.5)}  # by stem: "a.tif" -> "a"
    summary = evaluate_captions(src, compositions=comps)
    assert summary["captions_scored_for_consistency"] == 1
    assert summary["skipped"]["no_composition"] == 1
    assert summary["consistency"]["pooled"]["consistent_rate"] == 1.0
    table = tmp_path / "class_percentages.csv"
    pd.DataFrame([["a.tif", 50, 0, 0, 0, 0, 0, 50]], columns=["filename", *CLASS_NAMES]).to_csv(
        table, index=False
    )
    assert load_compositions(table)["a"] == (50.0, 0, 0, 0, 0, 0, 50.0)
    with pytest.raises(InputError, match="class columns"):
        load_compositions(src)


@pytest.mark.realdata
def test_real_ucm_and_sydney(shared_data: Path, tmp_path: Path) -> None:
    ucm = evaluate_captions(shared_data / "captions" / "ucm" / "dataset.json", tmp_path)
    pooled = ucm["diversity"]["pooled"]
    assert pooled["captions"] == 10_500 and pooled["distinct_captions"] == 2032
    assert pooled["redundancy"] == 1 - 2032 / 10500
    assert len(pd.read_parquet(tmp_path / SCORES_PARQUET)) == 10_500
    sydney = evaluate_captions(shared_data / "captions" / "sydney" / "descriptions_SIDNEY.txt")
    assert sydney["captions"] == 3065 and sydney["images"] == 613


def _exact(**shares: float) -> tuple[float, ...]:
    """Fractions holding ``shares`` exactly (they must sum to 1.0 in floating point)."""
    out = [0.0] * 7
    for name, share in shares.items():
        out[CLASS_NAMES.index(name)] = share
    assert sum(out) == 1.0  # so normalising leaves every share as given
    return tuple(out)


def test_thresholds_are_inclusive_up_to_their_float_slack() -> None:
    # presence: a 1 % share (less 1e-12) is present, so a lake there is no hallucination
    s = score("A lake and farmland.", _exact(Water=0.01 - 1e-12, Crop=1 - (0.01 - 1e-12)))
    assert not s.hallucination and s.precision == 1.0
    # recall: a 10 % share (less 1e-12) is major and must be named
    s = score("Mostly farmland.", _exact(Tree=0.1 - 1e-12, Crop=1 - (0.1 - 1e-12)))
    assert s.recall == 0.5 and not s.consistent
    # dominant: within 1e-12 of the largest share counts as dominant
    crop = 0.5 - 1e-12
    s = score("Farmland.", _exact(Tree=0.5, Crop=crop, Grass=1 - 0.5 - crop))
    assert s.dominant_named


def test_quantity_bounds_are_inclusive() -> None:
    # "mostly" is 0.5..1 and "some" 0.02..0.45 (lexicon), with 1e-9 slack
    low = _exact(Crop=0.5 - 1e-9, Tree=1 - (0.5 - 1e-9))
    assert score("Mostly farmland.", low).n_quantities_true == 1
    assert score("Mostly farmland.", _exact(Crop=0.4, Tree=0.6)).n_quantities_true == 0
    high = _exact(Tree=0.45 + 1e-9, Crop=1 - (0.45 + 1e-9))
    assert score("Some woodland.", high).n_quantities_true == 1
    # "about 65 %" agrees within 5 points (and 1e-9) on either side
    text = "Farmland covers about 65 % of the scene."
    for share in ((0.65 - 0.05) - 1e-9, (0.65 + 0.05) + 1e-9):
        assert score(text, _exact(Crop=share, Tree=1 - share)).n_quantities_true == 1, share
    for share in (0.59, 0.71):
        assert score(text, _exact(Crop=share, Tree=1 - share)).n_quantities_true == 0, share
    tight = ConsistencySettings(tolerance=0.0)
    assert score_caption(LEX.parse(text), _exact(Crop=0.65, Tree=0.35), tight).n_quantities_true


def test_recall_undefined_without_major_classes_and_missed_major_class() -> None:
    even = (1 / 7,) * 7
    s = score_caption(LEX.parse("Farmland."), even, ConsistencySettings(recall_share=0.5))
    assert math.isnan(s.recall) and s.dominant_named and s.consistent
    missed = score("Mostly farmland.")  # Tree (30 %) is major and not named
    assert missed.dominant_named and not missed.hallucination and not missed.consistent
    assert score("Farmland and woodland.").row()["mentioned"] == "Tree;Crop"


def test_settings_bounds() -> None:
    for ok in (
        {"presence": 0.1, "recall_share": 0.1},
        {"presence": 0.5, "recall_share": 1.0},
        {"tolerance": 0.0},
        {"tolerance": 0.5},
    ):
        ConsistencySettings(**ok)
    for bad in ({"presence": 0.0}, {"recall_share": 1.5}, {"tolerance": -0.1}):
        with pytest.raises(InputError):
            ConsistencySettings(**bad)
    with pytest.raises(InputError, match="^class fractions: expected 7"):
        score("farmland", (1, 2))


def test_accumulator_every_summary_value() -> None:
    acc = ConsistencyAccumulator()
    acc.update("a", score("Farmland without any trees."))  # 1 mention, negation conflict
    acc.update("a", score("A lake and farmland."))  # 2 mentions, hallucination
    acc.update("a", score("Mostly farmland with some woodland."))  # 2 mentions, 2 quantities
    acc.update("b", score("Mostly farmland."))  # 1 mention, 1 quantity
    acc.update("b", score("A satellite image."))  # nothing named
    out = acc.compute()
    assert out["settings"] == {"presence": 0.01, "recall_share": 0.1, "tolerance": 5.0}
    a, b, pooled = out["per_stream"]["a"], out["per_stream"]["b"], out["pooled"]
    assert (a["hallucination_rate"], a["negation_conflict_rate"]) == (1 / 3, 1 / 3)
    assert (a["dominant_agreement"], a["mean_mentions"]) == (1.0, 5 / 3)
    assert (a["captions_with_quantities"], a["quantities"]) == (1, 2)
    assert (b["dominant_agreement"], b["mean_mentions"], b["captions_with_quantities"]) == (
        0.5,
        0.5,
        1,
    )
    assert (b["negation_conflict_rate"], b["hallucination_rate"]) == (0.0, 0.0)
    assert pooled["captions"] == 5 and pooled["dominant_agreement"] == 4 / 5
    assert pooled["mean_mentions"] == 6 / 5 and pooled["negation_conflict_rate"] == 1 / 5
    assert pooled["captions_with_quantities"] == 2 and pooled["quantities"] == 3
