"""The retrieval benchmark: pairs, the tiny dual encoder, chance, scoring, runs and tables."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("open_clip")

from groundsynth.benchmark.dual_encoder import (  # noqa: E402
    DualEncoderSpec,
    build_dual_encoder,
    load_dual_encoder,
    save_dual_encoder,
)
from groundsynth.benchmark.pairs import PairSource  # noqa: E402
from groundsynth.benchmark.retrieval import retrieval_scores  # noqa: E402
from groundsynth.benchmark.retrieval_bench import (  # noqa: E402
    RetrievalBenchConfig,
    chance_scores,
    learning_check,
    run_retrieval_benchmark,
)
from groundsynth.benchmark.retrieval_module import embed_pairs, score_pairs  # noqa: E402
from groundsynth.errors import InputError, OutputConflictError  # noqa: E402


@pytest.fixture(scope="module")
def captioned(tmp_path_factory: pytest.TempPathFactory, tiny_dataset: Path) -> Path:
    """The tiny 64 px dataset with 3 template captions per image."""
    from groundsynth.caption.run import caption_dataset
    from groundsynth.caption.spec import CaptionRunConfig, StreamSpec

    root = tmp_path_factory.mktemp("ret") / "ds"
    shutil.copytree(tiny_dataset, root)
    caption_dataset(
        CaptionRunConfig(dataset=str(root), streams=(StreamSpec("text", "template"),), n=3, seed=0)
    )
    return root


def _table(root: Path, split: str) -> pd.DataFrame:
    return pd.read_csv(root / "captions" / f"{split}.csv")


def test_pairs_of_a_dataset_hold_every_caption_of_each_image(captioned: Path) -> None:
    src = PairSource(captioned)
    assert src.splits() == ["train", "val", "test"]
    table = _table(captioned, "train")
    pairs = src.pairs("train")
    assert pairs.n_images == len(table) == len(src.ids("train"))
    assert len(pairs.texts) == 3 * len(table)
    for i, image_id in enumerate(pairs.image_ids):
        row = table[table["filename"] == f"{image_id}.png"].iloc[0]
        expected = [row["text_template"], row["text_template_2"], row["text_template_3"]]
        got = [pairs.text(j) for j in np.flatnonzero(pairs.image_of_text == i)]
        assert got == expected
        assert pairs.image_paths[i] == captioned / "train" / "images" / f"{image_id}.png"


def test_a_subset_of_pairs_keeps_each_caption_with_its_image(captioned: Path) -> None:
    src = PairSource(captioned)
    full = src.pairs("train")
    ids = list(reversed(src.ids("train")))[:5]
    sub = src.pairs("train", ids)
    assert sub.image_ids == tuple(ids)
    for i, image_id in enumerate(ids):
        k = full.image_ids.index(image_id)
        want = [full.text(j) for j in np.flatnonzero(full.image_of_text == k)]
        assert [sub.text(j) for j in np.flatnonzero(sub.image_of_text == i)] == want
    with pytest.raises(InputError, match="no captions for"):
        src.pairs("train", ["nope"])


def test_stream_selection_keeps_only_that_column(captioned: Path) -> None:
    with pytest.raises(InputError, match="nope"):
        PairSource(captioned, streams=("nope",))


def test_karpathy_pairs_find_images_in_a_subfolder_and_name_missing_ones(tmp_path: Path) -> None:
    from PIL import Image

    (tmp_path / "imgs" / "sub").mkdir(parents=True)
    for name in ("a.tif", "b.tif"):
        Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(tmp_path / "imgs" / "sub" / name)
    data = {"dataset": "ucm", "images": [
        {"filename": "a.tif", "split": "test", "sentences": [{"raw": "one"}, {"raw": "two"}]},
        {"filename": "b.tif", "split": "test", "sentences": [{"raw": "three"}]},
    ]}  # fmt: skip
    js = tmp_path / "dataset.json"
    js.write_text(json.dumps(data))
    src = PairSource(js, images=tmp_path / "imgs")
    pairs = src.pairs("test")
    assert pairs.image_ids == ("a", "b")
    assert [pairs.text(j) for j in range(3)] == ["one", "two", "three"]
    assert pairs.image_of_text.tolist() == [0, 0, 1]
    assert pairs.image_paths[1] == tmp_path / "imgs" / "sub" / "b.tif"
    with pytest.raises(InputError, match="needs its image folder"):
        PairSource(js)
    (tmp_path / "imgs" / "sub" / "b.tif").unlink()
    with pytest.raises(InputError, match=r"1 images named .* missing \(e.g. b.tif\)"):
        PairSource(js, images=tmp_path / "imgs")


def test_chance_equals_the_mean_recall_of_random_rankings(captioned: Path) -> None:
    pairs = PairSource(captioned).pairs("train")
    chance = chance_scores(pairs, ks=(1, 5))
    rng = np.random.default_rng(0)
    sims = [
        retrieval_scores(rng.random((pairs.n_images, len(pairs.texts))), pairs.image_of_text, ks=(1, 5))
        for _ in range(400)
    ]  # fmt: skip
    for key in ("i2t_r1", "i2t_r5", "t2i_r1", "t2i_r5", "mean_recall"):
        assert abs(np.mean([s[key] for s in sims]) - chance[key]) < 1.0, key
    n = pairs.n_images
    assert chance["t2i_r5"] == pytest.approx(500 / n)
    # one of 3 captions among the top 1 of 3n texts
    assert chance["i2t_r1"] == pytest.approx(100 * 3 / (3 * n))


def test_chance_by_hand_with_uneven_caption_counts() -> None:
    import pyarrow as pa

    from groundsynth.benchmark.pairs import PairSet

    # image 0 has 5 captions, images 1-3 one each: 8 texts
    pairs = PairSet(("a", "b", "c", "d"), (Path("a"),) * 4, pa.array(list("abcdefgh")),
                    np.array([0, 0, 0, 0, 0, 1, 2, 3]))  # fmt: skip
    got = chance_scores(pairs, ks=(1, 5))
    # i2t@5: image 0 always (3 wrong texts < 5); a one-caption image 5/8 of the time
    want = {"i2t_r1": 25.0, "i2t_r5": (100 + 3 * 62.5) / 4, "t2i_r1": 25.0, "t2i_r5": 100.0}
    assert got == pytest.approx({**want, "mean_recall": sum(want.values()) / 4})


def test_learning_check_needs_both_floors_beaten() -> None:
    test = {"a": {"mean_recall": 30.0}, "b": {"mean_recall": 30.0}}
    out = learning_check(test, {"a": {"mean_recall": 29.0}, "b": {"mean_recall": 31.0}},
                         {"a": {"mean_recall": 20.0}, "b": {"mean_recall": 20.0}})  # fmt: skip
    assert out["learned"] == {"a": True, "b": False} and out["passed"] is False
    out = learning_check(test, {"a": {"mean_recall": 10.0}, "b": {"mean_recall": 10.0}},
                         {"a": {"mean_recall": 30.0}, "b": {"mean_recall": 29.9}})  # fmt: skip
    assert out["learned"] == {"a": False, "b": True}


def test_score_pairs_equals_a_direct_ranking_of_the_embeddings(captioned: Path) -> None:
    torch.manual_seed(0)
    enc = build_dual_encoder(DualEncoderSpec(image_size=32))
    pairs = PairSource(captioned).pairs("train")
    images, texts = embed_pairs(enc, pairs, batch_size=7)
    assert np.allclose(np.linalg.norm(images, axis=1), 1, atol=1e-5)
    with torch.no_grad():  # the same images through the model in one batch, by hand
        from groundsynth.data.reader import read_rgb

        pixels = enc.preprocess(np.stack([read_rgb(p) for p in pairs.image_paths]))
        direct = torch.nn.functional.normalize(enc.model.encode_image(pixels), dim=-1).numpy()
    assert np.allclose(images, direct, atol=1e-5)
    sim = images @ texts.T
    got = score_pairs(enc, pairs, batch_size=5)
    for k in (1, 5, 10):
        t2i = np.mean(
            [(sim[:, j] > sim[pairs.image_of_text[j], j]).sum() < k for j in range(len(texts))]
        )
        best = [sim[i, pairs.image_of_text == i].max() for i in range(pairs.n_images)]
        i2t = np.mean(
            [(sim[i, pairs.image_of_text != i] >= best[i]).sum() < k for i in range(pairs.n_images)]
        )
        assert got[f"t2i_r{k}"] == pytest.approx(100 * t2i)
        assert got[f"i2t_r{k}"] == pytest.approx(100 * i2t)


def test_tiny_dual_encoder_overfits_one_batch() -> None:
    from open_clip.loss import ClipLoss

    torch.manual_seed(0)
    enc = build_dual_encoder(DualEncoderSpec(image_size=16, context_length=16))
    g = torch.Generator().manual_seed(1)
    images = (torch.rand(8, 16, 16, 3, generator=g) * 255).to(torch.uint8)
    words = ["forest", "water", "crops", "town", "grass", "sand", "scrub", "ice"]
    tokens = enc.tokenize([f"mostly {w}" for w in words])
    pixels = enc.preprocess(images)
    loss_fn, opt = ClipLoss(), torch.optim.AdamW(enc.model.parameters(), lr=2e-3)
    losses = []
    for _ in range(60):
        loss = loss_fn(
            enc.encode_images(pixels), enc.encode_texts(tokens), enc.model.logit_scale.exp()
        )
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    assert losses[-1] < 0.1 * losses[0], (losses[0], losses[-1])


def test_a_saved_dual_encoder_loads_with_the_same_weights(tmp_path: Path) -> None:
    torch.manual_seed(3)
    enc = build_dual_encoder(DualEncoderSpec(image_size=16, context_length=24))
    save_dual_encoder(tmp_path / "m.pt", enc, {"x": 1})
    back, info = load_dual_encoder(tmp_path / "m.pt")
    assert info == {"x": 1} and back.spec == enc.spec
    tokens = enc.tokenize(["a river"])
    assert torch.equal(back.model.encode_text(tokens), enc.model.encode_text(tokens))
    (tmp_path / "bad.pt").write_bytes(b"junk")
    with pytest.raises(InputError, match="not a dual encoder checkpoint"):
        load_dual_encoder(tmp_path / "bad.pt")


def _cfg(root: Path, out: Path, **kw) -> RetrievalBenchConfig:
    base = dict(out=str(out), real=str(root), seeds=(0, 1), image_size=32, context_length=40,
                batch_size=8, max_steps=4, max_epochs=2, accelerator="cpu", progress=False)  # fmt: skip
    return RetrievalBenchConfig(**{**base, **kw})


def test_benchmark_tables_match_runs_tested_weights_are_the_best_round_and_rerun_resumes(
    captioned: Path, tmp_path: Path
) -> None:
    out = tmp_path / "bench"
    res = run_retrieval_benchmark(_cfg(captioned, out, batch_size=4, max_steps=10, max_epochs=3))
    assert res.trained == ["real/seed0", "real/seed1"]
    rows = pd.read_csv(out / "results.csv")
    histories = []
    for seed in (0, 1):
        run = out / "runs" / "real" / f"seed{seed}"
        metrics = json.loads((run / "metrics.json").read_text())
        row = rows[rows["seed"] == seed].iloc[0]
        for key in ("i2t_r1", "t2i_r10", "mean_recall"):
            assert row[key] == pytest.approx(metrics["test"]["real/test"][key])
        assert row["untrained_mean_recall"] == pytest.approx(
            metrics["learning"]["untrained"]["real/test"]["mean_recall"]
        )
        history = metrics["val_history"]
        best = max(history, key=lambda h: h["mean_recall"])  # first of the highest
        assert metrics["tested_checkpoint"]["step"] == best["step"]
        assert [h["step"] for h in history][-1] == 10  # validated at the last step
        # the saved weights are the tested ones: rescoring them gives the recorded scores
        enc, _ = load_dual_encoder(run / "dual_encoder.pt")
        again = score_pairs(enc, PairSource(captioned).pairs("test"))
        assert again["mean_recall"] == pytest.approx(metrics["test"]["real/test"]["mean_recall"])
        val = score_pairs(enc, PairSource(captioned).pairs("val"))
        assert val["mean_recall"] == pytest.approx(metrics["tested_checkpoint"]["mean_recall"])
        histories.append([round(h["mean_recall"], 2) for h in history])
    # the best round is not the last in some run here, so testing the last weights would show
    assert any(h.index(max(h)) != len(h) - 1 for h in histories), histories
    summary = pd.read_csv(out / "summary.csv").iloc[0]
    assert summary["mean_recall_mean"] == pytest.approx(rows["mean_recall"].mean())
    assert summary["mean_recall_std"] == pytest.approx(rows["mean_recall"].std(ddof=1))
    assert "| real | real/test | 2 |" in (out / "results.md").read_text()

    again = run_retrieval_benchmark(_cfg(captioned, out, batch_size=4, max_steps=10, max_epochs=3))
    assert again.trained == [] and again.skipped == ["real/seed0", "real/seed1"]
    pd.testing.assert_frame_equal(pd.DataFrame(again.rows), pd.DataFrame(res.rows))
    with pytest.raises(OutputConflictError, match="lr"):
        run_retrieval_benchmark(_cfg(captioned, out, batch_size=4, max_steps=10, lr=1e-3))


def test_benchmark_refuses_bad_input_before_writing(captioned: Path, tmp_path: Path) -> None:
    out = tmp_path / "b"
    with pytest.raises(InputError, match="synthetic"):
        _cfg(captioned, out, train=("real,synthetic:0.5",))
    with pytest.raises(InputError, match="no split 'nope'"):
        run_retrieval_benchmark(_cfg(captioned, out, test="real/nope"))
    with pytest.raises(InputError, match="asks for 999"):
        run_retrieval_benchmark(_cfg(captioned, out, train=("real:999",)))
    assert not out.exists()
    with pytest.raises(InputError, match="batch_size must be >= 2"):
        _cfg(captioned, out, batch_size=1)


def test_cli_runs_the_benchmark_and_reports_bad_input(captioned: Path, tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from groundsynth.cli import app

    runner = CliRunner()
    out = tmp_path / "cli"
    args = ["benchmark", "retrieval", "--real", str(captioned), "--seeds", "1", "--image-size", "32",
            "--batch-size", "8", "--max-steps", "2", "--accelerator", "cpu", "--no-progress"]  # fmt: skip
    res = runner.invoke(app, [*args, "--out", str(out), "--dry-run"])
    assert res.exit_code == 0, res.output
    assert "model: tiny" in res.output and not out.exists()
    res = runner.invoke(app, [*args, "--out", str(out)])
    assert res.exit_code == 0, res.output
    metrics = json.loads((out / "runs" / "real" / "seed0" / "metrics.json").read_text())
    assert f"{metrics['test']['real/test']['mean_recall']:.1f}" in res.output
    res = runner.invoke(app, [*args, "--out", str(tmp_path / "x"), "--real-images", str(tmp_path)])
    assert res.exit_code == 2 and "is for a Karpathy JSON" in res.output


def test_nwpu_captions_json_reads_as_pairs_with_class_folders(tmp_path: Path) -> None:
    from PIL import Image

    for cls, name in (("airport", "airport_001.jpg"), ("river", "river_007.jpg")):
        (tmp_path / "NWPU" / cls).mkdir(parents=True)
        Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(tmp_path / "NWPU" / cls / name)
    data = {
        "airport": [{"filename": "airport_001.jpg", "split": "test", "raw_2": "c", "raw": "a",
                     "raw_1": "b", "imgid": 0}],
        "river": [{"filename": "river_007.jpg", "split": "test", "raw": "d", "raw_1": "e"}],
    }  # fmt: skip
    js = tmp_path / "dataset_nwpu.json"
    js.write_text(json.dumps(data))
    pairs = PairSource(js, images=tmp_path / "NWPU").pairs("test")
    assert pairs.image_ids == ("airport_001", "river_007")
    assert [pairs.text(j) for j in range(5)] == ["a", "b", "c", "d", "e"]
    assert pairs.image_of_text.tolist() == [0, 0, 0, 1, 1]
    assert pairs.image_paths[1] == tmp_path / "NWPU" / "river" / "river_007.jpg"


def test_aras400k_layout_pairs_come_from_its_one_captions_table(tmp_path: Path) -> None:
    from groundsynth.data import contract
    from tests.data.test_reader import ARAS_IDS, make_aras

    root = make_aras(tmp_path / "aras")
    src = PairSource(root)
    assert src.splits() == ["train", "val", "test", "synth"]
    n = len(contract.CAPTION_STREAMS)
    for split, ids in ARAS_IDS.items():
        pairs = src.pairs(split)  # the shared table, filtered on its split column
        assert sorted(pairs.image_ids) == sorted(ids)
        assert len(pairs.texts) == n * len(ids)
        for i, image_id in enumerate(pairs.image_ids):
            got = {pairs.text(j) for j in np.flatnonzero(pairs.image_of_text == i)}
            assert all(image_id in t for t in got) and len(got) == n
    one = PairSource(root, streams=(contract.CAPTION_STREAMS[0],)).pairs("synth")
    assert len(one.texts) == 3
