"""import-samples: external generator folders -> a synthetic dataset without masks."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from groundsynth.data.reader import open_dataset
from groundsynth.errors import InputError, OutputConflictError
from groundsynth.generate.importer import ImportConfig, import_samples


def _folder(root):
    rng = np.random.default_rng(0)
    (root / "seed0").mkdir(parents=True)
    Image.fromarray(rng.integers(0, 255, (40, 60, 3), dtype=np.uint8)).save(
        root / "seed0" / "a.png"
    )
    Image.fromarray(rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)).save(root / "b.JPG")
    Image.fromarray(rng.integers(0, 255, (50, 50), dtype=np.uint8)).save(root / "grey.png")
    Image.fromarray(rng.integers(0, 255, (32, 32, 4), dtype=np.uint8)).save(root / "rgba.png")
    (root / "broken.png").write_bytes(b"\x89PNG not really")
    (root / "notes.txt").write_text("not an image")
    (root / ".hidden.png").write_bytes(b"")
    return root


def test_import_samples_writes_a_synthetic_dataset(tmp_path):
    src = _folder(tmp_path / "sg3")
    out = tmp_path / "ds"
    res = import_samples(ImportConfig(str(src), str(out), name="stylegan3", image_size=32))
    assert res.imported == 4 and list(res.skipped) == ["broken.png"]
    reader = open_dataset(out)
    assert reader.ids("synth") == ["b", "grey", "rgba", "seed0__a"]
    meta = reader.metadata("synth").set_index("id")
    assert (meta["origin"] == "stylegan3").all() and meta["frac_Tree"].isna().all()
    assert meta.loc["seed0__a", "source_file"] == "seed0/a.png"
    assert (meta.loc["seed0__a", "source_width"], meta.loc["seed0__a", "source_height"]) == (60, 40)
    for sid in reader.ids("synth"):
        assert reader.read_image("synth", sid).shape == (32, 32, 3)
    # centre crop: the 60x40 image's central 40x40 square, resized to 32
    src_img = np.asarray(Image.open(src / "seed0" / "a.png"))[:, 10:50]
    want = np.asarray(Image.fromarray(src_img).resize((32, 32), Image.Resampling.LANCZOS))
    assert np.array_equal(reader.read_image("synth", "seed0__a"), want)
    assert res.manifest["outputs"]["skipped_files"]["broken.png"]
    # resumable: a rerun writes nothing new and gives the same tables
    before = (out / "metadata.parquet").read_bytes()
    again = import_samples(ImportConfig(str(src), str(out), name="stylegan3", image_size=32))
    assert (again.imported, again.resumed) == (0, 4)
    assert (out / "metadata.parquet").read_bytes() == before
    with pytest.raises(OutputConflictError, match="options differ: name"):
        import_samples(ImportConfig(str(src), str(out), name="other", image_size=32))


def test_import_keeps_sizes_without_image_size_and_refuses_clashing_ids(tmp_path):
    src = tmp_path / "imgs"
    src.mkdir()
    Image.fromarray(np.zeros((20, 30, 3), dtype=np.uint8)).save(src / "x.png")
    res = import_samples(ImportConfig(str(src), str(tmp_path / "out"), name="gan"))
    assert res.imported == 1
    assert open_dataset(tmp_path / "out").read_image("synth", "x").shape == (20, 30, 3)
    Image.fromarray(np.zeros((20, 30, 3), dtype=np.uint8)).save(src / "x.jpg")
    with pytest.raises(InputError, match="both map to sample id 'x'"):
        import_samples(ImportConfig(str(src), str(tmp_path / "out2"), name="gan"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="no .png"):
        import_samples(ImportConfig(str(tmp_path / "empty"), str(tmp_path / "o3")))
    with pytest.raises(InputError, match="not a folder"):
        import_samples(ImportConfig(str(tmp_path / "missing"), str(tmp_path / "o4")))
