"""Loading encoder weights into a segmenter: local state-dict files (``.pt``/``.pth``/
``.bin``/``.safetensors``, ``weights_only`` loading) and named weights fetched through
:mod:`groundsynth.benchmark.weights`, with the record of what was used."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from groundsynth._optional import lazy_import
from groundsynth.errors import InputError
from groundsynth.runs import file_digest

if TYPE_CHECKING:
    from groundsynth.benchmark.model import ModelSpec

torch = lazy_import("torch")
nn = torch.nn

__all__ = ["load_encoder_weights", "load_weights"]

logger = logging.getLogger(__name__)


def _read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """A state dict from a ``.safetensors`` or torch file (``weights_only`` loading)."""
    if not path.is_file():
        raise InputError(f"{path}: weights file not found")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(path))
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - torch/safetensors raise many types
        raise InputError(f"{path}: cannot read weights ({type(exc).__name__}: {exc})") from exc
    for wrapper in ("state_dict", "model"):  # training checkpoints wrap the weights
        if isinstance(state, dict) and isinstance(state.get(wrapper), dict):
            state = state[wrapper]
            break
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise InputError(f"{path}: not a state dict (a mapping of names to tensors)")
    return state


def load_encoder_weights(net: nn.Module, path: str | os.PathLike[str]) -> None:
    """Load a local encoder state dict into ``net.encoder``.

    Keys are matched by :func:`~groundsynth.benchmark.weights.match_encoder_keys`: they may
    carry a prefix (``encoder.`` of a whole smp model, ``backbone.``, ``module.``) or be a full
    timm/torchvision model's; classifier heads and other keys the encoder lacks are ignored
    (and logged). Every encoder parameter must be found, with its shape, else
    :class:`InputError` names what is missing.
    """
    from groundsynth.benchmark.weights import match_encoder_keys

    path = Path(path)
    state = _read_state_dict(path)
    own = net.encoder.state_dict()
    found = match_encoder_keys(state, own)
    missing = [k for k in own if k not in found]
    bad = [k for k, s in found.items() if tuple(state[s].shape) != tuple(own[k].shape)]
    if missing or bad:
        bands = next(
            (
                f"; it was made for {state[found[k]].shape[1]} input band(s), "
                f"the model has {own[k].shape[1]}"
                for k in bad
                if own[k].ndim == 4 and state[found[k]].shape[0] == own[k].shape[0]
                and state[found[k]].shape[2:] == own[k].shape[2:]
            ),
            "",
        )  # fmt: skip
        raise InputError(
            f"{path}: does not fit encoder {type(net.encoder).__name__}: "
            f"{len(missing)} missing key(s) {missing[:3]}, {len(bad)} shape mismatch(es) "
            f"{bad[:3]}{bands} (the file's keys begin {list(state)[:3]}); "
            "give the state dict of the same encoder (and in_channels)"
        )
    used = set(found.values())
    unused = [k for k in state if k not in used]
    if unused:
        logger.info(
            "%s: ignored %d key(s) the encoder lacks, e.g. %s", path, len(unused), unused[:3]
        )
    net.encoder.load_state_dict({k: state[found[k]] for k in own})


def _normalisation_name(mean: tuple[float, ...], std: tuple[float, ...]) -> str | None:
    """The key of :data:`~groundsynth.benchmark.model.NORMALISATIONS` equal to
    ``mean``/``std``, else ``None``."""
    from groundsynth.benchmark.model import NORMALISATIONS

    for key, value in NORMALISATIONS.items():
        m, s = value if value is not None else ((0.0,), (1.0,))
        if len(m) == 1:
            m, s = m * len(mean), s * len(std)
        if (len(m), len(s)) == (len(mean), len(std)) and all(
            abs(a - b) < 1e-3 for a, b in zip((*m, *s), (*mean, *std), strict=True)
        ):
            return key
    return None


def load_weights(
    net: nn.Module, spec: ModelSpec, weights: str | os.PathLike[str]
) -> dict[str, Any]:
    """Load named or local encoder weights into ``net``; return what was used (JSON-able)."""
    from groundsynth.benchmark.weights import fetch_weights, is_weights_name

    if not is_weights_name(weights):
        path = Path(weights).resolve()
        load_encoder_weights(net, path)
        return {"name": None, "url": None, "path": str(path), "sha256": file_digest(path)}
    fetched = fetch_weights(str(weights), spec.encoder, spec.in_channels)
    load_encoder_weights(net, fetched.path)
    record = fetched.record()
    if fetched.mean is not None and fetched.std is not None:
        expected = _normalisation_name(fetched.mean, fetched.std)
        record["normalisation_expected"] = expected
        if expected != spec.normalisation:
            logger.warning(
                "encoder weights %r were trained on inputs normalised with mean %s, std %s "
                "(%s); this model uses normalisation %r%s",
                fetched.weights.name,
                list(fetched.mean),
                list(fetched.std),
                fetched.weights.inputs,
                spec.normalisation,
                f": pass --normalisation {expected}" if expected else "",
            )
    return record
