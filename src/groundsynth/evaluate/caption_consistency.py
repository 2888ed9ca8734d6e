"""Caption <-> map consistency: does a caption say what the land-cover map says?

For one caption and the class fractions of its map (pure function :func:`score_caption`):

- *mentioned*: classes the caption names without negation (lexicon in
  :mod:`groundsynth.evaluate.caption_lexicon`); *present*: classes with a share of at least
  ``presence`` (default 1 %); *major*: classes with at least ``recall_share`` (default 10 %);
- *hedged*: mentioned classes whose only stated shares may be zero ("no more than 10 %
  water", "less than a third grassland"): an absent hedged class is not claimed, so it
  counts neither as a hallucination nor against precision;
- **mention precision** = |claimed ∩ present| / |claimed|, claimed = mentioned less the
  absent hedged classes (NaN when nothing is claimed);
- **mention recall** = |mentioned ∩ major| / |major|;
- **hallucination**: some claimed class is absent (share below ``presence``);
- **dominant agreement**: the dominant class (largest share; any of tied ones) is named;
- **quantity agreement**: share of the attached quantities that are true — a quantity word
  when the class share lies in its lexicon range, a stated percentage (or range, or bound:
  "more than 70 %" is [70, 100]) when the class percentage is within ``tolerance`` points
  (default 5) of it;
- **negation conflict**: the caption negates a major class ("no water" on a 30 %-water map);
- **consistent**: no hallucination, recall 1, dominant named, every quantity true and no
  negation conflict.

:class:`ConsistencyAccumulator` aggregates per-caption scores per stream and pooled without
keeping them (sums only): means of precision and recall over the captions where they are
defined, rates of the boolean scores, and quantity agreement micro-averaged over quantities.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any, NamedTuple

import numpy as np

from groundsynth.classes import CLASS_NAMES, NUM_CLASSES
from groundsynth.data.composition import check_class_values
from groundsynth.errors import InputError
from groundsynth.evaluate.caption_lexicon import ParsedCaption

__all__ = [
    "PRESENCE_SHARE",
    "RECALL_SHARE",
    "PERCENT_TOLERANCE",
    "CaptionConsistency",
    "ConsistencyAccumulator",
    "ConsistencySettings",
    "score_caption",
]

#: A class counts as present in a map from this share on (a caption may name it).
PRESENCE_SHARE = 0.01
#: Classes with at least this share must be named (mention recall).
RECALL_SHARE = 0.10
#: A stated percentage agrees when within this many percentage points of the map.
PERCENT_TOLERANCE = 5.0


@dataclass(frozen=True)
class ConsistencySettings:
    """Thresholds of the consistency metric (shares are fractions in 0..1)."""

    presence: float = PRESENCE_SHARE
    recall_share: float = RECALL_SHARE
    tolerance: float = PERCENT_TOLERANCE

    def __post_init__(self) -> None:
        if not 0.0 < self.presence <= self.recall_share <= 1.0:
            raise InputError(
                f"need 0 < presence <= recall_share <= 1; got presence={self.presence}, "
                f"recall_share={self.recall_share}"
            )
        if self.tolerance < 0:
            raise InputError(f"tolerance must be >= 0 percentage points; got {self.tolerance}")


class CaptionConsistency(NamedTuple):
    """Consistency scores of one caption against its map."""

    mentioned: tuple[int, ...]
    negated: tuple[int, ...]
    hallucinated: tuple[int, ...]
    precision: float
    recall: float
    hallucination: bool
    dominant_named: bool
    n_quantities: int
    n_quantities_true: int
    negation_conflict: bool
    consistent: bool

    def row(self) -> dict[str, Any]:
        """A flat row for a table (class lists as ';'-joined names)."""
        d = self._asdict()
        for k in ("mentioned", "negated", "hallucinated"):
            d[k] = ";".join(CLASS_NAMES[i] for i in d[k])
        return d


def _check_fractions(fractions: Sequence[float] | np.ndarray) -> list[float]:
    """Validate and normalise 7 class fractions (plain floats: faster than numpy for 7)."""
    f = check_class_values(fractions, "class fractions")
    total = sum(f)
    return [v / total for v in f]


def score_caption(
    parsed: ParsedCaption,
    fractions: Sequence[float] | np.ndarray,
    settings: ConsistencySettings | None = None,
) -> CaptionConsistency:
    """Score one parsed caption against class fractions (length 7, normalised here)."""
    s = settings or ConsistencySettings()
    f = _check_fractions(fractions)
    mentioned = parsed.mentioned
    present = {i for i in range(NUM_CLASSES) if f[i] >= s.presence - 1e-12}
    major = {i for i in range(NUM_CLASSES) if f[i] >= s.recall_share - 1e-12}
    top = max(f)
    dominant = {i for i in range(NUM_CLASSES) if f[i] >= top - 1e-12}
    claimed = mentioned - (parsed.hedged - present)
    halluc = tuple(sorted(claimed - present))
    precision = len(claimed & present) / len(claimed) if claimed else math.nan
    recall = len(mentioned & major) / len(major) if major else math.nan
    n_true = 0
    for q in parsed.quantities:
        share = f[q.cls]
        if q.kind == "percent":
            tol = s.tolerance / 100.0
            ok = q.low - tol - 1e-9 <= share <= q.high + tol + 1e-9
        else:
            ok = q.low - 1e-9 <= share <= q.high + 1e-9
        n_true += ok
    negated = parsed.negated
    conflict = bool(negated & major)
    dominant_named = bool(mentioned & dominant)
    n_q = len(parsed.quantities)
    consistent = (
        not halluc
        and dominant_named
        and (not major or major <= mentioned)
        and n_true == n_q
        and not conflict
    )
    return CaptionConsistency(
        mentioned=tuple(sorted(mentioned)),
        negated=tuple(sorted(negated)),
        hallucinated=halluc,
        precision=precision,
        recall=recall,
        hallucination=bool(halluc),
        dominant_named=dominant_named,
        n_quantities=n_q,
        n_quantities_true=n_true,
        negation_conflict=conflict,
        consistent=consistent,
    )


@dataclass
class _Sums:
    captions: int = 0
    with_mentions: int = 0
    precision: float = 0.0
    with_recall: int = 0
    recall: float = 0.0
    hallucination: int = 0
    dominant_named: int = 0
    quantities: int = 0
    quantities_true: int = 0
    with_quantities: int = 0
    negation_conflict: int = 0
    consistent: int = 0
    mentions: int = 0

    def add(self, c: CaptionConsistency) -> None:
        self.captions += 1
        self.mentions += len(c.mentioned)
        if not math.isnan(c.precision):
            self.with_mentions += 1
            self.precision += c.precision
        if not math.isnan(c.recall):
            self.with_recall += 1
            self.recall += c.recall
        self.hallucination += c.hallucination
        self.dominant_named += c.dominant_named
        self.quantities += c.n_quantities
        self.quantities_true += c.n_quantities_true
        self.with_quantities += c.n_quantities > 0
        self.negation_conflict += c.negation_conflict
        self.consistent += c.consistent

    def merge(self, other: _Sums) -> None:
        for k, v in asdict(other).items():
            setattr(self, k, getattr(self, k) + v)

    def summary(self) -> dict[str, float | int | None]:
        def ratio(a: float, b: int) -> float | None:
            return a / b if b else None

        n = self.captions
        return {
            "captions": n,
            "mention_precision": ratio(self.precision, self.with_mentions),
            "mention_recall": ratio(self.recall, self.with_recall),
            "hallucination_rate": ratio(self.hallucination, n),
            "dominant_agreement": ratio(self.dominant_named, n),
            "quantity_agreement": ratio(self.quantities_true, self.quantities),
            "quantities": self.quantities,
            "captions_with_quantities": self.with_quantities,
            "negation_conflict_rate": ratio(self.negation_conflict, n),
            "consistent_rate": ratio(self.consistent, n),
            "mean_mentions": ratio(self.mentions, n),
            "captions_without_mentions": n - self.with_mentions,
        }


class ConsistencyAccumulator:
    """Streaming aggregate of :class:`CaptionConsistency` scores, per stream and pooled."""

    def __init__(self, settings: ConsistencySettings | None = None) -> None:
        self.settings = settings or ConsistencySettings()
        self._streams: dict[str, _Sums] = {}

    def update(self, stream: str, score: CaptionConsistency) -> None:
        """Add one caption's scores to ``stream``."""
        sums = self._streams.get(stream)
        if sums is None:
            sums = self._streams[stream] = _Sums()
        sums.add(score)

    def compute(self) -> dict[str, Any]:
        """Summary: ``{"settings", "pooled", "per_stream"}`` (rates in 0..1, None if undefined)."""
        pooled = _Sums()
        for sums in self._streams.values():
            pooled.merge(sums)
        return {
            "settings": asdict(self.settings),
            "pooled": pooled.summary(),
            "per_stream": {k: v.summary() for k, v in sorted(self._streams.items())},
        }
