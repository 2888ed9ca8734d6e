"""Segmentation models: an architecture registry over segmentation_models_pytorch, the
:class:`Segmenter` wrapper, segmenter checkpoints and encoder features.

A :class:`Segmenter` takes images scaled to 0..1 (what
:class:`~groundsynth.data.torch_dataset.SegmentationDataset` yields), applies its own input
normalisation, pads to the size the network needs and crops the logits back, so callers never
handle either. Its :attr:`~Segmenter.info` dict (architecture, encoder, classes,
normalisation, and whatever the trainer adds) travels with its checkpoint.

Checkpoints (:func:`save_segmenter` / :func:`load_segmenter`) are one ``.pt`` file holding
``{"format", "version", "info", "state_dict"}`` -- plain containers and tensors only, loaded
with ``torch.load(weights_only=True)`` (no pickled code is ever executed).

Encoder weights: ``encoder_weights=None`` (random initialisation), a name of
:mod:`groundsynth.benchmark.weights` (``imagenet``, ``ssl4eo-s12-rgb-moco-resnet18``, ...;
downloaded once into its cache, checked against the encoder and band count first) or the path
of a local state-dict file (``.pt``/``.pth``/``.bin``/``.safetensors``) of the encoder, loaded by
:mod:`groundsynth.benchmark.encoder_loading`. What
was loaded (name, URL, path, SHA-256) is recorded in ``info["encoder_weights"]``.

>>> model = build_model("unet", "resnet18", encoder_depth=3)       # doctest: +SKIP
>>> save_segmenter("unet.pt", model, {"trained_on": "real"})       # doctest: +SKIP
>>> model, info = load_segmenter("unet.pt")                         # doctest: +SKIP
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any, Literal

from groundsynth._optional import lazy_import
from groundsynth.benchmark.encoder_loading import load_encoder_weights, load_weights
from groundsynth.classes import CLASS_NAMES, NUM_CLASSES
from groundsynth.errors import InputError
from groundsynth.io import atomic_path

torch = lazy_import("torch")
nn = torch.nn
F = torch.nn.functional

__all__ = [
    "ARCHITECTURES",
    "CHECKPOINT_FORMAT",
    "NORMALISATIONS",
    "ModelSpec",
    "Segmenter",
    "build_model",
    "check_encoder",
    "encoder_features",
    "get_architecture",
    "list_architectures",
    "load_encoder_weights",
    "load_segmenter",
    "resolve_device",
    "save_segmenter",
]

logger = logging.getLogger(__name__)

#: Architecture name -> segmentation_models_pytorch class name (the six of the ARAS400k paper).
ARCHITECTURES: dict[str, str] = {
    "unet": "Unet",
    "unetplusplus": "UnetPlusPlus",
    "pan": "PAN",
    "deeplabv3plus": "DeepLabV3Plus",
    "segformer": "Segformer",
    "fpn": "FPN",
}

#: Input normalisation name -> (mean, std) per RGB channel of 0..1 images (``None``: as is).
NORMALISATIONS: dict[str, tuple[tuple[float, ...], tuple[float, ...]] | None] = {
    "imagenet": ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
    "none": None,
}

Normalisation = Literal["imagenet", "none"]

#: ``format`` entry of segmenter checkpoints.
CHECKPOINT_FORMAT = "groundsynth-segmenter"
_CHECKPOINT_VERSION = 1


def list_architectures() -> list[str]:
    """Names of the registered architectures."""
    return list(ARCHITECTURES)


def get_architecture(name: str) -> type:
    """The segmentation_models_pytorch class of architecture ``name``.

    Raises:
        InputError: ``name`` is not registered (the message lists the valid names).
    """
    key = name.strip().lower().replace("-", "").replace("_", "")
    if key not in ARCHITECTURES:
        raise InputError(
            f"unknown architecture {name!r}; valid architectures: {', '.join(ARCHITECTURES)}"
        )
    smp = lazy_import("segmentation_models_pytorch")
    return getattr(smp, ARCHITECTURES[key])


def check_encoder(name: str) -> None:
    """Check that segmentation_models_pytorch knows encoder ``name`` (nothing is built).

    Raises:
        InputError: an unknown name (the message gives a hint, not smp's whole list).
    """
    smp = lazy_import("segmentation_models_pytorch")
    if name.startswith("tu-"):
        known = lazy_import("timm").is_model(name[3:])
    else:  # smp >= 0.5 maps some timm- names onto tu- encoders
        as_timm = getattr(smp.encoders, "is_equivalent_to_timm_universal", None)
        known = name in smp.encoders.encoders or bool(as_timm and as_timm(name))
    if known:
        return
    raise InputError(
        f"unknown encoder {name!r}; see segmentation_models_pytorch's encoder list "
        "(e.g. resnet34, efficientnet-b0, mit_b0); timm encoders as tu-<name> (e.g. tu-resnet18)"
    )


@dataclass(frozen=True)
class ModelSpec:
    """Everything needed to rebuild a segmenter's network (stored in its checkpoint).

    Attributes:
        arch: a key of :data:`ARCHITECTURES`.
        encoder: an encoder name of segmentation_models_pytorch (``resnet34``, ``mit_b0``,
            ``tu-<timm model>``, ...).
        encoder_depth: encoder stages used, 3..5 (5 is smp's default; ``mit_b*`` need 5).
            PAN pools its deepest map three more times, so its inputs are padded to a multiple
            of 8x the encoder's output stride (64 px at depth 3, 128 px at depth 5).
        decoder_width: decoder base width; ``None`` keeps smp's defaults, which equal
            ``decoder_width=16``. Unet/Unet++ get ``16 * 2**k`` channels per stage, PAN
            ``2w``, DeepLabV3+ and Segformer ``16w``, FPN ``16w`` pyramid and ``max(8w, 32)``
            segmentation channels (FPN's group norm needs multiples of 32).
        in_channels: image bands (3 for RGB).
        classes: output classes (7 for the schema).
        normalisation: a key of :data:`NORMALISATIONS`, applied inside the segmenter.
    """

    arch: str
    encoder: str = "resnet34"
    encoder_depth: int = 5
    decoder_width: int | None = None
    in_channels: int = 3
    classes: int = NUM_CLASSES
    normalisation: Normalisation = "imagenet"

    def __post_init__(self) -> None:
        get_architecture(self.arch)  # validates the name
        object.__setattr__(
            self, "arch", self.arch.strip().lower().replace("-", "").replace("_", "")
        )
        if self.encoder_depth not in (3, 4, 5):
            raise InputError(f"encoder_depth must be 3, 4 or 5, got {self.encoder_depth}")
        if self.decoder_width is not None and self.decoder_width < 1:
            raise InputError(f"decoder_width must be >= 1 or None, got {self.decoder_width}")
        if self.in_channels < 1 or self.classes < 1:
            raise InputError(
                f"in_channels and classes must be >= 1, got {self.in_channels}, {self.classes}"
            )
        if self.normalisation not in NORMALISATIONS:
            raise InputError(
                f"unknown normalisation {self.normalisation!r}; valid: {', '.join(NORMALISATIONS)}"
            )
        if self.normalisation == "imagenet" and self.in_channels != 3:
            raise InputError("normalisation 'imagenet' is for 3-band images; use 'none'")
        if self.encoder.startswith("mit_b") and self.encoder_depth != 5:
            raise InputError(f"encoder {self.encoder!r} needs encoder_depth 5")
        check_encoder(self.encoder)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModelSpec:
        """Rebuild from :meth:`to_dict` output; unknown keys raise :class:`InputError`."""
        names = {f.name for f in fields(cls)}
        unknown = set(data).difference(names)
        if unknown:
            raise InputError(f"unknown model spec key(s) {sorted(unknown)}; valid: {sorted(names)}")
        return cls(**data)

    def smp_kwargs(self) -> dict[str, Any]:
        """Keyword arguments of the smp class (without encoder weights)."""
        kw: dict[str, Any] = {
            "encoder_name": self.encoder,
            "encoder_depth": self.encoder_depth,
            "in_channels": self.in_channels,
            "classes": self.classes,
        }
        w = 16 if self.decoder_width is None else self.decoder_width
        d = self.encoder_depth
        if self.arch in ("unet", "unetplusplus"):
            kw["decoder_channels"] = tuple(w * 2 ** (d - 1 - i) for i in range(d))
        elif self.arch == "pan":
            kw["decoder_channels"] = 2 * w
        elif self.arch == "deeplabv3plus":
            kw["decoder_channels"] = 16 * w
        elif self.arch == "segformer":
            kw["decoder_segmentation_channels"] = 16 * w
        elif self.arch == "fpn":
            kw["decoder_pyramid_channels"] = 16 * w
            kw["decoder_segmentation_channels"] = max(32, 8 * w // 32 * 32)
            kw["upsampling"] = 2 ** (d - 3)  # smp's default 4 assumes depth 5
        return kw


class Segmenter(nn.Module):
    """An smp network with its input normalisation, size padding and description.

    ``forward(images)`` takes ``(N, bands, H, W)`` floats in 0..1, any ``H, W``, and returns
    ``(N, classes, H, W)`` logits. :meth:`features` returns pooled deepest encoder features.
    The network's weights and its inputs are kept channels-last (NHWC): the same numbers, and
    a training step of the demo's U-Net runs ~20 % faster on CPU (``benchmarks/bench_segmenter_step.py``;
    on GPUs it is the layout cuDNN prefers under mixed precision).

    Attributes:
        net: the segmentation_models_pytorch model (its ``state_dict`` is the checkpoint's).
        spec: the :class:`ModelSpec` it was built from.
        info: JSON-able description saved with the checkpoint (``model``, ``class_names``, and
            whatever :func:`save_segmenter` was given).
    """

    def __init__(self, net: nn.Module, spec: ModelSpec, info: dict[str, Any] | None = None):
        super().__init__()
        self.net = net.to(memory_format=torch.channels_last)  # loaded weights copy into it
        self.spec = spec
        self.info: dict[str, Any] = {
            "model": spec.to_dict(),
            "class_names": list(CLASS_NAMES) if spec.classes == NUM_CLASSES else None,
            **(info or {}),
        }
        norm = NORMALISATIONS[spec.normalisation]
        mean, std = norm if norm is not None else ((0.0,), (1.0,))
        self.register_buffer("mean", torch.tensor(mean).view(1, -1, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std).view(1, -1, 1, 1), persistent=False)
        stride = getattr(getattr(net, "encoder", None), "output_stride", None)
        multiple = int(stride) if stride else 2**spec.encoder_depth
        if spec.arch == "pan":
            multiple *= 8  # PAN's feature pyramid attention pools the deepest map 3 times
        #: images are padded (replicating edges) to a multiple of this, logits cropped back
        self.size_multiple = multiple

    def _prepare(self, images: torch.Tensor) -> tuple[torch.Tensor, int, int]:
        if images.ndim != 4 or images.shape[1] != self.spec.in_channels:
            raise InputError(
                f"expected images of shape (N, {self.spec.in_channels}, H, W), "
                f"got {tuple(images.shape)}"
            )
        x = (images - self.mean) / self.std
        h, w = x.shape[-2:]
        m = self.size_multiple
        ph, pw = (-h) % m, (-w) % m
        if ph or pw:
            x = F.pad(x, (0, pw, 0, ph), mode="replicate")
        return x.contiguous(memory_format=torch.channels_last), h, w

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x, h, w = self._prepare(images)
        return self.net(x)[..., :h, :w]

    def features(self, images: torch.Tensor) -> torch.Tensor:
        """Global-average-pooled deepest encoder features, ``(N, D)``."""
        x, _, _ = self._prepare(images)
        return self.net.encoder(x)[-1].mean(dim=(-2, -1))


def build_model(
    arch: str,
    encoder: str = "resnet34",
    encoder_weights: str | os.PathLike[str] | None = None,
    in_channels: int = 3,
    classes: int = NUM_CLASSES,
    *,
    encoder_depth: int = 5,
    decoder_width: int | None = None,
    normalisation: Normalisation = "imagenet",
) -> Segmenter:
    """Build a :class:`Segmenter` (see :class:`ModelSpec` for the arguments).

    Args:
        encoder_weights: ``None`` (random initialisation), a name of
            :func:`~groundsynth.benchmark.weights.list_weights` (downloaded once into the
            cache) or a local encoder state-dict file (see :func:`load_encoder_weights`).

    Raises:
        InputError: unknown architecture, bad option, encoder the architecture cannot use,
            unknown weights name, weights made for another encoder or band count, or an
            unusable weights file.
        FetchError: named weights could not be downloaded or failed their checksum.
    """
    spec = ModelSpec(
        arch=arch,
        encoder=encoder,
        encoder_depth=encoder_depth,
        decoder_width=decoder_width,
        in_channels=in_channels,
        classes=classes,
        normalisation=normalisation,
    )
    return build_from_spec(spec, encoder_weights)


def build_from_spec(
    spec: ModelSpec, encoder_weights: str | os.PathLike[str] | None = None
) -> Segmenter:
    """Build a :class:`Segmenter` from a :class:`ModelSpec` (see :func:`build_model`).

    Its ``info["encoder_weights"]`` records the weights loaded (``None``: random init).
    """
    cls = get_architecture(spec.arch)
    try:
        net = cls(encoder_weights=None, **spec.smp_kwargs())
    except (KeyError, ValueError, RuntimeError, TypeError) as exc:
        raise InputError(
            f"cannot build {spec.arch} with encoder {spec.encoder!r} "
            f"(depth {spec.encoder_depth}): {exc}"
        ) from exc
    record = None if encoder_weights is None else load_weights(net, spec, encoder_weights)
    return Segmenter(net, spec, {"encoder_weights": record})


def save_segmenter(
    path: str | os.PathLike[str], model: Segmenter, info: dict[str, Any] | None = None
) -> Path:
    """Atomically write ``model`` (weights + ``model.info`` updated with ``info``) to ``path``.

    Raises:
        InputError: ``model`` is not a :class:`Segmenter` or ``info`` is not JSON-able.
    """
    if not isinstance(model, Segmenter):
        raise InputError(f"save_segmenter needs a Segmenter, got {type(model).__name__}")
    merged = {**model.info, **(info or {}), "model": model.spec.to_dict()}
    try:
        merged = json.loads(json.dumps(merged))
    except (TypeError, ValueError) as exc:
        raise InputError(f"segmenter info must be JSON-able: {exc}") from exc
    state = {k: v.detach().cpu().contiguous() for k, v in model.net.state_dict().items()}
    payload = {
        "format": CHECKPOINT_FORMAT,
        "version": _CHECKPOINT_VERSION,
        "info": merged,
        "state_dict": state,
    }
    path = Path(path)
    with atomic_path(path, suffix=".pt") as tmp:
        torch.save(payload, tmp)
    return path


def load_segmenter(
    path: str | os.PathLike[str], map_location: str | torch.device = "cpu"
) -> tuple[Segmenter, dict[str, Any]]:
    """Load a checkpoint written by :func:`save_segmenter`: ``(model in eval mode, info)``.

    Raises:
        InputError: missing file, not a segmenter checkpoint, or weights that do not fit.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: segmenter checkpoint not found")
    try:
        payload = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # noqa: BLE001 - torch raises many types on bad files
        raise InputError(
            f"{path}: cannot read segmenter checkpoint ({type(exc).__name__}: {exc})"
        ) from exc
    if not isinstance(payload, dict) or payload.get("format") != CHECKPOINT_FORMAT:
        raise InputError(
            f"{path}: not a groundsynth segmenter checkpoint; write one with save_segmenter() "
            "or `groundsynth benchmark segmentation` (each run's segmenter.pt)"
        )
    if payload.get("version", 0) > _CHECKPOINT_VERSION:
        raise InputError(
            f"{path}: checkpoint version {payload.get('version')} is newer than this "
            f"groundsynth reads ({_CHECKPOINT_VERSION}); upgrade groundsynth"
        )
    info = dict(payload["info"])
    spec = ModelSpec.from_dict(dict(info["model"]))
    model = build_from_spec(spec)
    try:
        model.net.load_state_dict(payload["state_dict"])
    except RuntimeError as exc:
        raise InputError(f"{path}: weights do not fit {spec}: {exc}") from exc
    model.info = info
    model.to(map_location)
    return model.eval(), info


def encoder_features(model: Segmenter, images: torch.Tensor) -> torch.Tensor:
    """``(N, D)`` global-average-pooled deepest encoder features of 0..1 ``images``.

    Runs in eval mode without gradients (the model's mode is restored afterwards); images are
    moved to the model's device.
    """
    was_training = model.training
    model.eval()
    try:
        device = next(model.parameters()).device
        with torch.no_grad():
            return model.features(images.to(device))
    finally:
        model.train(was_training)


def resolve_device(device: str = "auto") -> torch.device:
    """``auto`` -> CUDA when available, else Apple MPS when available, else CPU.

    Raises:
        InputError: an explicitly requested device is not available.
    """
    name = device.strip().lower()
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        mps = getattr(torch.backends, "mps", None)
        if mps is not None and mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        dev = torch.device(name)
    except RuntimeError as exc:
        raise InputError(f"unknown device {device!r}; use auto, cpu, cuda or cuda:N") from exc
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise InputError(f"device {device!r} requested but CUDA is not available; use auto or cpu")
    return dev
