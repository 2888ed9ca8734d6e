"""CLIPScore of captions against their images, with any CLIP open_clip or transformers loads.

Score of a caption ``c`` of image ``v``: ``weight × max(cos(E_text(c), E_image(v)), 0)``.
The default ``weight`` 100 gives the "100 × cosine" scale of the ARAS400k paper (CLIP
ViT-B/32: NWPU 30.25, RSICD 29.11, UCM 30.18, ARAS400k 29.66); ``weight=2.5`` is Hessel et
al.'s CLIP-S (2021). Scores depend on the CLIP used: compare them only within one model.

**Models** (``library="auto"`` decides from ``model``):

- open_clip: a model name with ``pretrained`` (a tag such as ``openai`` or a checkpoint
  file — RemoteCLIP releases are open_clip checkpoints of ``ViT-B-32`` etc.), an
  ``hf-hub:org/repo`` or ``local-dir:/path`` model, or the path of an open_clip model config
  JSON (registered under its file stem) with ``pretrained`` a checkpoint file;
- transformers: a folder written by ``save_pretrained`` holding ``config.json`` (CLIPModel or
  any model with ``get_text_features``/``get_image_features``), or a hub id with
  ``library="transformers"``; loaded with ``AutoModel`` and ``AutoProcessor``.

**Captions longer than the text encoder's context** (77 tokens for CLIP, start and end
tokens included) are never silently mangled: ``long_captions="truncate"`` (default) keeps
their first tokens (the end token kept, as CLIP's tokenizers do) and flags them;
``"skip"`` leaves them unscored (NaN). Either way their number is reported
(``long_captions`` in the summary, ``clip_long`` per caption).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

from groundsynth._optional import lazy_import
from groundsynth.distributed import check_executor_options
from groundsynth.errors import InputError

__all__ = [
    "ClipScoreAccumulator",
    "ClipScoreConfig",
    "ClipScorer",
    "ClipScores",
    "ImageLocator",
    "clip_score",
]

logger = logging.getLogger(__name__)

Library = Literal["auto", "open_clip", "transformers"]
LongPolicy = Literal["truncate", "skip"]


@dataclass(frozen=True)
class ClipScoreConfig:
    """Which CLIP, the score's scale and the long-caption policy; where it runs.

    ``device`` is resolved where the CLIP runs (on Ray: on each worker). Captions are scored
    in chunks of ``chunk_size`` (:mod:`.clipscore_chunks`): in this process
    (``executor="local"``) or one Ray task per chunk (``executor="ray"``, joining
    ``ray_address`` or starting a local cluster, ``ray_cpus``/``ray_gpus`` reserved per task).
    None of these change the scores.
    """

    model: str
    pretrained: str | None = None
    library: Library = "auto"
    weight: float = 100.0
    long_captions: LongPolicy = "truncate"
    batch_size: int = 64
    device: str = "auto"
    chunk_size: int = 1024
    executor: Literal["local", "ray"] = "local"
    ray_address: str | None = None
    ray_cpus: float = 1.0
    ray_gpus: float = 0.0

    def __post_init__(self) -> None:
        if self.library not in ("auto", "open_clip", "transformers"):
            raise InputError(
                f"unknown CLIP library {self.library!r}; valid: auto, open_clip, transformers"
            )
        if self.long_captions not in ("truncate", "skip"):
            raise InputError(
                f"unknown long-caption policy {self.long_captions!r}; valid: truncate, skip"
            )
        if not (self.weight > 0 and math.isfinite(self.weight)):
            raise InputError(f"weight must be a positive number; got {self.weight}")
        if self.batch_size < 1 or self.chunk_size < 1:
            raise InputError(
                f"batch_size and chunk_size must be >= 1; got {self.batch_size}, {self.chunk_size}"
            )
        check_executor_options(self.executor, self.ray_address, self.ray_cpus, self.ray_gpus)

    def resolved_library(self) -> str:
        if self.library != "auto":
            return self.library
        path = Path(self.model)
        return "transformers" if (path / "config.json").is_file() else "open_clip"


def clip_score(cosine: np.ndarray | float, weight: float = 100.0) -> np.ndarray:
    """``weight × max(cosine, 0)`` (NaN stays NaN)."""
    c = np.asarray(cosine, dtype=np.float64)
    return weight * np.where(np.isnan(c), np.nan, np.maximum(c, 0.0))


@dataclass(frozen=True)
class ClipScores:
    """Scores of a batch (NaN: not scored) and which captions were over the context."""

    scores: np.ndarray
    long: np.ndarray  # bool
    cosine: np.ndarray


class _OpenClip:
    def __init__(self, cfg: ClipScoreConfig, device: str) -> None:
        open_clip = lazy_import("open_clip")
        name = cfg.model
        if name.endswith(".json") and Path(name).is_file():
            open_clip.add_model_config(Path(name))
            name = Path(name).stem
        needs_weights = not name.startswith(("hf-hub:", "local-dir:"))
        if needs_weights and not cfg.pretrained:
            raise InputError(
                f"open_clip model {cfg.model!r} needs pretrained weights: give a tag (e.g. "
                "'openai', 'laion2b_s34b_b79k') or a checkpoint file (e.g. RemoteCLIP-ViT-B-32.pt)"
            )
        try:
            model, _, preprocess = open_clip.create_model_and_transforms(
                name, pretrained=cfg.pretrained, device=device
            )
            self.tokenizer = open_clip.get_tokenizer(name)
        except (RuntimeError, ValueError, OSError, KeyError) as exc:
            raise InputError(
                f"cannot load open_clip model {cfg.model!r} (pretrained={cfg.pretrained!r}): {exc}"
            ) from None
        self.model, self.preprocess, self.device = model.eval(), preprocess, device
        self.context_length = int(getattr(self.tokenizer, "context_length", None) or 77)
        self._simple = isinstance(self.tokenizer, open_clip.tokenizer.SimpleTokenizer)

    def token_counts(self, texts: Sequence[str]) -> list[int]:
        tok = self.tokenizer
        if self._simple:
            return [len(tok.encode(t)) + 2 for t in texts]
        inner = getattr(tok, "tokenizer", None)
        if inner is not None:
            return [len(ids) for ids in inner(list(texts), truncation=False)["input_ids"]]
        tokens = tok(list(texts))  # unknown tokenizer: a full context counts as too long
        full = (tokens[:, -1] != 0).tolist()
        return [self.context_length + int(f) for f in full]

    def encode_text(self, texts: Sequence[str]) -> Any:
        return self.model.encode_text(self.tokenizer(list(texts)).to(self.device))

    def encode_image(self, images: Sequence[Any]) -> Any:
        torch = lazy_import("torch")
        batch = torch.stack([self.preprocess(im) for im in images]).to(self.device)
        return self.model.encode_image(batch)


def _features(out: Any) -> Any:
    """Tensor features from get_*_features (recent transformers return an output object)."""
    return out if hasattr(out, "shape") else out.pooler_output


class _HFClip:
    def __init__(self, cfg: ClipScoreConfig, device: str) -> None:
        tf = lazy_import("transformers")
        try:
            self.model = tf.AutoModel.from_pretrained(cfg.model).to(device).eval()
            processor = tf.AutoProcessor.from_pretrained(cfg.model)
        except (OSError, ValueError) as exc:
            raise InputError(
                f"cannot load CLIP model {cfg.model!r} with transformers: {exc}"
            ) from None
        if not hasattr(self.model, "get_text_features"):
            raise InputError(f"{cfg.model!r} is not a CLIP-like model (no get_text_features)")
        self.tokenizer = processor.tokenizer
        self.images = processor.image_processor
        text_cfg = getattr(self.model.config, "text_config", self.model.config)
        limits = [getattr(text_cfg, "max_position_embeddings", None)]
        limits.append(getattr(self.tokenizer, "model_max_length", None))
        self.context_length = int(min(v for v in limits if v and v < 1_000_000))
        self.device = device

    def token_counts(self, texts: Sequence[str]) -> list[int]:
        return [len(ids) for ids in self.tokenizer(list(texts), truncation=False)["input_ids"]]

    def encode_text(self, texts: Sequence[str]) -> Any:
        enc = self.tokenizer(
            list(texts),
            padding=True,
            truncation=True,
            max_length=self.context_length,
            return_tensors="pt",
        ).to(self.device)
        return _features(self.model.get_text_features(**enc))

    def encode_image(self, images: Sequence[Any]) -> Any:
        px = self.images(images=list(images), return_tensors="pt")["pixel_values"]
        return _features(self.model.get_image_features(pixel_values=px.to(self.device)))


class ClipScorer:
    """Encode captions and images with one CLIP and score them (see the module docstring)."""

    def __init__(self, config: ClipScoreConfig) -> None:
        self.config = config
        self._backend: _OpenClip | _HFClip | None = None

    def load(self) -> None:
        """Load the model (done on first use)."""
        if self._backend is not None:
            return
        from groundsynth.caption.transformers_backend import resolve_device

        device = resolve_device(self.config.device)
        lib = self.config.resolved_library()
        self._backend = (
            _HFClip(self.config, device)
            if lib == "transformers"
            else _OpenClip(self.config, device)
        )
        logger.info("CLIPScore with %s (%s) on %s", self.config.model, lib, device)

    @property
    def context_length(self) -> int:
        self.load()
        return self._backend.context_length  # type: ignore[union-attr]

    def _normed(self, feats: Any) -> np.ndarray:
        torch = lazy_import("torch")
        feats = torch.nn.functional.normalize(feats.float(), dim=-1)
        return feats.cpu().numpy()

    def long_mask(self, texts: Sequence[str]) -> np.ndarray:
        """Which captions exceed the text encoder's context (start/end tokens included)."""
        self.load()
        counts = self._backend.token_counts(texts)  # type: ignore[union-attr]
        return np.array([c > self.context_length for c in counts], dtype=bool)

    def encode_texts(self, texts: Sequence[str]) -> np.ndarray:
        """Unit-norm text embeddings (N, D); long captions truncated."""
        torch = lazy_import("torch")
        self.load()
        out = []
        with torch.inference_mode():
            for i in range(0, len(texts), self.config.batch_size):
                part = texts[i : i + self.config.batch_size]
                out.append(self._normed(self._backend.encode_text(part)))  # type: ignore[union-attr]
        return np.concatenate(out) if out else np.zeros((0, 0), np.float32)

    def encode_images(self, images: Sequence[Any]) -> np.ndarray:
        """Unit-norm image embeddings (N, D) of PIL images or HxWx3 uint8 arrays."""
        from PIL import Image

        torch = lazy_import("torch")
        self.load()
        pil = [
            im if isinstance(im, Image.Image) else Image.fromarray(np.asarray(im)) for im in images
        ]
        out = []
        with torch.inference_mode():
            for i in range(0, len(pil), self.config.batch_size):
                part = pil[i : i + self.config.batch_size]
                out.append(self._normed(self._backend.encode_image(part)))  # type: ignore[union-attr]
        return np.concatenate(out) if out else np.zeros((0, 0), np.float32)

    def score_embeddings(self, texts: Sequence[str], image_embeddings: np.ndarray) -> ClipScores:
        """Scores of ``texts`` against their images' (unit-norm) embeddings, row by row."""
        long = self.long_mask(texts) if texts else np.zeros(0, bool)
        keep = ~long if self.config.long_captions == "skip" else np.ones(len(texts), bool)
        cos = np.full(len(texts), np.nan)
        if keep.any():
            idx = np.flatnonzero(keep)
            emb = self.encode_texts([texts[i] for i in idx])
            cos[idx] = np.einsum("nd,nd->n", emb, image_embeddings[idx])
        return ClipScores(clip_score(cos, self.config.weight), long, cos)

    def score(self, texts: Sequence[str], images: Sequence[Any]) -> ClipScores:
        """Scores of caption ``i`` against image ``i``."""
        if len(texts) != len(images):
            raise InputError(f"got {len(texts)} captions for {len(images)} images")
        return self.score_embeddings(texts, self.encode_images(images))


