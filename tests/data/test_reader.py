"""Tests of groundsynth.data.reader and groundsynth.data.torch_dataset on tiny datasets."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from groundsynth.classes import CLASS_NAMES
from groundsynth.data import contract
from groundsynth.data.composition import class_fractions, integer_percentages
from groundsynth.data.masks import colourise, encode_mask_png
from groundsynth.data.reader import DatasetReader, Sample, filename_to_id, open_dataset
from groundsynth.errors import InputError, MaskError

SIZE = 32


def _image(seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (SIZE, SIZE, 3), dtype=np.uint8)


def _mask(seed: int) -> np.ndarray:
    return np.random.default_rng(1000 + seed).integers(0, 7, (SIZE, SIZE), dtype=np.uint8)


def _write(root: Path, split: str, sid: str, seed: int, *, colour: bool = False) -> None:
    for sub in ("images", "masks"):
        (root / split / sub).mkdir(parents=True, exist_ok=True)
    Image.fromarray(_image(seed)).save(root / split / "images" / f"{sid}.png")
    mask_file = root / split / "masks" / f"{sid}.png"
    if colour:
        Image.fromarray(colourise(_mask(seed))).save(mask_file)
    else:
        mask_file.write_bytes(encode_mask_png(_mask(seed)))


def _pct_rows(split: str, ids: dict[str, int], suffix: str = ".png") -> list[dict]:
    rows = []
    for sid, seed in ids.items():
        pct = integer_percentages(class_fractions(_mask(seed)))
        rows.append(
            {"filename": sid + suffix, "split": split, **dict(zip(CLASS_NAMES, pct, strict=True))}
        )
    return rows


GS_IDS = {"train": {"b_002": 0, "a_001": 1, "c_003": 2}, "val": {"v_1": 3, "v_0": 4}}


def make_groundsynth(root: Path) -> Path:
    """A groundsynth-contract dataset: metadata.parquet, palette masks, per-split tables."""
    rows = []
    for split, ids in GS_IDS.items():
        for sid, seed in ids.items():
            _write(root, split, sid, seed)
            fr = class_fractions(_mask(seed))
            rows.append(
                {"id": sid, "split": split, "origin": "real", "row": seed}
                | {f"frac_{n}": float(f) for n, f in zip(CLASS_NAMES, fr, strict=True)}
            )
        pct = pd.DataFrame(_pct_rows(split, ids), columns=list(contract.PERCENT_COLUMNS))
        contract.percentages_csv(root, split).parent.mkdir(exist_ok=True)
        pct.to_csv(contract.percentages_csv(root, split), index=False)
    pd.DataFrame(rows).to_parquet(contract.metadata_path(root), index=False)
    return root


ARAS_IDS = {
    "train": {"N40E033_041_023": 0, "N40E033_000_001": 1},
    "val": {"N39E030_005_005": 2},
    "test": {"N38E027_010_002": 3},
    "synth": {"007": 4, "10": 5, "2": 6},
}


def make_aras(root: Path) -> Path:
    """An ARAS400k-layout dataset: RGB colour masks, one captions CSV for every split."""
    rows = []
    for split, ids in ARAS_IDS.items():
        for sid, seed in ids.items():
            _write(root, split, sid, seed, colour=True)
        # filenames with .png for real splits, without for synth (both occur)
        rows += _pct_rows(split, ids, suffix="" if split == "synth" else ".png")
    df = pd.DataFrame(rows)
    for stream in contract.CAPTION_STREAMS:
        df[stream] = [f"{stream} caption of {f}" for f in df["filename"]]
    df.to_csv(root / "aras400k_captions.csv", index=False)
    return root


@pytest.fixture
def gs(tmp_path: Path) -> DatasetReader:
    return open_dataset(make_groundsynth(tmp_path / "gs"))


@pytest.fixture
def aras(tmp_path: Path) -> DatasetReader:
    return open_dataset(make_aras(tmp_path / "aras"))


def test_detect_layouts(gs: DatasetReader, aras: DatasetReader, tmp_path: Path) -> None:
    assert gs.layout == "groundsynth"
    assert aras.layout == "aras400k"
    (tmp_path / "empty" / "train").mkdir(parents=True)
    with pytest.raises(InputError, match=r"empty.*metadata\.parquet.*images"):
        open_dataset(tmp_path / "empty")
    with pytest.raises(InputError, match="does not exist"):
        open_dataset(tmp_path / "nowhere")


def test_splits_ids_and_lengths(gs: DatasetReader, aras: DatasetReader) -> None:
    assert gs.splits() == ["train", "val"]
    assert gs.ids("train") == ["a_001", "b_002", "c_003"]
    assert len(gs) == 5 and gs.len("val") == 2 and gs.len() == 5
    assert aras.splits() == ["train", "val", "test", "synth"]
    assert aras.ids("synth") == ["007", "10", "2"]
    assert aras.ids("nosuchsplit") == []
    assert len(aras) == 7


def test_ids_come_from_metadata(gs: DatasetReader) -> None:
    # a file pair on disk but not in metadata.parquet is not part of the dataset
    _write(gs.root, "train", "zz_stray", 9)
    assert "zz_stray" not in open_dataset(gs.root).ids("train")


def test_iter_samples_order_and_content(gs: DatasetReader) -> None:
    samples = list(gs.iter_samples())
    assert [(s.split, s.id) for s in samples] == [
        ("train", "a_001"),
        ("train", "b_002"),
        ("train", "c_003"),
        ("val", "v_0"),
        ("val", "v_1"),
    ]
    first = samples[0]
    assert isinstance(first, Sample)
    np.testing.assert_array_equal(first.image, _image(1))
    np.testing.assert_array_equal(first.mask, _mask(1))
    assert first.image.dtype == np.uint8 and first.mask.dtype == np.uint8
    assert first.meta["origin"] == "real" and first.meta["row"] == 1
    assert first.meta["frac_Tree"] == pytest.approx(class_fractions(_mask(1))[0])
    light = next(gs.iter_samples("val", load_image=False, load_mask=False))
    assert light.id == "v_0" and light.image is None and light.mask is None


def test_aras_colour_masks_decode(aras: DatasetReader) -> None:
    np.testing.assert_array_equal(aras.read_mask("train", "N40E033_041_023"), _mask(0))
    np.testing.assert_array_equal(aras.read_image("synth", "10"), _image(5))
    assert [s.id for s in aras.iter_samples("synth")] == ["007", "10", "2"]
    assert next(aras.iter_samples("val")).meta == {}


def test_iteration_is_lazy(gs: DatasetReader) -> None:
    bad = gs.image_path("train", "c_003")
    bad.write_bytes(b"not a png at all")
    it = gs.iter_samples("train")
    assert next(it).id == "a_001"
    assert next(it).id == "b_002"
    with pytest.raises(InputError, match="c_003.png"):
        next(it)


def test_read_errors_name_files(gs: DatasetReader, aras: DatasetReader) -> None:
    with pytest.raises(InputError, match=r"train/images/missing\.png"):
        gs.read_image("train", "missing")
    with pytest.raises(InputError, match=r"masks/missing\.png"):
        gs.read_mask("train", "missing")
    Image.fromarray(np.zeros((4, 4), np.uint16)).save(gs.image_path("train", "a_001"))
    with pytest.raises(InputError, match=r"a_001\.png: image mode 'I;16' is not 8-bit RGB"):
        gs.read_image("train", "a_001")
    colours = colourise(_mask(0))
    colours[0, 0] = (1, 2, 3)
    path = aras.mask_path("train", "N40E033_041_023")
    Image.fromarray(colours).save(path)
    with pytest.raises(MaskError, match=r"N40E033_041_023\.png.*\(1, 2, 3\)"):
        aras.read_mask("train", "N40E033_041_023")


def test_metadata(gs: DatasetReader, aras: DatasetReader) -> None:
    val = gs.metadata("val")
    assert sorted(val["id"]) == ["v_0", "v_1"] and set(val["split"]) == {"val"}
    assert len(gs.metadata()) == 5
    assert list(gs.metadata("train", columns=["id", "origin"]).columns) == ["id", "origin"]
    with pytest.raises(InputError, match="no column"):
        gs.metadata("train", columns=["nope"])
    assert aras.metadata() is None


def test_percentages_per_split_and_combined(gs: DatasetReader, aras: DatasetReader) -> None:
    pct = gs.percentages("train")
    assert list(pct.columns) == ["id", *contract.PERCENT_COLUMNS]
    assert sorted(pct["id"]) == ["a_001", "b_002", "c_003"]
    assert (pct[list(CLASS_NAMES)].sum(axis=1) == 100).all()
    assert gs.percentages("test") is None
    assert gs.captions("train") is None

    synth = aras.percentages("synth")
    assert list(synth["id"]) == ["007", "10", "2"]  # leading zero kept, no .png
    assert list(synth["filename"]) == ["007", "10", "2"]
    expected = integer_percentages(class_fractions(_mask(4)))
    np.testing.assert_array_equal(synth.loc[0, list(CLASS_NAMES)].to_numpy(int), expected)
    train = aras.percentages("train")
    assert sorted(train["id"]) == sorted(ARAS_IDS["train"])
    caps = aras.captions("val")
    assert list(caps["id"]) == ["N39E030_005_005"]
    assert set(contract.CAPTION_STREAMS) <= set(caps.columns)


def test_table_missing_columns_is_named(gs: DatasetReader) -> None:
    path = contract.percentages_csv(gs.root, "val")
    pd.DataFrame({"filename": ["v_0.png"], "Tree": [100]}).to_csv(path, index=False)
    with pytest.raises(InputError, match=r"val\.csv: missing column"):
        gs.percentages("val")


def test_filename_to_id() -> None:
    assert filename_to_id("x/N40E033_041_023.png") == "N40E033_041_023"
    assert filename_to_id("0012") == "0012"


def test_reader_does_not_import_torch() -> None:
    code = "import sys, groundsynth.data.reader; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


# ----------------------------------------------------------------------------- torch dataset


def test_segmentation_dataset_items(gs: DatasetReader) -> None:
    torch = pytest.importorskip("torch")
    from groundsynth.data.torch_dataset import SegmentationDataset

    ds = SegmentationDataset(gs.root, "train")
    assert len(ds) == 3
    item = ds[0]
    assert item["id"] == "a_001"
    assert item["image"].dtype == torch.float32 and item["image"].shape == (3, SIZE, SIZE)
    assert item["mask"].dtype == torch.int64 and item["mask"].shape == (SIZE, SIZE)
    np.testing.assert_allclose(item["image"].numpy(), _image(1).transpose(2, 0, 1) / 255.0)
    np.testing.assert_array_equal(item["mask"].numpy(), _mask(1))


def test_segmentation_dataset_transform_and_ids(aras: DatasetReader) -> None:
    pytest.importorskip("torch")
    from groundsynth.data.torch_dataset import SegmentationDataset

    def flip(image: np.ndarray, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return image[:, ::-1], mask[:, ::-1]

    ds = SegmentationDataset(aras, "synth", transform=flip, ids=["2", "007"])
    assert [ds[i]["id"] for i in range(len(ds))] == ["2", "007"]
    np.testing.assert_array_equal(ds[0]["mask"].numpy(), _mask(6)[:, ::-1])
    with pytest.raises(InputError, match="not in split 'synth'"):
        SegmentationDataset(aras, "synth", ids=["nope"])
    with pytest.raises(InputError, match="no samples"):
        SegmentationDataset(aras, "nosuchsplit")


@pytest.mark.parametrize("num_workers", [0, 2])
def test_segmentation_dataset_dataloader(gs: DatasetReader, num_workers: int) -> None:
    torch = pytest.importorskip("torch")
    from groundsynth.data.torch_dataset import SegmentationDataset

    ds = SegmentationDataset(gs.root, "train")
    loader = torch.utils.data.DataLoader(ds, batch_size=2, num_workers=num_workers)
    batches = list(loader)
    assert [len(b["id"]) for b in batches] == [2, 1]
    assert batches[0]["image"].shape == (2, 3, SIZE, SIZE)
    assert batches[0]["mask"].dtype == torch.int64
    assert [i for b in batches for i in b["id"]] == ["a_001", "b_002", "c_003"]
