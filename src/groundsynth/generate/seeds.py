"""Seeds derived from tuples of integers, and the global RNG state of a process.

Generation and training never depend on how much randomness was consumed before: every
random draw comes from a generator seeded by :func:`derive_seed` of what identifies it, e.g.
``(seed, "sample", index)`` for a generated sample or ``(seed, "train", step, rank)`` for a
training step. So results do not change with batch size, resumption or worker count.
The global RNG states are still saved in checkpoints (:func:`rng_state` /
:func:`set_rng_state`) for any third-party code that draws from them.

>>> derive_seed(0, "sample", 3) == derive_seed(0, "sample", 3)
True
>>> derive_seed(0, "sample", 3) != derive_seed(0, "sample", 4)
True
"""

from __future__ import annotations

import hashlib
import random
from typing import Any

import numpy as np

__all__ = ["derive_seed", "numpy_rng", "rng_state", "set_rng_state", "torch_generator"]

_MASK = (1 << 63) - 1


def _key(part: int | str) -> int:
    if isinstance(part, str):
        return int.from_bytes(hashlib.blake2b(part.encode(), digest_size=4).digest(), "little")
    if isinstance(part, (bool, np.bool_)):
        return int(part)
    if isinstance(part, (int, np.integer)) and part >= 0:
        return int(part)
    raise ValueError(f"seed parts must be non-negative integers or strings, got {part!r}")


def derive_seed(*parts: int | str) -> int:
    """A 63-bit seed that depends on every part (numpy's SeedSequence hashing)."""
    entropy = [_key(p) for p in parts]
    return int(np.random.SeedSequence(entropy).generate_state(1, dtype=np.uint64)[0]) & _MASK


def numpy_rng(*parts: int | str) -> np.random.Generator:
    """A numpy generator seeded by :func:`derive_seed` of ``parts``."""
    return np.random.default_rng(derive_seed(*parts))


def torch_generator(device: Any, *parts: int | str) -> Any:
    """A torch generator on ``device`` seeded by :func:`derive_seed` of ``parts``."""
    import torch

    gen = torch.Generator(device=device)
    gen.manual_seed(derive_seed(*parts))
    return gen


def rng_state() -> dict[str, Any]:
    """The global torch (CPU and CUDA), numpy and Python RNG states, as tensors and plain
    values (loadable with ``torch.load(weights_only=True)``)."""
    import torch

    kind, keys, pos, has_gauss, cached = np.random.get_state()  # noqa: NPY002 - the global state
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": {
            "kind": str(kind),
            "keys": torch.from_numpy(np.asarray(keys, dtype=np.int64)),
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "cached_gaussian": float(cached),
        },
        "python": _plain_python_state(random.getstate()),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _plain_python_state(state: Any) -> Any:
    version, internal, gauss = state
    return [int(version), [int(v) for v in internal], gauss]


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore the states saved by :func:`rng_state` (CUDA states only when CUDA is in use)."""
    import torch

    torch.set_rng_state(state["torch"].cpu())
    np_state = state["numpy"]
    np.random.set_state(  # noqa: NPY002 - restoring the global state
        (
            np_state["kind"],
            np_state["keys"].numpy().astype(np.uint32),
            np_state["pos"],
            np_state["has_gauss"],
            np_state["cached_gaussian"],
        )
    )
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    cuda = state.get("cuda")
    if cuda and torch.cuda.is_available() and len(cuda) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all([s.cpu() for s in cuda])
