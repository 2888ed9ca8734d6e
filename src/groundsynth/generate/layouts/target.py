"""``target``: layouts chosen and composed to meet a composition target.

Two kinds of target, parsed from small expressions:

* **constraints** (``--target "Shrub>=0.3, Water<=5%"``): ``Class>=x`` / ``Class<=x`` joined by
  commas, ``x`` a fraction (0.3) or a percentage (30%). Each layout is found by rejection
  sampling: candidates are drawn until one meets every constraint (``satisfied`` true), or the
  candidate with the smallest total violation is kept after ``candidates`` tries
  (``satisfied`` false; counted in the manifest).
* **distribution** (``--target-distribution "Shrub=0.3, Barren=0.2"``): the class shares the
  generated set should have. Classes not named share the remaining mass in proportion to
  the source masks' mean composition. Each layout is the candidate closest (L1) to the
  distribution, so the set's mean composition approaches it as closely as the masks allow
  (the manifest reports the share reached).

Candidates are built so that rare classes can be pushed up on purpose: source masks are drawn
with probabilities favouring the wanted classes (their fraction of the class; avoiding
``<=`` classes), and each piece is the best of ``crops`` random crops/transforms for them.
Half of the candidates (``tile_prob``) are 2x2 crop-and-tile mosaics, which can reach
compositions no single real mask has.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, replace
from typing import Literal

import numpy as np

from groundsynth.classes import CLASS_NAMES, NUM_CLASSES, class_index
from groundsynth.data.composition import class_counts, class_fractions
from groundsynth.errors import InputError
from groundsynth.generate.layouts.base import Layout, LayoutStrategy, MaskBank, Piece, cut
from groundsynth.generate.layouts.base import random_piece as _random_piece
from groundsynth.generate.seeds import numpy_rng

__all__ = ["Constraint", "Target", "parse_distribution", "parse_target"]

_ITEM = re.compile(r"^\s*([A-Za-z][A-Za-z _-]*?)\s*(>=|<=|≥|≤|=)\s*([0-9]*\.?[0-9]+)\s*(%?)\s*$")
_EPS = 1e-3


@dataclass(frozen=True)
class Constraint:
    """``fraction of class cls`` ``op`` ``value`` (a fraction in 0..1)."""

    cls: int
    op: Literal[">=", "<="]
    value: float

    def violation(self, fractions: np.ndarray) -> float:
        """How far ``fractions`` is from meeting the constraint (0 when it holds)."""
        f = float(fractions[self.cls])
        return max(0.0, self.value - f) if self.op == ">=" else max(0.0, f - self.value)

    def __str__(self) -> str:
        return f"{CLASS_NAMES[self.cls]}{self.op}{self.value:g}"


def _parse_items(text: str, what: str) -> list[tuple[int, str, float]]:
    items = [s for s in re.split(r"[,;]", text) if s.strip()]
    if not items:
        raise InputError(f"empty {what} {text!r}; e.g. 'Shrub>=0.3, Water<=0.05'")
    out = []
    for item in items:
        m = _ITEM.match(item)
        if not m:
            raise InputError(
                f"cannot read {item.strip()!r} in {what} {text!r}: write Class>=x, Class<=x "
                "(constraints) or Class=x (distribution), x a fraction (0.3) or percent (30%)"
            )
        name, op, value, pct = m.groups()
        try:
            cls = class_index(name)
        except ValueError as exc:
            raise InputError(f"{what} {text!r}: {exc}") from None
        v = float(value) / (100.0 if pct else 1.0)
        if not 0 <= v <= 1:
            raise InputError(
                f"{what} {text!r}: {item.strip()!r} is not a fraction in 0..1 (write 0.3 or 30%)"
            )
        out.append((cls, {"≥": ">=", "≤": "<="}.get(op, op), v))
    return out


def parse_target(text: str) -> tuple[Constraint, ...]:
    """Parse ``"Shrub>=0.3, Water<=5%"`` into constraints; infeasible sets are refused.

    >>> [str(c) for c in parse_target("Shrub>=0.3, Built-up <= 10%")]
    ['Shrub>=0.3', 'Built-up<=0.1']
    """
    constraints = []
    for cls, op, v in _parse_items(text, "target"):
        if op == "=":
            raise InputError(
                f"target {text!r}: use >= or <= (a class share of exactly x is rarely reachable); "
                "for class shares over the whole set use a target distribution"
            )
        constraints.append(Constraint(cls, op, v))  # type: ignore[arg-type]
    lows = {c.cls: c.value for c in constraints if c.op == ">="}
    highs = {c.cls: c.value for c in constraints if c.op == "<="}
    if sum(lows.values()) > 1 + 1e-9:
        raise InputError(f"target {text!r}: the >= fractions sum to more than 1")
    for cls, low in lows.items():
        if cls in highs and highs[cls] < low:
            raise InputError(
                f"target {text!r}: {CLASS_NAMES[cls]} cannot be >= {low} and <= {highs[cls]}"
            )
    return tuple(constraints)


def parse_distribution(text: str, background: np.ndarray | None = None) -> np.ndarray:
    """Parse ``"Shrub=0.3, Barren=20%"`` into a (NUM_CLASSES,) distribution summing to 1.

    Classes not named share ``1 - sum(named)`` in proportion to ``background`` (uniformly
    when ``None`` or all zero).

    >>> parse_distribution("Shrub=0.3, Barren=0.7").round(2).tolist()
    [0.0, 0.3, 0.0, 0.0, 0.0, 0.7, 0.0]
    """
    named: dict[int, float] = {}
    for cls, op, v in _parse_items(text, "target distribution"):
        if op != "=":
            raise InputError(
                f"target distribution {text!r}: write Class=x (use --target for >=, <=)"
            )
        named[cls] = v
    total = sum(named.values())
    if total > 1 + 1e-9:
        raise InputError(f"target distribution {text!r}: the shares sum to {total:g} > 1")
    dist = np.zeros(NUM_CLASSES)
    rest = [c for c in range(NUM_CLASSES) if c not in named]
    if rest and total < 1:
        bg = np.ones(NUM_CLASSES) if background is None else np.asarray(background, float)
        w = bg[rest]
        w = w / w.sum() if w.sum() > 0 else np.full(len(rest), 1 / len(rest))
        dist[rest] = (1 - total) * w
    for cls, v in named.items():
        dist[cls] = v
    return dist / dist.sum()


class Target(LayoutStrategy):
    """Layouts meeting constraints or approaching a distribution; see the module docstring."""

    name = "target"

    def __init__(
        self,
        bank: MaskBank,
        size: int,
        seed: int,
        constraints: tuple[Constraint, ...] = (),
        distribution: np.ndarray | None = None,
        candidates: int = 32,
        crops: int = 4,
        tile_prob: float = 0.5,
        tiles: int = 2,
    ) -> None:
        super().__init__(bank, size, seed)
        if bool(constraints) == (distribution is not None):
            raise InputError("give either target constraints or a target distribution (not both)")
        if candidates < 1 or crops < 1:
            raise InputError(f"candidates and crops must be >= 1, got {candidates}, {crops}")
        if tiles < 1 or size % tiles:
            raise InputError(f"layout size {size} is not divisible into {tiles}x{tiles} tiles")
        self.constraints = constraints
        self.distribution = distribution
        self.candidates, self.crops = candidates, crops
        self.tile_prob, self.tiles = tile_prob, tiles
        if constraints:
            self.gain = np.zeros(NUM_CLASSES)
            for c in constraints:
                self.gain[c.cls] += 1.0 if c.op == ">=" else -1.0

    # ------------------------------------------------------------------ scoring
    def score(self, fractions: np.ndarray) -> float:
        """Total constraint violation, or L1 distance to the distribution (lower is better)."""
        if self.constraints:
            return sum(c.violation(fractions) for c in self.constraints)
        return float(np.abs(fractions - self.distribution).sum())  # type: ignore[operator]

    def _weights(self, gain: np.ndarray) -> np.ndarray:
        """Source-mask probabilities favouring classes with positive gain, avoiding negative."""
        f = self.bank.fractions
        w = _EPS + f @ np.clip(gain, 0, None) if (gain > 0).any() else np.ones(len(f))
        for cls in np.flatnonzero(gain < 0):
            w = w * (1.0 - f[:, cls] + _EPS)
        return w / w.sum()

    def _best_piece(
        self, source: int, size: int, gain: np.ndarray, rng: np.random.Generator
    ) -> Piece:
        best, best_value = None, -math.inf
        for _ in range(self.crops):
            piece = _random_piece(self.bank, source, size, rng)
            value = float(class_counts(cut(self.bank, piece, size)) @ gain)
            if value > best_value:
                best, best_value = piece, value
        return best  # type: ignore[return-value]

    def candidate(self, rng: np.random.Generator) -> Layout:
        """One candidate layout drawn from ``rng`` (biased towards the wanted classes)."""
        if self.constraints:
            gain = self.gain
        else:
            gain = np.zeros(NUM_CLASSES)
            gain[int(rng.choice(NUM_CLASSES, p=self.distribution))] = 1.0
        weights = self._weights(gain)
        n = len(self.bank)
        if self.tiles > 1 and rng.random() < self.tile_prob:
            t = self.size // self.tiles
            sources = rng.choice(n, size=self.tiles**2, p=weights)
            return self.tiled([self._best_piece(int(s), t, gain, rng) for s in sources], self.tiles)
        return self.whole(self._best_piece(int(rng.choice(n, p=weights)), self.size, gain, rng))

    def layout(self, index: int) -> Layout:
        rng = numpy_rng(self.seed, "layout", index)
        best, best_score = None, math.inf
        for _ in range(self.candidates):
            cand = self.candidate(rng)
            s = self.score(class_fractions(cand.mask))
            if self.constraints and s <= 0:
                return replace(cand, satisfied=True)
            if s < best_score:
                best, best_score = cand, s
        return replace(best, satisfied=False if self.constraints else None)  # type: ignore[arg-type]
