"""The metrics of one synthetic set in ``experiment metric-utility`` (:data:`METRICS`):
read from an ``evaluate synthetic`` summary, from one pass of the pixel floor over the set
(label fidelity, the weight-free descriptor's FD), and from its template captions
(caption↔image consistency, redundancy, CLIPScore)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from groundsynth.classes import NUM_CLASSES
from groundsynth.data.reader import open_dataset
from groundsynth.errors import InputError

__all__ = [
    "METRICS",
    "caption_metrics",
    "floor_metrics",
    "floor_pass",
    "one_split",
    "summary_metrics",
]

#: metric -> (direction: +1 higher is better, -1 lower is better; label; what it measures)
METRICS: dict[str, tuple[int, str, str]] = {
    "lf_segmenter": (1, "label fidelity (segmenter)",
                     "pooled macro IoU between each sample's map and the real-trained "
                     "segmenter's reading of its image (for pseudo-labelled sets: the segmenter "
                     "agreeing with itself)"),
    "lf_floor": (1, "label fidelity (pixel floor)",
                 "pooled macro IoU between each sample's map and the per-pixel linear floor's "
                 "reading of its image"),
    "fd": (-1, "FD (segmenter features)",
           "Fréchet distance to real A in the real-trained segmenter's encoder features"),
    "kid": (-1, "KID (segmenter features)", "kernel inception distance, same features (x 1000)"),
    "precision": (1, "precision", "share of samples inside the real features' k-NN manifold"),
    "recall": (1, "recall", "share of real images inside the samples' k-NN manifold"),
    "density": (1, "density", "how many real neighbourhoods hold each sample, on average"),
    "coverage": (1, "coverage", "share of real images with a sample among their neighbours"),
    "fd_descriptor": (-1, "FD (weight-free descriptor)",
                      "Fréchet distance to real A on colour, floor-read class shares and texture"),
    "composition_jsd": (-1, "composition JSD",
                        "Jensen-Shannon divergence between the sets' class pixel shares"),
    "caption_consistency": (1, "caption↔image consistency",
                            "share of the set's captions (written from its maps) that tell the "
                            "truth about what the pixel floor reads in its images"),
    "caption_redundancy": (-1, "caption redundancy",
                           "1 - distinct-2 of the set's captions (repeated phrasing)"),
    "clipscore": (1, "CLIPScore",
                  "mean CLIPScore of the set's captions with their images (only with a CLIP: "
                  "--clip-model)"),
}  # fmt: skip


def summary_metrics(summary: dict[str, Any]) -> dict[str, float | None]:
    """The metrics an ``evaluate synthetic`` summary holds (``None`` where it has none)."""

    def get(*keys: str) -> float | None:
        x: Any = summary
        for k in keys:
            x = x.get(k) if isinstance(x, dict) else None
        return float(x) if isinstance(x, (int, float)) else None

    ff = ("feature_fidelity", "synthetic")
    return {
        "lf_segmenter": get("label_fidelity", "synthetic", "pooled", "miou"),
        "fd": get(*ff, "frechet_distance"),
        "kid": get(*ff, "kid", "mean"),
        "precision": get(*ff, "prdc", "precision"),
        "recall": get(*ff, "prdc", "recall"),
        "density": get(*ff, "prdc", "density"),
        "coverage": get(*ff, "prdc", "coverage"),
        "composition_jsd": get("composition", "jsd_pixel_share"),
    }


def floor_pass(floor: Any, dataset: Path) -> tuple[np.ndarray, dict[str, list[float]], np.ndarray]:
    """One pass over a one-split dataset, one floor reading per image: the floor's confusion
    against the maps, the class shares of its reading per image, and the weight-free
    descriptor of every image (its class shares from the same reading)."""
    from groundsynth.classes import CLASS_NAMES
    from groundsynth.evaluate.descriptor import DESCRIPTOR_FEATURES, image_descriptor

    first = DESCRIPTOR_FEATURES.index(f"share_{CLASS_NAMES[0]}")
    reader = open_dataset(dataset)
    split = one_split(reader)
    cm = np.zeros((NUM_CLASSES, NUM_CLASSES), dtype=np.int64)
    shares: dict[str, list[float]] = {}
    rows = []
    for sample in reader.iter_samples(split):
        pred = floor.predict(sample.image[None])[0]
        mask = np.asarray(sample.mask)
        valid = mask < NUM_CLASSES
        cm += np.bincount(
            mask[valid].astype(np.int64) * NUM_CLASSES + pred[valid], minlength=NUM_CLASSES**2
        ).reshape(NUM_CLASSES, NUM_CLASSES)
        share = np.bincount(pred.ravel(), minlength=NUM_CLASSES)[:NUM_CLASSES] / pred.size
        shares[str(sample.id)] = share.tolist()
        row = image_descriptor(sample.image[None])[0]
        row[first : first + NUM_CLASSES] = share
        rows.append(row)
    return cm, shares, np.asarray(rows)


def floor_metrics(cm: np.ndarray, desc: np.ndarray, ref: np.ndarray) -> dict[str, float | None]:
    """Label fidelity read by the pixel floor (macro IoU of its confusion ``cm``), and the
    Fréchet distance between the set's descriptors ``desc`` and the real ones ``ref``."""
    from groundsynth.benchmark.metrics import metrics_from_confusion
    from groundsynth.classes import CLASS_NAMES
    from groundsynth.evaluate.fidelity import frechet_distance

    fd = frechet_distance(desc.mean(0), np.cov(desc, rowvar=False), ref.mean(0),
                          np.cov(ref, rowvar=False))  # fmt: skip
    return {
        "lf_floor": float(metrics_from_confusion(cm, CLASS_NAMES)["iou"]),
        "fd_descriptor": float(fd),
    }


def caption_metrics(
    dataset: Path, shares: dict[str, list[float]], seed: int, clip: Any = None
) -> dict[str, float | None]:
    """The set's template captions (written from its maps): consistent rate against the
    floor's reading of each image, redundancy (1 - distinct-2) and, with ``clip`` (a
    :class:`~groundsynth.evaluate.clipscore.ClipScoreConfig`), their mean CLIPScore."""
    from groundsynth.evaluate.captions import evaluate_captions
    from groundsynth.experiment.multimodal import ensure_captions

    ensure_captions(dataset, seed)
    res = evaluate_captions(dataset, compositions=shares, clip=clip)
    pooled = (res.get("consistency") or {}).get("pooled") or {}
    diversity = (res.get("diversity") or {}).get("pooled") or {}
    rate = pooled.get("consistent_rate")
    d2 = diversity.get("distinct_2")
    out = {
        "caption_consistency": None if rate is None else float(rate),
        "caption_redundancy": None if d2 is None else 1.0 - float(d2),
    }
    if clip is not None:
        mean = ((res.get("clipscore") or {}).get("pooled") or {}).get("mean")
        out["clipscore"] = None if mean is None else float(mean)
    return out


def one_split(reader: Any) -> str:
    splits = [s for s in reader.splits() if reader.len(s)]
    if len(splits) != 1:
        raise InputError(f"{reader.root}: expected one split of synthetic samples, found {splits}")
    return splits[0]
