"""The transformers captioner with tiny randomly initialised models built in code."""

from __future__ import annotations

import numpy as np
import pytest

from groundsynth.caption import CaptionJob, caption_jobs, facts_from_mask, get_captioner
from groundsynth.caption.transformers_backend import TransformersCaptioner, TransformersConfig
from groundsynth.errors import InputError

pytest.importorskip("transformers")


@pytest.fixture(scope="module", autouse=True)
def _offline(tmp_path_factory):
    mp = pytest.MonkeyPatch()
    cache = tmp_path_factory.mktemp("hf_cache")
    mp.setenv("HF_HUB_OFFLINE", "1")
    mp.setenv("HF_HOME", str(cache))
    mp.setenv("TRANSFORMERS_VERBOSITY", "error")
    yield
    mp.undo()


@pytest.fixture(scope="module")
def text_model(tmp_path_factory):
    from tests.caption.tiny_models import tiny_causal_lm

    return str(tiny_causal_lm(tmp_path_factory.mktemp("tiny_lm")))


@pytest.fixture(scope="module")
def vlm(tmp_path_factory):
    from tests.caption.tiny_models import tiny_llava

    return str(tiny_llava(tmp_path_factory.mktemp("tiny_vlm")))


def _jobs(k: int, images: bool = True) -> list[CaptionJob]:
    rng = np.random.default_rng(0)
    out = []
    for i in range(k):
        mask = rng.integers(0, 7, (3, 3)).repeat(8, 0).repeat(8, 1).astype(np.uint8)
        image = rng.integers(0, 256, (24, 24, 3), dtype=np.uint8) if images else None
        out.append(CaptionJob(facts_from_mask(mask, f"img{i}"), image, f"img{i}"))
    return out


def test_text_model_batched_equals_unbatched_and_is_deterministic(text_model) -> None:
    cap = get_captioner("transformers", model=text_model, stream="text", max_new_tokens=6)
    assert isinstance(cap, TransformersCaptioner) and not cap.needs_image
    jobs = _jobs(5, images=False)
    batched = caption_jobs(cap, jobs)  # batch_size 8: one padded batch
    assert len(batched) == 5 and all(r.ok and len(r.captions) == 1 for r in batched)
    single = TransformersCaptioner(model=text_model, stream="text", max_new_tokens=6, batch_size=1)
    assert caption_jobs(single, jobs) == batched
    assert caption_jobs(cap, jobs) == batched
    assert cap.device == "cpu" and str(cap._model.dtype) == "torch.float32"  # auto on CPU
    # the prompt: the text template through the chat template, composition included
    prompt = cap.prompt_text(jobs[0].facts)
    assert prompt.startswith("<|user|> ") and prompt.endswith("<|assistant|> ")
    assert "%" in prompt and "<image>" not in prompt


def test_sampling_is_seeded_per_image(text_model) -> None:
    cap = TransformersCaptioner(model=text_model, stream="text", max_new_tokens=6, temperature=1.0)
    jobs = _jobs(3, images=False)
    a = caption_jobs(cap, jobs, n=3, seed=1)
    assert all(r.ok and len(r.captions) == 3 for r in a)
    assert caption_jobs(cap, jobs[1:], n=3, seed=1) == a[1:]  # batch-independent
    assert caption_jobs(cap, jobs, n=3, seed=2) != a
    greedy = TransformersCaptioner(model=text_model, stream="text")
    with pytest.raises(InputError, match="temperature > 0"):
        caption_jobs(greedy, jobs, n=2)


def test_image_streams_pass_the_image_and_text_does_not(vlm, monkeypatch) -> None:
    seen: list = []
    cap = TransformersCaptioner(model=vlm, stream="hybrid", max_new_tokens=6, batch_size=2)
    jobs = _jobs(3)
    cap.load()
    real = cap._processor.__class__.__call__

    def spy(self, *args, **kwargs):
        seen.append(kwargs.get("images"))
        return real(self, *args, **kwargs)

    monkeypatch.setattr(cap._processor.__class__, "__call__", spy)
    hybrid = caption_jobs(cap, jobs)
    assert [len(s) for s in seen] == [2, 1]  # batches of 2, images passed
    assert all(r.ok for r in hybrid)
    assert "<image>" in cap.prompt_text(jobs[0].facts)
    assert (
        caption_jobs(
            TransformersCaptioner(model=vlm, stream="hybrid", max_new_tokens=6, batch_size=1), jobs
        )
        == hybrid
    )
    # another image, same facts: the model sees pixels
    other = [CaptionJob(j.facts, 255 - j.image, j.key) for j in jobs]
    assert caption_jobs(cap, other) != hybrid
    # vision: image, generic prompt without the composition
    vision = TransformersCaptioner(model=vlm, stream="vision", max_new_tokens=6)
    assert "%" not in vision.prompt_text(jobs[0].facts)
    # text with a VLM: no image goes in
    seen.clear()
    text = TransformersCaptioner(model=vlm, stream="text", max_new_tokens=6)
    res = caption_jobs(text, _jobs(2, images=False))
    assert all(r.ok for r in res) and seen and all(s is None for s in seen)
    assert "<image>" not in text.prompt_text(jobs[0].facts)
    # an image stream without an image: that image fails, the others are captioned
    mixed = [jobs[0], CaptionJob(jobs[1].facts, None, "noimg")]
    res = caption_jobs(cap, mixed)
    assert res[0].ok and not res[1].ok and "needs the image" in res[1].error


def test_errors_name_the_model(text_model, tmp_path) -> None:
    with pytest.raises(InputError, match="no vision encoder"):
        TransformersCaptioner(model=text_model, stream="hybrid").load()
    with pytest.raises(InputError, match="cannot load model"):
        TransformersCaptioner(model=str(tmp_path / "nope"), stream="text").load()
    for bad in ({"device": "gpu"}, {"dtype": "int8"}, {"batch_size": 0}, {"stream": "x"}):
        with pytest.raises(InputError):
            TransformersConfig(model="m", **bad)


def test_a_caption_run_with_local_models(text_model, vlm, tmp_path) -> None:
    import pandas as pd

    from groundsynth.caption.run import CaptionRunConfig, StreamSpec, caption_dataset
    from tests.caption.dataset import make_dataset

    root = make_dataset(tmp_path / "ds", {"train": 3})
    specs = (
        StreamSpec.parse(f"text=transformers:{text_model}@text_tiny"),
        StreamSpec.parse(f"hybrid=transformers:{vlm}@hybrid_tiny"),
    )
    res = caption_dataset(
        CaptionRunConfig(str(root), specs, batch_size=2, max_new_tokens=5, device="cpu")
    )
    assert res.failed == 0
    df = pd.read_csv(root / "captions" / "train.csv", keep_default_na=False)
    assert (
        list(df.columns[-2:]) == ["hybrid_tiny", "text_tiny"]
        and (df.iloc[:, -2:] != "").all().all()
    )
    config = (root / "captions" / "run" / "config.yaml").read_text()
    assert "backend: transformers" in config and "batch_size: 2" in config
