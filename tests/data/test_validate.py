"""Tests of groundsynth.data.validate: a clean dataset, then every problem kind."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from groundsynth.classes import CLASS_NAMES
from groundsynth.data import contract
from groundsynth.data.composition import class_fractions, integer_percentages
from groundsynth.data.masks import colourise, encode_mask_png
from groundsynth.data.validate import PROBLEM_KINDS, ValidationReport, validate_dataset
from groundsynth.errors import InputError

SIZE = 32
SPLIT_IDS = {"train": ["t0", "t1", "t2"], "val": ["v0", "v1"]}


def _image(seed: int, size: int = SIZE) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (size, size, 3), dtype=np.uint8)


def _mask(seed: int, size: int = SIZE) -> np.ndarray:
    return np.random.default_rng(1000 + seed).integers(0, 7, (size, size), dtype=np.uint8)


def _pct(seed: int) -> list[int]:
    return integer_percentages(class_fractions(_mask(seed))).tolist()


def make_dataset(root: Path, *, aras: bool = False) -> Path:
    """A clean tiny dataset: groundsynth contract, or ARAS layout with one combined CSV."""
    meta, pct = [], []
    seed = 0
    for split, ids in SPLIT_IDS.items():
        for sid in ids:
            (root / split / "images").mkdir(parents=True, exist_ok=True)
            (root / split / "masks").mkdir(parents=True, exist_ok=True)
            Image.fromarray(_image(seed)).save(root / split / "images" / f"{sid}.png")
            mask_file = root / split / "masks" / f"{sid}.png"
            if aras:
                Image.fromarray(colourise(_mask(seed))).save(mask_file)
            else:
                mask_file.write_bytes(encode_mask_png(_mask(seed)))
            fr = class_fractions(_mask(seed))
            meta.append(
                {"id": sid, "split": split}
                | {f"frac_{n}": float(f) for n, f in zip(CLASS_NAMES, fr, strict=True)}
            )
            pct.append(
                {"filename": f"{sid}.png", "split": split}
                | dict(zip(CLASS_NAMES, _pct(seed), strict=True))
            )
            seed += 1
    df = pd.DataFrame(pct)
    if aras:
        df["text_qwen3-4b"] = "a caption"
        df.to_csv(root / "captions.csv", index=False)
    else:
        pd.DataFrame(meta).to_parquet(contract.metadata_path(root), index=False)
        (root / "class_percentages").mkdir()
        for split, part in df.groupby("split"):
            part.to_csv(contract.percentages_csv(root, split), index=False)
    return root


@pytest.fixture
def gs(tmp_path: Path) -> Path:
    return make_dataset(tmp_path / "gs")


@pytest.fixture
def aras(tmp_path: Path) -> Path:
    return make_dataset(tmp_path / "aras", aras=True)


def _pct_table(root: Path, split: str) -> pd.DataFrame:
    return pd.read_csv(contract.percentages_csv(root, split), dtype={"filename": str})


def test_clean_datasets_are_ok(gs: Path, aras: Path) -> None:
    for root, layout in ((gs, "groundsynth"), (aras, "aras400k")):
        calls: list[tuple[int, int]] = []
        report = validate_dataset(root, progress=lambda d, t, c=calls: c.append((d, t)))
        assert report.ok, report.summary()
        assert report.layout == layout
        assert report.n_samples == {"train": 3, "val": 2}
        assert calls[-1] == (5, 5) and len(calls) == 5
        assert "no problems found" in report.summary()


def test_not_a_dataset(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="not a dataset"):
        validate_dataset(tmp_path)


def test_unpaired_files(gs: Path) -> None:
    (gs / "train" / "masks" / "t0.png").unlink()
    (gs / "val" / "images" / "v1.png").unlink()
    report = validate_dataset(gs)
    assert report.counts == {"unpaired_image": 1, "unpaired_mask": 1}
    kinds = {p.kind: p for p in report.problems}
    assert kinds["unpaired_image"].path == gs / "train" / "images" / "t0.png"
    assert kinds["unpaired_mask"].path == gs / "val" / "masks" / "v1.png"
    assert not report.ok


def test_size_mismatch(gs: Path) -> None:
    # a 16x16 mask whose composition still matches the tables (all Tree)
    small = np.zeros((16, 16), np.uint8)
    (gs / "train" / "masks" / "t1.png").write_bytes(encode_mask_png(small))
    report = validate_dataset(gs, tolerance=100)
    assert report.counts == {"size_mismatch": 1}
    assert "16x16" in report.problems[0].message and "32x32" in report.problems[0].message


def test_unreadable_files(gs: Path) -> None:
    (gs / "train" / "images" / "t0.png").write_bytes(b"garbage")
    data = (gs / "val" / "masks" / "v0.png").read_bytes()
    (gs / "val" / "masks" / "v0.png").write_bytes(data[: len(data) // 2])
    good = (gs / "val" / "images" / "v1.png").read_bytes()
    (gs / "val" / "images" / "v1.png").write_bytes(good[:60] + bytes([good[60] ^ 255]) + good[61:])
    report = validate_dataset(gs)
    assert report.counts == {"unreadable": 3}
    assert {p.path.name for p in report.problems} == {"t0.png", "v0.png", "v1.png"}


def test_bad_image_mode(gs: Path) -> None:
    Image.fromarray(_image(0)[..., 0]).save(gs / "train" / "images" / "t0.png")  # greyscale
    report = validate_dataset(gs)
    assert report.counts == {"bad_image": 1}
    assert "'L'" in report.problems[0].message


def test_bad_mask_values_and_colours(gs: Path, aras: Path) -> None:
    values = _mask(0)
    values[0, 0] = 9
    Image.fromarray(values, mode="L").save(gs / "train" / "masks" / "t0.png")
    report = validate_dataset(gs)
    assert report.counts == {"bad_mask": 1}
    assert "[9]" in report.problems[0].message

    colours = colourise(_mask(0))
    colours[3, 4] = (12, 34, 56)
    Image.fromarray(colours).save(aras / "train" / "masks" / "t0.png")
    report = validate_dataset(aras)
    assert report.counts == {"bad_mask": 1}
    assert "(12, 34, 56)" in report.problems[0].message


def test_metadata_rows_and_files(gs: Path) -> None:
    meta = pd.read_parquet(contract.metadata_path(gs))
    ghost = meta.iloc[[0]].assign(id="ghost")
    dup = meta.iloc[[1]]
    meta = pd.concat([meta[meta["id"] != "v1"], ghost, dup], ignore_index=True)
    meta.to_parquet(contract.metadata_path(gs), index=False)
    report = validate_dataset(gs)
    assert report.counts == {
        "metadata_without_file": 1,
        "file_without_metadata": 1,
        "duplicate_row": 1,
    }
    messages = {p.kind: p.message for p in report.problems}
    assert "ghost" in messages["metadata_without_file"]
    assert "v1" in messages["file_without_metadata"]
    assert "t1" in messages["duplicate_row"]


def test_table_rows_and_files(gs: Path) -> None:
    train = _pct_table(gs, "train")
    ghost = train.iloc[[0]].assign(filename="ghost.png")
    train = pd.concat([train[train["filename"] != "t2.png"], ghost, train.iloc[[0]]])
    train.to_csv(contract.percentages_csv(gs, "train"), index=False)
    report = validate_dataset(gs)
    assert report.counts == {
        "table_row_without_file": 1,
        "file_without_table_row": 1,
        "duplicate_row": 1,
    }
    assert all(p.path == contract.percentages_csv(gs, "train") for p in report.problems)


def test_percent_sum_and_mismatch(gs: Path) -> None:
    val = _pct_table(gs, "val")
    cols = list(CLASS_NAMES)
    # v0: one point moved between classes -> within tolerance 1, sum still 100
    val.loc[0, cols] = val.loc[0, cols].to_numpy() + np.array([1, -1, 0, 0, 0, 0, 0])
    # v1: five points moved from Tree to Water -> a mismatch
    val.loc[1, "Tree"] -= 5
    val.loc[1, "Water"] += 5
    val.to_csv(contract.percentages_csv(gs, "val"), index=False)
    train = _pct_table(gs, "train")
    train.loc[0, "Tree"] += 1  # sums to 101 (within tolerance of the composition)
    train.to_csv(contract.percentages_csv(gs, "train"), index=False)
    report = validate_dataset(gs)
    assert report.counts == {"percent_sum": 1, "percent_mismatch": 1}
    mismatch = next(p for p in report.problems if p.kind == "percent_mismatch")
    assert "v1" in mismatch.message and "Tree" in mismatch.message and "Water" in mismatch.message
    assert "Grass" not in mismatch.message
    assert validate_dataset(gs, tolerance=5, sum_tolerance=1).ok


def test_metadata_fractions_mismatch(gs: Path) -> None:
    meta = pd.read_parquet(contract.metadata_path(gs))
    meta.loc[0, "frac_Tree"] += 0.1
    meta.loc[0, "frac_Water"] -= 0.1
    meta.to_parquet(contract.metadata_path(gs), index=False)
    report = validate_dataset(gs)
    assert report.counts == {"percent_mismatch": 1}
    assert report.problems[0].path == contract.metadata_path(gs)


def test_aras_combined_table_problems(aras: Path) -> None:
    df = pd.read_csv(aras / "captions.csv", dtype={"filename": str})
    df.loc[df["filename"] == "v0.png", "filename"] = "v0"  # no .png: still matches
    df.loc[df["filename"] == "t1.png", "Crop"] += 3
    df.to_csv(aras / "captions.csv", index=False)
    report = validate_dataset(aras)
    assert report.counts == {"percent_sum": 1, "percent_mismatch": 1}
    assert all(p.path == aras / "captions.csv" for p in report.problems)


def test_bad_tables(gs: Path, aras: Path) -> None:
    contract.percentages_csv(gs, "val").write_text("filename,Tree\nv0.png,100\n")
    contract.metadata_path(gs).write_bytes(b"not parquet")
    report = validate_dataset(gs)
    assert report.counts == {"bad_table": 2}
    paths = {p.path.name for p in report.problems}
    assert paths == {"val.csv", "metadata.parquet"}
    assert report.n_samples == {"train": 3, "val": 2}  # files are still checked

    df = pd.read_csv(aras / "captions.csv")
    df["Tree"] = df["Tree"].astype(object)
    df.loc[0, "Tree"] = "lots"
    df.to_csv(aras / "captions.csv", index=False)
    report = validate_dataset(aras)
    assert report.counts == {"bad_table": 1}  # reported once, not once per split
    assert "captions.csv" in str(report.problems[0].path)


def test_problem_cap_counts_everything(gs: Path) -> None:
    for split, ids in SPLIT_IDS.items():
        for sid in ids:
            (gs / split / "masks" / f"{sid}.png").unlink()
    report = validate_dataset(gs, max_problems=2)
    assert report.counts == {"unpaired_image": 5}
    assert report.n_problems == 5 and len(report.problems) == 2 and report.truncated
    assert "... and 3 more" in report.summary()
    as_dict = json.loads(json.dumps(report.to_dict()))
    assert as_dict["ok"] is False and as_dict["counts"] == {"unpaired_image": 5}


def test_every_kind_is_tested_and_described() -> None:
    tested = {
        "unpaired_image",
        "unpaired_mask",
        "size_mismatch",
        "unreadable",
        "bad_image",
        "bad_mask",
        "metadata_without_file",
        "file_without_metadata",
        "table_row_without_file",
        "file_without_table_row",
        "duplicate_row",
        "percent_sum",
        "percent_mismatch",
        "bad_table",
    }
    assert set(PROBLEM_KINDS) == tested
    report = ValidationReport(Path("."), "groundsynth")
    with pytest.raises(ValueError, match="unknown problem kind"):
        report.add("nonsense", Path("."), "x")
