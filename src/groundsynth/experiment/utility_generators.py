"""Rank statistics across generators for :mod:`.utility_stats`: the leave-one-generator-out
concordance of a metric (and of a choice of metric redone without the held-out generator),
and the mean Spearman correlation within each generator's own sets."""

from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np
import pandas as pd

from groundsynth.experiment.utility_ranks import _spearman

__all__ = ["logo_concordance", "within_generator_spearman"]


def _held_out_pairs(values: np.ndarray, gain: np.ndarray, member: np.ndarray) -> tuple[float, int]:
    """Sum of pair scores (1 agree, 0 disagree, 0.5 tie) and number of pairs, over the pairs
    with at least one set in ``member``, among the sets where both arrays are finite."""
    keep = ~np.isnan(values) & ~np.isnan(gain)
    v, y, m = values[keep], gain[keep], member[keep]
    sv = np.sign(v[:, None] - v[None, :])
    sy = np.sign(y[:, None] - y[None, :])
    score = np.where((sv == 0) | (sy == 0), 0.5, (sv == sy).astype(float))
    pairs = np.triu(m[:, None] | m[None, :], k=1)
    return float(score[pairs].sum()), int(pairs.sum())


def logo_concordance(
    values: np.ndarray, gain: np.ndarray, generators: np.ndarray
) -> tuple[float, int]:
    """Leave-one-generator-out concordance of oriented ``values`` with ``gain`` (one entry per
    set; nan entries are left out), and the number of generators held out in turn (0 when
    fewer than 2 generators are left: then the concordance is nan). See :mod:`.utility_stats`."""
    values, gain = np.asarray(values, float), np.asarray(gain, float)
    generators = np.asarray(generators)
    labels = pd.unique(generators[~np.isnan(values) & ~np.isnan(gain)])
    if len(labels) < 2:
        return math.nan, 0
    total, pairs = 0.0, 0
    for label in labels:
        t, p = _held_out_pairs(values, gain, generators == label)
        total, pairs = total + t, pairs + p
    return total / pairs, len(labels)


def _reselected_logo(
    candidates: Mapping[object, np.ndarray], gain: np.ndarray, generators: np.ndarray
) -> float:
    """:func:`logo_concordance` of a choice made from the data: for each held-out generator,
    the candidate (oriented values per set) with the highest Spearman on the other
    generators' sets is chosen, then scored on the held-out generator's pairs."""
    usable = ~np.isnan(gain)
    labels = pd.unique(generators[usable])
    if len(labels) < 2 or not candidates:
        return math.nan
    total, pairs = 0.0, 0
    for label in labels:
        member = generators == label
        train = np.where(member, math.nan, gain)
        fits = {k: _spearman(v, train) for k, v in candidates.items()}
        fits = {k: r for k, r in fits.items() if not math.isnan(r)}
        if not fits:
            continue  # too few sets outside this generator to choose: it is not scored
        chosen = max(fits, key=fits.__getitem__)
        t, p = _held_out_pairs(candidates[chosen], gain, member)
        total, pairs = total + t, pairs + p
    return total / pairs if pairs else math.nan


def within_generator_spearman(
    values: np.ndarray, gain: np.ndarray, generators: np.ndarray
) -> float:
    """Mean over generators of the Spearman correlation between ``values`` and ``gain`` among
    that generator's own sets (its checkpoints, filtered and targeted variants), over the
    generators with at least 3 usable sets and a defined correlation; nan when none has.

    Between-generator differences (grounded vs pseudo-labelled, one family vs another) can
    carry a correlation over all sets on their own; this figure asks the question inside each
    generator, where only the variants differ."""
    from scipy import stats

    values, gain = np.asarray(values, float), np.asarray(gain, float)
    use = ~np.isnan(values) & ~np.isnan(gain)
    found = []
    for g in pd.unique(generators[use]):
        k = use & (generators == g)
        x, y = values[k], gain[k]
        if k.sum() < 3 or np.ptp(x) == 0 or np.ptp(y) == 0:
            continue
        found.append(float(stats.spearmanr(x, y).statistic))
    return float(np.mean(found)) if found else math.nan
