"""CLIP-style dual encoders (open_clip) for the retrieval benchmark: build, embed, save, load.

A :class:`DualEncoderSpec` names the model:

- ``model="tiny"`` — a small open_clip ``CLIP`` built in code (a 2-layer ViT on 8 px patches
  and a 2-layer text transformer, width 64, CLIP's BPE vocabulary), randomly initialised: it
  learns on a laptop CPU at demo scale and is what the tests use;
- any open_clip architecture name (``ViT-B-32``, ``RN50``, ``ViT-B-16`` ...) or a model
  config JSON file (open_clip's format).

``pretrained`` is ``None`` (random initialisation), a local checkpoint (``.pt`` / ``.bin``
loaded with ``weights_only=True``, or ``.safetensors``) — e.g. RemoteCLIP or GeoRSCLIP
weights — or an open_clip pretrained tag (``openai``, ``laion2b_s34b_b79k``), downloaded on
request into open_clip's cache. Fine-tuning starts from it.

Images are fed as the datasets hold them (8-bit RGB), resized to the model's input size with
antialiased bilinear interpolation and normalised with CLIP's mean and standard deviation.
Embeddings are L2-normalised; similarity is their dot product.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from groundsynth._optional import lazy_import
from groundsynth.errors import InputError

torch = lazy_import("torch")

__all__ = [
    "TINY_CONFIG",
    "DualEncoder",
    "DualEncoderSpec",
    "build_dual_encoder",
    "load_dual_encoder",
    "save_dual_encoder",
]

logger = logging.getLogger(__name__)

#: The ``tiny`` model's open_clip config (``image_size`` is set from the spec).
TINY_CONFIG: dict[str, Any] = {
    "embed_dim": 64,
    "vision_cfg": {"image_size": 64, "layers": 2, "width": 64, "head_width": 32, "patch_size": 8},
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 64, "heads": 2, "layers": 2},
}
_MEAN = (0.48145466, 0.4578275, 0.40821073)  # open_clip.constants.OPENAI_DATASET_MEAN
_STD = (0.26862954, 0.26130258, 0.27577711)


@dataclass(frozen=True)
class DualEncoderSpec:
    """Which dual encoder: ``model`` (``tiny``, an open_clip name or a config JSON),
    ``pretrained`` (None, a local file or an open_clip tag) and, for ``tiny``, its input
    ``image_size`` (None: 64) and text ``context_length``."""

    model: str = "tiny"
    pretrained: str | None = None
    image_size: int | None = None
    context_length: int = 77

    def __post_init__(self) -> None:
        if self.image_size is not None and self.image_size < 8:
            raise InputError(f"image_size must be >= 8 px, got {self.image_size}")
        if self.context_length < 8:
            raise InputError(f"context_length must be >= 8 tokens, got {self.context_length}")
        if self.model == "tiny" and self.image_size is not None and self.image_size % 8:
            raise InputError(
                f"the tiny model needs image_size divisible by 8, got {self.image_size}"
            )

    def tiny_config(self) -> dict[str, Any]:
        cfg = json.loads(json.dumps(TINY_CONFIG))
        cfg["vision_cfg"]["image_size"] = self.image_size or 64
        cfg["text_cfg"]["context_length"] = self.context_length
        return cfg


class DualEncoder:
    """An open_clip model with its tokenizer and image preprocessing.

    ``model``: the ``torch.nn.Module`` (``encode_image`` / ``encode_text`` /
    ``logit_scale``); ``image_size``: its input size; ``tokenize(texts)`` -> token tensor.
    """

    def __init__(
        self, model: Any, tokenizer: Callable[..., Any], image_size: int, spec: DualEncoderSpec
    ) -> None:
        self.model = model
        self.tokenizer = tokenizer
        self.image_size = int(image_size)
        self.spec = spec

    def tokenize(self, texts: Sequence[str]) -> Any:
        return self.tokenizer(list(texts))

    def preprocess(self, images: Any) -> Any:
        """uint8 ``(B, H, W, 3)`` (numpy or torch) -> normalised float ``(B, 3, S, S)``."""
        x = images if hasattr(images, "dim") else torch.from_numpy(np.array(images, dtype=np.uint8))
        x = x.permute(0, 3, 1, 2).float().div_(255.0)
        if x.shape[-2:] != (self.image_size, self.image_size):
            x = torch.nn.functional.interpolate(
                x, size=(self.image_size, self.image_size), mode="bilinear", antialias=True,
                align_corners=False,
            )  # fmt: skip
        mean = torch.tensor(_MEAN, dtype=x.dtype).view(1, 3, 1, 1)
        std = torch.tensor(_STD, dtype=x.dtype).view(1, 3, 1, 1)
        return (x - mean) / std

    def encode_images(self, pixels: Any) -> Any:
        """Normalised image embeddings of preprocessed pixels."""
        return torch.nn.functional.normalize(self.model.encode_image(pixels).float(), dim=-1)

    def encode_texts(self, tokens: Any) -> Any:
        return torch.nn.functional.normalize(self.model.encode_text(tokens).float(), dim=-1)

    @torch.no_grad()
    def embed_texts(
        self, texts: Iterable[str], batch_size: int = 256, device: str = "cpu"
    ) -> np.ndarray:
        """Normalised float32 embeddings of ``texts`` (in batches, eval mode)."""
        self.model.eval()
        out, batch = [], []
        for t in texts:
            batch.append(t)
            if len(batch) == batch_size:
                out.append(self.encode_texts(self.tokenize(batch).to(device)).cpu().numpy())
                batch = []
        if batch:
            out.append(self.encode_texts(self.tokenize(batch).to(device)).cpu().numpy())
        return np.concatenate(out) if out else np.zeros((0, self.embed_dim), np.float32)

    @property
    def embed_dim(self) -> int:
        proj = getattr(self.model, "text_projection", None)
        return int(proj.shape[-1]) if proj is not None else int(self.model.visual.output_dim)


def _tokenizer(open_clip: Any, name: str, context_length: int) -> Any:
    if name == "tiny":
        return open_clip.tokenizer.SimpleTokenizer(context_length=context_length)
    return open_clip.get_tokenizer(name)


def build_dual_encoder(spec: DualEncoderSpec) -> DualEncoder:
    """The dual encoder of ``spec`` (random init or its pretrained weights; nothing downloaded
    unless ``pretrained`` is an open_clip tag).

    Raises:
        InputError: unknown model, unreadable config or checkpoint, weights that do not fit.
    """
    open_clip = lazy_import("open_clip")
    name = spec.model
    pretrained = spec.pretrained
    if pretrained is not None and os.sep in pretrained and not Path(pretrained).is_file():
        raise InputError(f"{pretrained}: no such checkpoint file (--pretrained)")
    try:
        if name == "tiny":
            cfg = spec.tiny_config()
            model = open_clip.model.CLIP(**cfg)
            if pretrained is not None:
                open_clip.load_checkpoint(model, pretrained, weights_only=True)
            image_size = cfg["vision_cfg"]["image_size"]
        else:
            if name.endswith(".json"):
                if not Path(name).is_file():
                    raise InputError(f"{name}: no such model config file")
                open_clip.add_model_config(Path(name))
                name = Path(name).stem
            if name not in open_clip.list_models():
                raise InputError(
                    f"unknown open_clip model {spec.model!r} (see open_clip.list_models())"
                )
            model = open_clip.create_model(
                name, pretrained=pretrained, force_image_size=spec.image_size
            )
            size = model.visual.image_size
            image_size = size[0] if isinstance(size, (tuple, list)) else size
    except InputError:
        raise
    except (RuntimeError, ValueError, OSError, KeyError) as exc:
        raise InputError(
            f"cannot build dual encoder {spec.model!r} (pretrained={pretrained!r}): {exc}"
        ) from None
    return DualEncoder(model, _tokenizer(open_clip, name, spec.context_length), image_size, spec)


def save_dual_encoder(
    path: str | os.PathLike[str], encoder: DualEncoder, info: dict[str, Any]
) -> None:
    """Save weights and spec atomically (a plain dict of tensors; load with weights_only)."""
    from groundsynth.io import atomic_path

    state = {k: v.detach().cpu() for k, v in encoder.model.state_dict().items()}
    with atomic_path(path) as tmp:
        torch.save({"format": "groundsynth-dual-encoder", "spec": asdict(encoder.spec), "info": info,
                "state_dict": state}, tmp)  # fmt: skip


def load_dual_encoder(path: str | os.PathLike[str]) -> tuple[DualEncoder, dict[str, Any]]:
    """A dual encoder saved by :func:`save_dual_encoder` and its info (``weights_only=True``)."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: dual encoder checkpoint not found")
    try:
        blob = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - torch raises many types on bad files
        raise InputError(
            f"{path}: not a dual encoder checkpoint ({type(exc).__name__}: {exc})"
        ) from exc
    if not isinstance(blob, dict) or not {"spec", "state_dict"} <= set(blob):
        raise InputError(f"{path}: not a dual encoder checkpoint (no spec / state_dict)")
    try:
        spec = DualEncoderSpec(**{**blob["spec"], "pretrained": None})
    except TypeError as exc:
        raise InputError(f"{path}: not a dual encoder checkpoint ({exc})") from None
    encoder = build_dual_encoder(spec)
    encoder.model.load_state_dict(blob["state_dict"])
    encoder.spec = DualEncoderSpec(**blob["spec"])
    return encoder, dict(blob.get("info") or {})
