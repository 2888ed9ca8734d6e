"""A tiny dataset in the ARAS400k layout for caption-run tests: images and palette masks
(and, for the tests of uncaptioned datasets, metadata and class-percentage tables)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image

from groundsynth.classes import CLASS_NAMES
from groundsynth.data.contract import metadata_schema
from groundsynth.data.masks import encode_mask_png
from tests.caption.masks import random_masks


def make_dataset(root: Path, sizes: dict[str, int] | None = None, px: int = 32) -> Path:
    """``root/<split>/{images,masks}/<id>.png`` with ``sizes[split]`` random samples each."""
    sizes = sizes or {"train": 6, "val": 3}
    rng = np.random.default_rng(1)
    masks = random_masks(sum(sizes.values()), px, seed=3)
    for split, count in sizes.items():
        (root / split / "images").mkdir(parents=True, exist_ok=True)
        (root / split / "masks").mkdir(parents=True, exist_ok=True)
        for i in range(count):
            sid = f"N40E033_{i:03d}_{len(split):03d}"
            image = rng.integers(0, 256, (px, px, 3), dtype=np.uint8)
            Image.fromarray(image).save(root / split / "images" / f"{sid}.png")
            (root / split / "masks" / f"{sid}.png").write_bytes(encode_mask_png(next(masks)))
    return root


def write_dataset_tables(root: Path) -> Path:
    """A dataset directory's own tables, but no ``captions/``: metadata.parquet (with its
    list column ``transform``) and ``class_percentages/train.csv``."""
    schema = metadata_schema()
    row = {f.name: None for f in schema}
    row.update(id="a", split="train", transform=[1.0, 0.0, 0.0, 0.0, -1.0, 0.0])
    root.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pylist([row], schema=schema), root / "metadata.parquet")
    (root / "class_percentages").mkdir()
    pct = pd.DataFrame(
        [["a.png", "train", *([0] * 6), 100]], columns=["filename", "split", *CLASS_NAMES]
    )
    pct.to_csv(root / "class_percentages" / "train.csv", index=False)
    return root
