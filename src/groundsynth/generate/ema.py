"""Exponential moving average (EMA) of a network's weights, used for sampling.

The EMA copy is a frozen deep copy of the network kept in eval mode: after each optimiser
step its floating parameters move towards the live ones
(``ema = decay * ema + (1 - decay) * live``) and its buffers (batch-norm statistics,
spectral-norm vectors) are copied from the live network.

The decay warms up with the step count (:func:`ema_decay_at`): ``min(decay, (1 + t) / (10 + t))``
after ``t`` steps, so at small budgets the average follows the training instead of staying
near the random initialisation (a fixed 0.999 after 200 steps leaves 0.999**200 = 82 % of
the initial weights in the average; with the warm-up, under 1 %).
"""

from __future__ import annotations

import copy
from typing import Any

from groundsynth._optional import lazy_import

__all__ = ["ema_decay_at", "make_ema", "update_ema"]


def make_ema(module: Any) -> Any:
    """A frozen, eval-mode deep copy of ``module``."""
    ema = copy.deepcopy(module)
    ema.eval()
    ema.requires_grad_(False)
    return ema


def ema_decay_at(decay: float, step: int) -> float:
    """The EMA decay to use after ``step`` optimisation steps: ``min(decay, (1 + step) /
    (10 + step))`` (0.1 at the first step, 0.5 at step 8, 0.9 at step 80, 0.99 at step 890)."""
    if step < 0:
        raise ValueError(f"step must be >= 0, got {step}")
    return min(float(decay), (1.0 + step) / (10.0 + step))


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
