"""evaluate synthetic: label fidelity against scikit-learn, and an end-to-end run on a tiny
real + synthetic pair (synthetic = real-like images, some with corrupted maps)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from groundsynth.classes import CLASS_NAMES, COLOURS
from groundsynth.data import contract
from groundsynth.data.composition import class_fractions, integer_percentages
from groundsynth.data.masks import encode_mask_png, encode_rgb_png

torch = pytest.importorskip("torch")
pytest.importorskip("segmentation_models_pytorch")
pytest.importorskip("sklearn")

from groundsynth.benchmark.metrics import metrics_from_confusion  # noqa: E402
from groundsynth.benchmark.model import build_model, save_segmenter  # noqa: E402
from groundsynth.errors import InputError  # noqa: E402
from groundsynth.evaluate.label_fidelity import (  # noqa: E402
    LabelFidelity,
    sample_confusions,
    sample_scores,
)
from groundsynth.evaluate.sample_scores import SCORE_COLUMNS  # noqa: E402
from groundsynth.evaluate.synthetic import evaluate_synthetic  # noqa: E402

SIZE = 32
WORDS = ("trees", "shrubland", "grassland", "cropland", "buildings", "bare land", "water")
#: synthetic samples whose map is corrupted (rotated: same composition, wrong places)
CORRUPTED = (0, 5, 10, 15)


# ----------------------------------------------------------------------------- tiny datasets
def blocky_mask(rng: np.random.Generator, grid: int = 4, classes=None) -> np.ndarray:
    """A SIZE x SIZE mask of grid x grid class blocks (at least 3 classes, so ``classes``
    needs 3 or more), not rotation-symmetric."""
    classes = np.arange(len(CLASS_NAMES)) if classes is None else np.asarray(classes)
    while True:
        low = rng.choice(classes, size=(grid, grid))
        if len(np.unique(low)) >= 3 and not np.array_equal(low, np.rot90(low)):
            break
    rep = SIZE // grid
    return np.kron(low, np.ones((rep, rep), dtype=np.int64)).astype(np.uint8)


def colour_image(mask: np.ndarray, rng: np.random.Generator, noise: float = 6.0) -> np.ndarray:
    """The mask's class colours plus noise: a pixel's colour says its class."""
    img = COLOURS[mask].astype(np.float64) + rng.normal(0, noise, (*mask.shape, 3))
    return np.clip(np.round(img), 0, 255).astype(np.uint8)


def caption_for(mask: np.ndarray, consistent: bool) -> str:
    if not consistent:
        return "A lake among snowy peaks." if (mask != 6).all() else "Dense forest."
    fr = class_fractions(mask)
    return "Land with " + ", ".join(WORDS[k] for k in np.argsort(-fr) if fr[k] >= 0.01) + "."


def write_dataset(
    root: Path,
    samples: list[tuple[str, str, np.ndarray, np.ndarray, str]],
    *,
    captions: dict[str, str] | None = None,
    confidence: dict[str, float] | None = None,
    metadata: bool = True,
) -> Path:
    """Write (split, id, image, mask, origin) samples in the data-contract layout."""
    rows, pct = [], {}
    for split, sid, image, mask, origin in samples:
        for path, data in (
            (contract.image_path(root, split, sid), encode_rgb_png(image)),
            (contract.mask_path(root, split, sid), encode_mask_png(mask)),
        ):
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(data)
        fr = class_fractions(mask)
        row = {c: None for c in contract.METADATA_COLUMNS}
        row.update({"id": sid, "split": split, "origin": origin, "scaling": "test"})
        row.update({f"frac_{n}": float(f) for n, f in zip(CLASS_NAMES, fr)})
        if confidence is not None:
            row["confidence"] = confidence[sid]
        rows.append(row)
        p = {"filename": f"{sid}.png", "split": split}
        p.update(dict(zip(CLASS_NAMES, integer_percentages(fr).tolist())))
        if captions is not None:
            p["template"] = captions[sid]
        pct.setdefault(split, []).append(p)
    if metadata:
        df = pd.DataFrame(rows)
        for c in ("source", "landcover", "crs", "scaling", "origin", "transform"):
            df[c] = df[c].astype("string")
        df.to_parquet(contract.metadata_path(root), index=False)
    for split, table in pct.items():
        df = pd.DataFrame(table)
        csv = contract.percentages_csv(root, split)
        csv.parent.mkdir(parents=True, exist_ok=True)
        df[list(contract.PERCENT_COLUMNS)].to_csv(csv, index=False)
        if captions is not None:
            cap = contract.captions_csv(root, split)
            cap.parent.mkdir(parents=True, exist_ok=True)
            df.to_csv(cap, index=False)
    return root


def make_real(root: Path, n: int = 16, seed: int = 0, **kw) -> Path:
    rng = np.random.default_rng(seed)
    samples = []
    for i in range(n):
        mask = blocky_mask(rng)
        split = "train" if i < n // 2 else "test"
        samples.append((split, f"N40E033_{i:03d}_000", colour_image(mask, rng), mask, "real"))
    return write_dataset(root, samples, **kw)


def make_synthetic(root: Path, n: int = 16, seed: int = 1, classes=None) -> Path:
    """Two generators (ganA, ganB); CORRUPTED samples have a rotated map; odd samples have an
    inconsistent caption; confidence = 1 - i / n."""
    rng = np.random.default_rng(seed)
    samples, captions, confidence = [], {}, {}
    for i in range(n):
        mask = blocky_mask(rng, classes=classes)
        image = colour_image(mask, rng)
        stored = np.ascontiguousarray(np.rot90(mask)) if i in CORRUPTED else mask
        sid = f"{i:06d}"
        samples.append(("synth", sid, image, stored, "ganA" if i % 2 == 0 else "ganB"))
        captions[sid] = caption_for(stored, consistent=i % 2 == 0)
        confidence[sid] = 1.0 - i / n
    return write_dataset(root, samples, captions=captions, confidence=confidence)


class ColourSegmenter(torch.nn.Module):
    """A stand-in for a real-trained segmenter: predicts each pixel's class from its colour
    (exact on these images); a tiny random smp encoder supplies the features."""

    def __init__(self) -> None:
        super().__init__()
        self.inner = build_model("unet", "resnet18", encoder_depth=3, decoder_width=4)
        self.net = self.inner.net  # the feature hook reads net.encoder
        self.register_buffer("colours", torch.tensor(COLOURS, dtype=torch.float32) / 255)

    def forward(self, images):
        self.inner(images)
        diff = images[:, None] - self.colours[None, :, :, None, None]
        return -(diff**2).sum(dim=2)


@pytest.fixture(scope="module")
def pair(tmp_path_factory) -> tuple[Path, Path]:
    base = tmp_path_factory.mktemp("pair")
    return make_real(base / "real"), make_synthetic(base / "synth")


@pytest.fixture(scope="module")
def evaluated(pair, tmp_path_factory) -> tuple[Path, dict]:
    torch.manual_seed(0)
    out = tmp_path_factory.mktemp("eval") / "out"
    summary = evaluate_synthetic(
        pair[0], pair[1], out, model=ColourSegmenter(), umap=False, batch_size=5, device="cpu"
    )
    return out, summary


# ----------------------------------------------------------------------------- label fidelity
def test_sample_scores_equal_benchmark_metrics_and_sklearn():
    from sklearn.metrics import jaccard_score

    rng = np.random.default_rng(0)
    target = rng.integers(0, 4, size=(6, 9, 9))
    preds = np.where(rng.random((6, 9, 9)) < 0.6, target, rng.integers(0, 7, size=(6, 9, 9)))
    cm = sample_confusions(preds, target)
    miou, iou, agreement = sample_scores(cm)
    for k in range(6):
        ref = metrics_from_confusion(cm[k])
        assert miou[k] == pytest.approx(ref["iou"])
        assert agreement[k] == pytest.approx(ref["accuracy"])
        labels = np.union1d(np.unique(target[k]), np.unique(preds[k]))
        sk = jaccard_score(target[k].ravel(), preds[k].ravel(), labels=labels, average="macro")
        assert miou[k] == pytest.approx(sk)
        absent = np.setdiff1d(np.arange(7), labels)
        assert np.isnan(iou[k, absent]).all()
    acc = LabelFidelity()
    acc.update(cm[:4])
    acc.update(cm[4:])
    pooled = metrics_from_confusion(cm.sum(axis=0))
    summary = acc.summary()
    assert summary["pooled"]["miou"] == pytest.approx(pooled["iou"], abs=1e-6)
    assert summary["sample_miou"]["mean"] == pytest.approx(miou.mean(), abs=1e-6)
    # logits are reduced by argmax; identical maps give 1
    logits = torch.nn.functional.one_hot(torch.as_tensor(target), 7).permute(0, 3, 1, 2).float()
    assert sample_scores(sample_confusions(logits, target))[0] == pytest.approx(np.ones(6))
    with pytest.raises(InputError, match="class indices"):
        sample_confusions(preds, target + 7)


# ----------------------------------------------------------------------------- end to end
def test_summary_and_outputs(evaluated):
    out, s = evaluated
    for key in (
        "real",
        "synthetic",
        "generators",
        "composition",
        "label_fidelity",
        "feature_fidelity",
        "inception_fid",
        "projections",
        "captions",
        "throughput",
        "files",
        "notes",
    ):
        assert key in s, key
    assert json.loads((out / "summary.json").read_text()) == s
    assert (out / "config.yaml").is_file() and (out / "manifest.json").is_file()
    assert (out / "evaluate_synthetic.log").is_file()
    assert s["generators"] == ["ganA", "ganB"]
    assert s["real"]["splits"] == ["train", "test"] and s["synthetic"]["splits"] == ["synth"]
    assert s["inception_fid"] == "skipped: no local Inception weights"
    assert any("77 %" in n for n in s["notes"])
    assert s["real"]["samples_through_models"] == 16 and s["synthetic"]["samples"] == 16


def test_per_sample_label_fidelity(evaluated):
    out, s = evaluated
    df = pd.read_parquet(out / "per_sample.parquet")
    assert len(df) == 16 and list(df.columns) == [n for n, _ in SCORE_COLUMNS]
    assert df["miou"].between(0, 1).all() and df["pixel_agreement"].between(0, 1).all()
    corrupted = df["id"].isin([f"{i:06d}" for i in CORRUPTED])
    assert (df.loc[~corrupted, "miou"] == 1.0).all()
    assert (df.loc[corrupted, "miou"] < 0.9).all()
    assert set(df["origin"]) == {"ganA", "ganB"}
    np.testing.assert_allclose(df["confidence"], 1 - df["id"].astype(int) / 16)
    np.testing.assert_allclose(df[[f"frac_{c}" for c in CLASS_NAMES]].sum(axis=1), 1.0)
    lf = s["label_fidelity"]
    assert lf["real_reference"]["sample_miou"]["mean"] == 1.0  # the segmenter is exact on real
    mean = lf["synthetic"]["sample_miou"]["mean"]
    assert mean == pytest.approx(df["miou"].mean(), abs=1e-6) and mean < 1
    assert lf["gap_mean_sample_miou"] == pytest.approx(1 - mean, abs=1e-6)
    assert lf["synthetic"]["sample_miou"]["share_at_least"]["0.9"] == 12 / 16
    assert set(lf["per_generator"]) == {"ganA", "ganB"}
    assert set(lf["synthetic"]["pooled"]["iou_per_class"]) == set(CLASS_NAMES)
    # captions: even samples consistent, odd ones not
    assert (df["caption_consistency"] == (df["id"].astype(int) % 2 == 0)).all()
    assert (df["n_captions"] == 1).all()
    assert s["captions"]["synth"]["captions"] == 16


def test_feature_fidelity_projections_composition(evaluated):
    out, s = evaluated
    ff = s["feature_fidelity"]
    assert ff["synthetic"]["frechet_distance"] >= 0
    assert set(ff["synthetic"]["prdc"]) >= {"precision", "recall", "density", "coverage"}
    assert set(ff["per_generator"]) == {"ganA", "ganB"} and "real_halves" in ff
    assert ff["encoder"]["dimension"] == 128
    # the yardstick: the median over 8 random splits of the real set, each kept
    halves = ff["real_halves"]
    splits = halves["frechet_distance_splits"]
    assert len(splits) == 8 and len(set(splits)) == 8 and min(splits) > 0
    assert halves["frechet_distance"] == pytest.approx(float(np.median(splits)), abs=2e-6)
    proj = s["projections"]
    assert proj["tsne"] == "projection_tsne.png" and (out / "projection_tsne.png").stat().st_size
    assert proj["umap"] == "skipped: disabled"
    sil = proj["silhouette"]
    assert -1 <= sil["overall"] <= 1
    assert set(sil["pairwise"]) == {"real vs ganA", "real vs ganB", "real vs synthetic"}
    assert all(-1 <= v <= 1 for v in sil["pairwise"].values())
    pts = pd.read_parquet(out / "projections.parquet")
    assert set(pts["group"]) == {"real", "ganA", "ganB"} and len(pts) == 32
    assert (out / "composition.png").is_file() and (out / "label_fidelity.png").is_file()
    comp = s["composition"]
    assert 0 <= comp["jsd_pixel_share"] <= 1 and set(comp["per_generator"]) == {"ganA", "ganB"}
    assert len(comp["cooccurrence"]["real"]) == 7


def test_composition_jsd_zero_for_identical_and_positive_for_different(pair, tmp_path):
    real, _ = pair
    same = evaluate_synthetic(real, real, tmp_path / "same", synthetic_splits=("train", "test"))
    assert same["composition"]["jsd_pixel_share"] == 0
    assert all(v == 0 for v in same["composition"]["jsd_per_class"].values())
    assert same["label_fidelity"].startswith("skipped")
    assert same["real"]["composition_source"] == {"metadata": 16}
    # a crop, barren and water only synthetic set, without metadata or tables: from masks
    rng = np.random.default_rng(3)
    masks = [blocky_mask(rng, classes=[3, 5, 6]) for _ in range(6)]
    other = write_dataset(
        tmp_path / "other",
        [("synth", f"{i}", colour_image(m, rng), m, "g") for i, m in enumerate(masks)],
        metadata=False,
    )
    for p in (other / "class_percentages").glob("*.csv"):
        p.unlink()
    diff = evaluate_synthetic(real, other, tmp_path / "diff")
    assert diff["composition"]["jsd_pixel_share"] > 0.1
    assert diff["synthetic"]["composition_source"] == {"masks": 6}
    assert diff["captions"].startswith("skipped")
    df = pd.read_parquet(tmp_path / "diff" / "per_sample.parquet")
    assert len(df) == 6 and df["miou"].isna().all() and df["frac_Water"].notna().all()


SUBSET = {"max_samples": 10, "max_real": 6, "tsne": False, "captions": False}


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    torch.manual_seed(0)
    net = build_model("fpn", "resnet18", encoder_depth=3, decoder_width=4)
    return save_segmenter(tmp_path_factory.mktemp("ckpt") / "seg.pt", net)


@pytest.fixture(scope="module")
def subset_run(pair, checkpoint, tmp_path_factory) -> tuple[Path, dict]:
    import groundsynth.evaluate.projections as projections

    out = tmp_path_factory.mktemp("subset") / "out"
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(projections, "umap_available", lambda: False)
        return out, evaluate_synthetic(*pair, out, model=checkpoint, device="cpu", **SUBSET)


def test_checkpoint_subsets_and_umap_skip(subset_run, checkpoint):
    out, s = subset_run
    df = pd.read_parquet(out / "per_sample.parquet")
    assert len(df) == 10 and df["miou"].between(0, 1).all()
    assert len(pd.read_parquet(out / "per_sample_real.parquet")) == 6
    assert s["real"]["samples"] == 16  # composition over every real sample
    assert s["real"]["samples_through_models"] == 6
    assert s["projections"]["umap"].startswith("skipped: umap-learn is not installed")
    assert s["feature_fidelity"]["encoder"]["checkpoint"] == str(checkpoint)


def _inception_weights(path: Path, aux: bool = False) -> Path:
    torchvision = pytest.importorskip("torchvision")
    net = torchvision.models.inception_v3(weights=None, aux_logits=aux, init_weights=False)
    torch.save(net.state_dict(), path)
    return path


def test_inception_features_from_local_weights(tmp_path):
    from groundsynth.evaluate.inception import InceptionFeatures

    feats = InceptionFeatures(_inception_weights(tmp_path / "aux.pt", aux=True))
    assert feats(torch.rand(1, 3, SIZE, SIZE)).shape == (1, 2048)
    (tmp_path / "bad.pt").write_bytes(b"not torch")
    with pytest.raises(InputError, match="cannot read Inception weights"):
        InceptionFeatures(tmp_path / "bad.pt")
    torch.save({"x": torch.zeros(1)}, tmp_path / "other.pt")
    with pytest.raises(InputError, match="not an inception_v3 state dict"):
        InceptionFeatures(tmp_path / "other.pt")


def _inception_run(pair, tmp_path):
    return evaluate_synthetic(
        *pair,
        tmp_path / "out",
        inception_weights=_inception_weights(tmp_path / "inception.pt"),
        max_samples=3,
        max_real=3,
        captions=False,
        batch_size=3,
    )


def test_inception_fid_wiring(pair, tmp_path, monkeypatch):
    import groundsynth.evaluate.synthetic_summary as summary

    # scipy's sqrtm of 2048 x 2048 takes minutes on 2 cores: the full run is marked slow
    monkeypatch.setattr(summary, "frechet_distance", lambda m1, s1, m2, s2: 1.5)
    s = _inception_run(pair, tmp_path)
    fid = s["inception_fid"]
    assert fid["synthetic"]["frechet_distance"] == 1.5 and fid["real_samples"] == 3
    assert fid["synthetic"]["samples"] == 3 and "mean" in fid["synthetic"]["kid"]
    assert s["label_fidelity"].startswith("skipped")
    assert len(pd.read_parquet(tmp_path / "out" / "per_sample_real.parquet")) == 3


@pytest.mark.slow
def test_inception_fid_full(pair, tmp_path):
    assert _inception_run(pair, tmp_path)["inception_fid"]["synthetic"]["frechet_distance"] >= 0


def test_input_errors(pair, tmp_path):
    real, synth = pair
    with pytest.raises(InputError, match="dataset directory"):
        evaluate_synthetic(real, synth, synth)
    with pytest.raises(InputError, match="no split"):
        evaluate_synthetic(real, synth, tmp_path / "o", real_splits=("nope",))
    with pytest.raises(InputError, match="max_samples"):
        evaluate_synthetic(real, synth, tmp_path / "o", max_samples=0)


@pytest.mark.slow
def test_umap_projection():
    pytest.importorskip("umap")
    from groundsynth.evaluate.projections import project

    x = np.random.default_rng(0).normal(size=(30, 8))
    assert project(x, "umap", seed=0).shape == (30, 2)


def test_cli_help_and_run_equals_api(pair, checkpoint, subset_run, tmp_path):
    from typer.testing import CliRunner

    from groundsynth.cli import app

    runner = CliRunner()
    res = runner.invoke(app, ["evaluate", "synthetic", "--help"], terminal_width=200)
    assert res.exit_code == 0 and "Example" in res.output
    args = ["evaluate", "synthetic", "--real", str(pair[0]), "--synthetic", str(pair[1])]
    opts = ["--model", str(checkpoint), "--max-samples", "10", "--max-real", "6", "--no-tsne"]
    opts += ["--no-umap", "--no-captions", "--device", "cpu", "-j", "0", "--no-progress"]
    res = runner.invoke(app, [*args, *opts, "--out", str(tmp_path / "out")])
    assert res.exit_code == 0, res.output
    assert "label fidelity" in res.output and "Fréchet" in res.output
    cli = json.loads((tmp_path / "out" / "summary.json").read_text())
    for key in ("composition", "label_fidelity", "feature_fidelity"):
        assert cli[key] == subset_run[1][key]  # deterministic, and the CLI is the API
    res = runner.invoke(app, [*args, "--out", str(pair[1]), "--no-progress"])
    assert res.exit_code == 2 and "dataset directory" in res.output
    res = runner.invoke(app, [*args, "--out", str(tmp_path / "dry"), "--dry-run"])
    assert res.exit_code == 0 and "max_real: 5000" in res.output
    assert "- synth" in res.output  # splits resolved


def test_out_holding_another_run_or_other_files_is_refused(pair, tmp_path):
    from groundsynth.errors import OutputConflictError

    real, synth = pair
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "projection_mine.png").write_bytes(b"not ours")
    with pytest.raises(OutputConflictError, match="no config.yaml") as err:
        evaluate_synthetic(real, synth, foreign, captions=False)
    assert str(foreign) in str(err.value)
    assert [p.name for p in foreign.iterdir()] == ["projection_mine.png"]
    other = tmp_path / "other"  # e.g. a built dataset's run folder
    other.mkdir()
    (other / "config.yaml").write_text("imagery: [a.tif]\nlandcover: [b.tif]\nsize: 64\n")
    with pytest.raises(OutputConflictError, match="holds another command's run"):
        evaluate_synthetic(real, synth, other, captions=False)
    assert [p.name for p in other.iterdir()] == ["config.yaml"]
    # the same evaluation may be run again into its own folder; other options may not
    out = tmp_path / "out"
    first = evaluate_synthetic(real, synth, out, captions=False, batch_size=4)
    again = evaluate_synthetic(real, synth, out, captions=False, batch_size=8)
    assert again["composition"] == first["composition"]
    with pytest.raises(OutputConflictError, match=r"options differ: max_samples"):
        evaluate_synthetic(real, synth, out, captions=False, max_samples=3)


def test_different_image_sizes_warn_when_features_are_compared(pair, tmp_path, caplog):
    from tests.generate.datasets import blocky_masks
    from tests.generate.datasets import write_dataset as write_plain

    big = write_plain(tmp_path / "big", blocky_masks(4, 2 * SIZE), split="synth")
    torch.manual_seed(0)
    with caplog.at_level("WARNING", logger="groundsynth.evaluate.synthetic"):
        s = evaluate_synthetic(
            pair[0], big, tmp_path / "out", model=ColourSegmenter(), device="cpu",
            max_real=4, tsne=False, umap=False, captions=False,
        )  # fmt: skip
    warned = [r.getMessage() for r in caplog.records if "image sizes differ" in r.getMessage()]
    assert len(warned) == 1 and "real/train 32x32 px" in warned[0]
    assert "synthetic/synth 64x64 px" in warned[0]
    assert any("image sizes differ" in n for n in s["notes"])
    assert s["feature_fidelity"]["synthetic"]["frechet_distance"] >= 0
    caplog.clear()
    with caplog.at_level("WARNING", logger="groundsynth.evaluate.synthetic"):
        evaluate_synthetic(
            *pair, tmp_path / "same", model=ColourSegmenter(), device="cpu", max_samples=4,
            max_real=4, tsne=False, umap=False, captions=False,
        )  # fmt: skip
    assert not [r for r in caplog.records if "image sizes differ" in r.getMessage()]
