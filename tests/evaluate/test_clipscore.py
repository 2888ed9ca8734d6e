"""CLIPScore with tiny randomly initialised CLIPs, checked against direct computation."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from groundsynth.errors import InputError
from groundsynth.evaluate.clipscore import (
    ClipScoreAccumulator,
    ClipScoreConfig,
    ClipScorer,
    clip_score,
)

pytest.importorskip("open_clip")


@pytest.fixture(scope="module", autouse=True)
def _offline(tmp_path_factory):
    mp = pytest.MonkeyPatch()
    mp.setenv("HF_HUB_OFFLINE", "1")
    mp.setenv("HF_HOME", str(tmp_path_factory.mktemp("hf_cache")))
    yield
    mp.undo()


@pytest.fixture(scope="module")
def open_clip_model(tmp_path_factory):
    from tests.evaluate.tiny_clip import tiny_open_clip

    return tiny_open_clip(tmp_path_factory.mktemp("oc"))


@pytest.fixture(scope="module")
def hf_clip_model(tmp_path_factory):
    from tests.evaluate.tiny_clip import tiny_hf_clip

    return tiny_hf_clip(tmp_path_factory.mktemp("hfclip"))


def _images(k: int) -> list[np.ndarray]:
    rng = np.random.default_rng(5)
    return [rng.integers(0, 256, (40, 48, 3), dtype=np.uint8) for _ in range(k)]


TEXTS = [
    "a forest with some fields",
    "fields and a river",
    "a town by a lake",
    "water",
    "crop fields crop fields",
    "the forest",
]
LONG = " ".join(["forest and fields"] * 40)  # 120 words: over CLIP's 77 tokens


def test_formula_clamps_and_weights() -> None:
    got = clip_score(np.array([-0.3, 0.0, 0.25, np.nan]))
    assert got[:3].tolist() == [0.0, 0.0, 25.0] and np.isnan(got[3])
    assert clip_score(0.4, weight=2.5) == pytest.approx(1.0)
    with pytest.raises(InputError):
        ClipScoreConfig(model="m", weight=0)
    with pytest.raises(InputError, match="truncate, skip"):
        ClipScoreConfig(model="m", long_captions="cut")  # type: ignore[arg-type]


def test_open_clip_matches_direct_computation(open_clip_model) -> None:
    import open_clip
    import torch

    config, ckpt = open_clip_model
    scorer = ClipScorer(ClipScoreConfig(model=str(config), pretrained=str(ckpt), batch_size=4))
    images = _images(len(TEXTS))
    res = scorer.score(TEXTS, images)
    model, _, preprocess = open_clip.create_model_and_transforms(
        "tiny-clip-test", pretrained=str(ckpt)
    )
    tok = open_clip.get_tokenizer("tiny-clip-test")
    with torch.no_grad():
        t = model.encode_text(tok(TEXTS))
        v = model.encode_image(torch.stack([preprocess(Image.fromarray(im)) for im in images]))
    cos = torch.nn.functional.cosine_similarity(t, v).numpy()
    np.testing.assert_allclose(res.cosine, cos, atol=1e-5)
    np.testing.assert_allclose(res.scores, 100 * np.maximum(cos, 0), atol=1e-3)
    assert not res.long.any()
    hessel = ClipScorer(ClipScoreConfig(model=str(config), pretrained=str(ckpt), weight=2.5))
    np.testing.assert_allclose(
        hessel.score(TEXTS, images).scores, 2.5 * np.maximum(cos, 0), atol=1e-4
    )
    # a named open_clip model without weights is refused (random weights would score noise)
    with pytest.raises(InputError, match="needs pretrained weights"):
        ClipScorer(ClipScoreConfig(model="ViT-B-32")).load()


def test_long_captions_truncated_or_skipped_and_counted(open_clip_model) -> None:
    import open_clip

    config, ckpt = open_clip_model
    images = _images(3)
    texts = [TEXTS[0], LONG, TEXTS[1]]
    trunc = ClipScorer(ClipScoreConfig(model=str(config), pretrained=str(ckpt)))
    res = trunc.score(texts, images)
    assert res.long.tolist() == [False, True, False] and not np.isnan(res.scores).any()
    # truncation keeps the first tokens: the same as the caption cut to 75 BPE tokens
    tok = open_clip.get_tokenizer("tiny-clip-test")
    cut = tok.decode(tok.encode(LONG)[:75])
    same = trunc.score([cut], images[1:2])
    assert not same.long[0]
    np.testing.assert_allclose(same.scores, res.scores[1:2], atol=1e-4)
    skip = ClipScorer(
        ClipScoreConfig(model=str(config), pretrained=str(ckpt), long_captions="skip")
    )
    res2 = skip.score(texts, images)
    assert np.isnan(res2.scores[1]) and res2.long[1]
    np.testing.assert_allclose(res2.scores[[0, 2]], res.scores[[0, 2]], atol=1e-4)
    acc = ClipScoreAccumulator(skip.config, skip.context_length)
    acc.update("s", res2)
    summary = acc.compute()
    assert summary["pooled"]["captions_scored"] == 2
    assert summary["pooled"]["long_captions"] == 1 and summary["pooled"]["skipped_long"] == 1
    assert summary["context_length"] == 77 and summary["weight"] == 100.0


def test_transformers_clip_folder(hf_clip_model) -> None:
    import torch
    from transformers import AutoModel, AutoProcessor

    scorer = ClipScorer(ClipScoreConfig(model=str(hf_clip_model)))
    assert scorer.config.resolved_library() == "transformers"
    assert scorer.context_length == 8
    texts = [
        "a forest with some fields",
        "a town by a lake",
        "the river and the crop fields of the town",
    ]
    images = _images(3)
    res = scorer.score(texts, images)
    assert res.long.tolist() == [False, False, True]  # 9 words + 2 special tokens > 8
    model, proc = (
        AutoModel.from_pretrained(hf_clip_model),
        AutoProcessor.from_pretrained(hf_clip_model),
    )
    enc = proc.tokenizer(texts, padding=True, truncation=True, max_length=8, return_tensors="pt")
    px = proc.image_processor(images=[Image.fromarray(i) for i in images], return_tensors="pt")
    with torch.no_grad():
        t = model.get_text_features(**enc)
        v = model.get_image_features(**px)
    t = t if hasattr(t, "shape") else t.pooler_output
    v = v if hasattr(v, "shape") else v.pooler_output
    cos = torch.nn.functional.cosine_similarity(t, v).numpy()
    np.testing.assert_allclose(res.scores, 100 * np.maximum(cos, 0), atol=1e-3)


def test_evaluate_captions_with_clipscore(open_clip_model, tmp_path) -> None:
    from groundsynth.caption.run import CaptionRunConfig, caption_dataset
    from groundsynth.evaluate.captions import SCORES_PARQUET, evaluate_captions
    from tests.caption.dataset import make_dataset

    root = make_dataset(tmp_path / "ds", {"train": 4, "val": 2})
    caption_dataset(CaptionRunConfig(dataset=str(root), n=2))
    (root / "val" / "images" / "N40E033_001_003.png").unlink()  # one image gone
    config, ckpt = open_clip_model
    clip = ClipScoreConfig(model=str(config), pretrained=str(ckpt), batch_size=3)
    summary = evaluate_captions(root, tmp_path / "out", clip=clip)
    cs = summary["clipscore"]
    assert cs["pooled"]["captions_scored"] == 10 and cs["pooled"]["missing_image"] == 2
    assert cs["per_stream"]["text_template"]["captions_scored"] == 10
    assert 0 <= cs["pooled"]["mean"] <= 100
    scores = pd.read_parquet(tmp_path / "out" / SCORES_PARQUET)
    assert len(scores) == 12 and scores["clip_score"].notna().sum() == 10
    # the same through a plain image folder
    folder = tmp_path / "imgs"
    folder.mkdir()
    for p in (root / "train" / "images").iterdir():
        (folder / p.name).write_bytes(p.read_bytes())
    again = evaluate_captions(root / "captions" / "train.csv", None, clip=clip, images=folder)
    assert again["clipscore"]["pooled"]["captions_scored"] == 8
    with pytest.raises(InputError, match="needs the images"):
        evaluate_captions(root / "captions" / "train.csv", None, clip=clip)
