"""Exponential moving average (EMA) of a network's weights, used for sampling.

The EMA copy is a frozen deep copy of the network kept in eval mode: after each optimiser
step its floating parameters move towards the live ones
(``ema = decay * ema + (1 - decay) * live``) and its buffers (batch-norm statistics,
spectral-norm vectors) are copied from the live network.
"""

from __future__ import annotations

import copy
from typing import Any

from groundsynth._optional import lazy_import

__all__ = ["make_ema", "update_ema"]


def make_ema(module: Any) -> Any:
    """A frozen, eval-mode deep copy of ``module``."""
    ema = copy.deepcopy(module)
    ema.eval()
    ema.requires_grad_(False)
    return ema


def update_ema(ema: Any, live: Any, decay: float) -> None:
    """Move ``ema``'s parameters towards ``live``'s by ``1 - decay``; copy buffers."""
    torch = lazy_import("torch")
    with torch.no_grad():
        e_params = [p for p in ema.parameters() if p.dtype.is_floating_point]
        l_params = [p for p in live.parameters() if p.dtype.is_floating_point]
        if e_params:
            torch._foreach_lerp_(e_params, [p.detach() for p in l_params], 1.0 - decay)
        for e, lv in zip(ema.buffers(), live.buffers()):
            e.copy_(lv)
