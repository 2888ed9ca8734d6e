"""Tiny datasets in the data-contract layout for generator tests: blocky masks and images
whose pixels are the class colours plus noise (so an image's colours say its classes)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from groundsynth.classes import CLASS_NAMES, COLOURS
from groundsynth.data import contract
from groundsynth.data.composition import class_fractions, integer_percentages
from groundsynth.data.masks import encode_mask_png, encode_rgb_png


def blocky_masks(n: int, size: int = 32, seed: int = 0, grid: int = 2) -> list[np.ndarray]:
    """``n`` masks of ``grid`` x ``grid`` class blocks (each mask at least two classes)."""
    rng = np.random.default_rng(seed)
    out = []
    rep = size // grid
    while len(out) < n:
        low = rng.integers(0, len(CLASS_NAMES), size=(grid, grid))
        if len(np.unique(low)) < 2:
            continue
        out.append(np.kron(low, np.ones((rep, rep), dtype=np.int64)).astype(np.uint8))
    return out


def colour_image(mask: np.ndarray, seed: int = 0, noise: float = 8.0) -> np.ndarray:
    """The mask's class colours plus Gaussian noise, as uint8 RGB."""
    rng = np.random.default_rng(seed)
    img = COLOURS[mask].astype(np.float64) + rng.normal(0, noise, (*mask.shape, 3))
    return np.clip(np.round(img), 0, 255).astype(np.uint8)


def write_dataset(
    root: Path,
    masks: list[np.ndarray],
    split: str = "train",
    images: list[np.ndarray] | None = None,
) -> Path:
    """Write images, palette masks, metadata.parquet and class_percentages in ``root``."""
    rows, pct_rows = [], []
    for i, mask in enumerate(masks):
        sid = f"s{i:03d}"
        image = images[i] if images is not None else colour_image(mask, seed=i)
        path = contract.image_path(root, split, sid)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(encode_rgb_png(image))
        mpath = contract.mask_path(root, split, sid)
        mpath.parent.mkdir(parents=True, exist_ok=True)
        mpath.write_bytes(encode_mask_png(mask))
        fr = class_fractions(mask)
        row = {c: None for c in contract.METADATA_COLUMNS}
        row.update({"id": sid, "split": split, "origin": "real", "scaling": "test"})
        row.update({f"frac_{n}": float(f) for n, f in zip(CLASS_NAMES, fr)})
        rows.append(row)
        pct = integer_percentages(fr)
        pct_rows.append({"filename": f"{sid}.png", "split": split, **dict(zip(CLASS_NAMES, pct))})
    df = pd.DataFrame(rows, columns=list(contract.METADATA_COLUMNS))
    for c in ("source", "landcover", "crs", "scaling", "origin"):
        df[c] = df[c].astype("string")
    df.to_parquet(contract.metadata_path(root), index=False)
    csv = contract.percentages_csv(root, split)
    csv.parent.mkdir(parents=True, exist_ok=True)
    pd.DataFrame(pct_rows, columns=list(contract.PERCENT_COLUMNS)).to_csv(csv, index=False)
    return root
