"""The learning floor: a per-pixel linear classifier of land cover.

A multinomial logistic regression on six features per pixel -- its RGB values and the mean
RGB of its 3x3 neighbourhood (0..1) -- fitted on a real training split. It is what any
segmenter must beat to have learned more than colour, and it is an independent reader of
synthetic images: a grounded sample whose image the floor reads back as its map carries its
classes' colours where the map puts them, judged by a model that is not the one being judged.

- :func:`pixel_features` -- images -> ``(N, H, W, 6)`` features (pure);
- :func:`sample_pixels` -- a seeded, bounded sample of (features, class) pixels of a split
  (streaming: one image at a time, at most ``max_pixels`` kept by reservoir sampling);
- :class:`PixelFloor` -- the fitted classifier: :meth:`~PixelFloor.fit` (L-BFGS on the
  cross-entropy, scipy), :meth:`~PixelFloor.predict`, :meth:`~PixelFloor.confusion` of a split
  (streaming, one ``(C, C)`` matrix), JSON :meth:`~PixelFloor.save` / :meth:`~PixelFloor.load`;
- :func:`fit_floor` / :func:`score_floor` -- fit on a dataset split, score on others, as the
  learning checks use them.

Numpy and scipy only: usable without torch, deterministic for a seed.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from groundsynth.classes import CLASS_NAMES, IGNORE_INDEX, NUM_CLASSES
from groundsynth.errors import InputError

__all__ = [
    "FEATURES",
    "PixelFloor",
    "fit_floor",
    "pixel_features",
    "sample_pixels",
    "score_floor",
]

#: Names of the per-pixel features, in column order.
FEATURES: tuple[str, ...] = ("r", "g", "b", "r_mean3", "g_mean3", "b_mean3")
FORMAT = "groundsynth-pixel-floor"


def pixel_features(images: np.ndarray) -> np.ndarray:
    """``(N, H, W, 3)`` or ``(H, W, 3)`` uint8 images -> ``(..., H, W, 6)`` float32 features:
    RGB / 255 and the 3x3 mean of RGB / 255 (edges reflected)."""
    from scipy.ndimage import uniform_filter

    x = np.asarray(images)
    if x.ndim not in (3, 4) or x.shape[-1] != 3:
        raise InputError(f"images must be (N, H, W, 3) or (H, W, 3), got shape {x.shape}")
    rgb = x.astype(np.float32) / 255.0
    size = (3, 3, 1) if rgb.ndim == 3 else (1, 3, 3, 1)
    mean = uniform_filter(rgb, size=size, mode="reflect")
    return np.concatenate([rgb, mean], axis=-1)


def sample_pixels(
    samples: Iterable[tuple[np.ndarray, np.ndarray]],
    *,
    pixels_per_image: int = 256,
    max_pixels: int = 200_000,
    seed: int = 0,
) -> tuple[np.ndarray, np.ndarray]:
    """``(features (P, 6), classes (P,))`` from ``(image, mask)`` pairs.

    ``pixels_per_image`` labelled pixels are drawn per image (without replacement; pixels
    whose class is ``IGNORE_INDEX`` -- label nodata -- are never drawn); once
    ``max_pixels`` are held, later draws replace held ones uniformly (reservoir sampling), so
    memory is bounded whatever the number of images and every pixel drawn has the same chance
    of being kept.
    """
    if pixels_per_image < 1 or max_pixels < 1:
        raise InputError("pixels_per_image and max_pixels must be >= 1")
    rng = np.random.default_rng(seed)
    feats = np.zeros((max_pixels, len(FEATURES)), np.float32)
    labels = np.zeros(max_pixels, np.int64)
    held = seen = 0  # pixels held, pixels drawn so far
    for image, mask in samples:
        f = pixel_features(image).reshape(-1, len(FEATURES))
        m = np.asarray(mask).reshape(-1)
        if len(m) != len(f):
            raise InputError(f"image {image.shape[:2]} and mask {np.shape(mask)} sizes differ")
        valid = np.flatnonzero(m != IGNORE_INDEX)
        take = valid[rng.choice(len(valid), size=min(pixels_per_image, len(valid)), replace=False)]
        fill = min(len(take), max_pixels - held)
        if fill:  # room left: keep them all
            feats[held : held + fill], labels[held : held + fill] = f[take[:fill]], m[take[:fill]]
            held += fill
        rest = take[fill:]
        if len(rest):  # full: the k-th pixel seen replaces a random one with chance max/(k+1)
            j = rng.integers(0, seen + fill + 1 + np.arange(len(rest)))
            keep = j < max_pixels
            feats[j[keep]], labels[j[keep]] = f[rest[keep]], m[rest[keep]]
        seen += len(take)
    if held == 0:
        raise InputError("no pixels to fit the pixel floor on (the split is empty)")
    return feats[:held], labels[:held]


@dataclass
class PixelFloor:
    """A fitted per-pixel multinomial logistic regression (see the module docstring).

    Attributes:
        weight: ``(C, F)`` coefficients on standardised features.
        bias: ``(C,)`` intercepts.
        mean, scale: feature standardisation learnt from the training pixels.
        info: JSON-able description (pixels, classes seen, training loss, source).
    """

    weight: np.ndarray
    bias: np.ndarray
    mean: np.ndarray
    scale: np.ndarray
    info: dict[str, Any]

    @classmethod
    def fit(
        cls, features: np.ndarray, labels: np.ndarray, *, l2: float = 1e-4, max_iter: int = 500
    ) -> PixelFloor:
        """Fit on ``(P, F)`` features and ``(P,)`` class indices by L-BFGS on the mean
        cross-entropy plus ``l2 / 2 * |W|²`` (intercepts not penalised)."""
        from scipy.optimize import minimize

        x = np.asarray(features, np.float64)
        y = np.asarray(labels, np.int64)
        if x.ndim != 2 or x.shape[1] != len(FEATURES) or len(y) != len(x) or not len(y):
            raise InputError(f"expected (P, {len(FEATURES)}) features and P labels")
        if y.min() < 0 or y.max() >= NUM_CLASSES:
            raise InputError(f"labels must be class indices 0..{NUM_CLASSES - 1}")
        mean = x.mean(axis=0)
        scale = x.std(axis=0)
        scale[scale < 1e-8] = 1.0
        z = (x - mean) / scale
        c, f, p = NUM_CLASSES, x.shape[1], len(y)
        # classes along the first axis, pixels along the second: the softmax's reductions run
        # over 7 long rows rather than 7-wide ones (3x faster than the (P, C) layout)
        zt = np.ascontiguousarray(z.T)
        pixels = np.arange(p)

        def loss(theta: np.ndarray) -> tuple[float, np.ndarray]:
            w = theta[: c * f].reshape(c, f)
            b = theta[c * f :]
            logits = w @ zt + b[:, None]
            logits -= logits.max(axis=0)
            prob = np.exp(logits)
            total = prob.sum(axis=0)
            value = (np.log(total).sum() - logits[y, pixels].sum()) / p + 0.5 * l2 * (w * w).sum()
            prob /= total
            prob[y, pixels] -= 1.0  # softmax minus one-hot: the gradient of the logits, x P
            prob /= p
            grad = np.concatenate([(prob @ z + l2 * w).ravel(), prob.sum(axis=1)])
            return float(value), grad

        res = minimize(loss, np.zeros(c * f + c), jac=True, method="L-BFGS-B",
                       options={"maxiter": max_iter})  # fmt: skip
        theta = res.x
        info = {
            "format": FORMAT,
            "features": list(FEATURES),
            "pixels": int(p),
            "l2": l2,
            "loss": round(float(res.fun), 6),
            "converged": bool(res.success),
            "class_pixels": np.bincount(y, minlength=c).tolist(),
        }
        return cls(theta[: c * f].reshape(c, f), theta[c * f :], mean, scale, info)

    def logits(self, images: np.ndarray) -> np.ndarray:
        """``(..., H, W, C)`` class scores of uint8 images."""
        z = (pixel_features(images) - self.mean.astype(np.float32)) / self.scale.astype(np.float32)
        return z @ self.weight.T.astype(np.float32) + self.bias.astype(np.float32)

    def predict(self, images: np.ndarray) -> np.ndarray:
        """``(..., H, W)`` uint8 class indices of ``(..., H, W, 3)`` uint8 images."""
        return self.logits(images).argmax(axis=-1).astype(np.uint8)

    def confusion(self, samples: Iterable[tuple[np.ndarray, np.ndarray]]) -> np.ndarray:
        """``(C, C)`` int64 confusion matrix (rows map, columns prediction) over ``(image,
        mask)`` pairs, streamed; pixels whose class is ``IGNORE_INDEX`` are not counted."""
        cm = np.zeros((NUM_CLASSES, NUM_CLASSES), np.int64)
        for image, mask in samples:
            pred = self.predict(image).reshape(-1).astype(np.int64)
            m = np.asarray(mask).reshape(-1).astype(np.int64)
            keep = m != IGNORE_INDEX
            m, pred = m[keep], pred[keep]
            cm += np.bincount(m * NUM_CLASSES + pred, minlength=NUM_CLASSES**2).reshape(
                NUM_CLASSES, NUM_CLASSES
            )
        return cm

    # ------------------------------------------------------------------ persistence
    def to_dict(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "class_names": list(CLASS_NAMES),
            "weight": self.weight.tolist(),
            "bias": self.bias.tolist(),
            "mean": self.mean.tolist(),
            "scale": self.scale.tolist(),
            "info": self.info,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> PixelFloor:
        if data.get("format") != FORMAT:
            raise InputError(f"not a pixel floor (format {data.get('format')!r})")
        return cls(
            np.asarray(data["weight"], np.float64),
            np.asarray(data["bias"], np.float64),
            np.asarray(data["mean"], np.float64),
            np.asarray(data["scale"], np.float64),
            dict(data.get("info") or {}),
        )

    def save(self, path: str | Path) -> Path:
        from groundsynth.io import write_json

        write_json(Path(path), self.to_dict())
        return Path(path)

    @classmethod
    def load(cls, path: str | Path) -> PixelFloor:
        try:
            data = json.loads(Path(path).read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise InputError(f"{path}: cannot read the pixel floor ({exc})") from None
        return cls.from_dict(data)


def _pairs(reader: Any, split: str, limit: int | None = None) -> Iterator[tuple[Any, Any]]:
    for k, sample in enumerate(reader.iter_samples(split)):
        if limit is not None and k >= limit:
            return
        yield sample.image, sample.mask


def _splits(spec: str | Iterable[str]) -> list[str]:
    return [spec] if isinstance(spec, str) else list(spec)


def fit_floor(
    dataset: Any,
    split: str | Iterable[str] = "train",
    *,
    pixels_per_image: int = 256,
    max_pixels: int = 200_000,
    seed: int = 0,
) -> PixelFloor:
    """Fit the floor on the ``split`` (or splits) of ``dataset`` (a directory or a reader)."""
    from groundsynth.data.reader import DatasetReader, open_dataset

    reader = dataset if isinstance(dataset, DatasetReader) else open_dataset(dataset)
    splits = _splits(split)
    pairs = (p for s in splits for p in _pairs(reader, s))
    x, y = sample_pixels(pairs, pixels_per_image=pixels_per_image, max_pixels=max_pixels, seed=seed)
    floor = PixelFloor.fit(x, y)
    floor.info.update({"dataset": str(reader.root), "splits": splits, "seed": seed})
    return floor


def score_floor(
    floor: PixelFloor, dataset: Any, split: str, *, limit: int | None = None
) -> dict[str, Any]:
    """The floor's pooled scores on a split: ``{"iou", "f1", "accuracy", ...}`` (the keys of
    :func:`~groundsynth.benchmark.metrics.metrics_from_confusion`), streamed."""
    from groundsynth.benchmark.metrics import metrics_from_confusion
    from groundsynth.data.reader import DatasetReader, open_dataset

    reader = dataset if isinstance(dataset, DatasetReader) else open_dataset(dataset)
    cm = floor.confusion(_pairs(reader, split, limit))
    return metrics_from_confusion(cm, CLASS_NAMES)