@dataclass
class _Sums:
    scored: int = 0
    total: float = 0.0
    total_sq: float = 0.0
    long: int = 0
    skipped_long: int = 0
    missing_image: int = 0

    def summary(self) -> dict[str, Any]:
        mean = self.total / self.scored if self.scored else None
        var = self.total_sq / self.scored - mean**2 if self.scored else None
        return {
            "mean": mean,
            "std": math.sqrt(max(var, 0.0)) if var is not None else None,
            "captions_scored": self.scored,
            "long_captions": self.long,
            "skipped_long": self.skipped_long,
            "missing_image": self.missing_image,
        }


@dataclass
class ClipScoreAccumulator:
    """Streaming CLIPScore summary per stream and pooled (sums only)."""

    config: ClipScoreConfig
    context_length: int | None = None
    _streams: dict[str, _Sums] = field(default_factory=dict)

    def _get(self, stream: str) -> _Sums:
        if stream not in self._streams:
            self._streams[stream] = _Sums()
        return self._streams[stream]

    def update(self, stream: str, scores: ClipScores) -> None:
        s = self._get(stream)
        ok = ~np.isnan(scores.scores)
        s.scored += int(ok.sum())
        s.total += float(scores.scores[ok].sum())
        s.total_sq += float((scores.scores[ok] ** 2).sum())
        s.long += int(scores.long.sum())
        s.skipped_long += int((scores.long & ~ok).sum())

    def missing(self, stream: str, count: int = 1) -> None:
        self._get(stream).missing_image += count

    def compute(self) -> dict[str, Any]:
        pooled = _Sums()
        for s in self._streams.values():
            for k in vars(pooled):
                setattr(pooled, k, getattr(pooled, k) + getattr(s, k))
        c = self.config
        return {
            "model": c.model,
            "pretrained": c.pretrained,
            "library": c.resolved_library(),
            "weight": c.weight,
            "formula": f"{c.weight:g} * max(cos(text, image), 0)",
            "long_caption_policy": c.long_captions,
            "context_length": self.context_length,
            "pooled": pooled.summary(),
            "per_stream": {k: v.summary() for k, v in sorted(self._streams.items())},
        }


_IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff")


class ImageLocator:
    """Finds the image file of a caption: in a dataset directory (by split and id) or in a
    folder of images (``<image_id>``, or its stem with a usual image suffix, or
    ``<split>/images/<stem>.png``)."""

    def __init__(self, folder: str | Path) -> None:
        from groundsynth.data.reader import detect_layout, open_dataset

        self.folder = Path(folder)
        self._last: tuple[tuple[str, str | None], Path | None] | None = None
        if not self.folder.is_dir():
            raise InputError(f"image folder not found: {self.folder}")
        try:
            detect_layout(self.folder)
            self.reader: Any = open_dataset(self.folder)
        except InputError:
            self.reader = None

    def find(self, image_id: str, split: str | None = None) -> Path | None:
        """The image file of ``image_id`` (in ``split`` when given), or None."""
        if self._last is not None and self._last[0] == (image_id, split):
            return self._last[1]  # the captions of one image are usually consecutive
        path = self._find(image_id, split)
        self._last = ((image_id, split), path)
        return path

    def _find(self, image_id: str, split: str | None) -> Path | None:
        from groundsynth.data.reader import filename_to_id

        stem = Path(image_id).stem if Path(image_id).suffix.lower() in _IMAGE_SUFFIXES else image_id
        if self.reader is not None:
            sid = filename_to_id(image_id)
            splits = [split] if split else self.reader.splits()
            for s in splits:
                p = self.reader.image_path(s, sid)
                if p.is_file():
                    return p
            return None
        candidates = [self.folder / image_id] + [
            self.folder / f"{stem}{x}" for x in _IMAGE_SUFFIXES
        ]
        if split:
            candidates.append(self.folder / split / "images" / f"{stem}.png")
        return next((p for p in candidates if p.is_file()), None)
