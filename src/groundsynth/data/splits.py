"""Deterministic, spatially blocked train/val/test splits and their leakage figure.

``block``: the patch grid of each source is cut into blocks of N x N patches; the blocks are
ordered by a hash of (seed, source, block row, block column) and the first 80 % of them (by
default) go to train, the next 10 % to val, the rest to test. Neighbouring patches mostly
share a split, the shares are exact in blocks, and the assignment does not depend on
processing order or resumption.
A *buffer* of N patches keeps blocks of different splits apart: a patch is dropped when a
patch position of a higher-ranked split (test > val > train) lies within
:func:`buffer_radius` grid steps of it, so the dropped ring always sits on the lower-ranked
side of a boundary (test and val keep their blocks whole) and no kept test patch lies within
N patch widths of a kept training patch.
``source``: whole imagery sources (regions) go to one split each, for held-out-region tests.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping, Sequence

from groundsynth.data.contract import SPLITS
from groundsynth.errors import InputError

__all__ = [
    "assign_blocks",
    "assign_sources",
    "buffer_radius",
    "in_buffer",
    "leakage",
    "unit_hash",
    "validate_fractions",
]

#: Which side of a boundary between two splits keeps its patches under a buffer.
_RANK = {"train": 0, "val": 1, "test": 2}


def unit_hash(*parts: object) -> float:
    """A deterministic number in [0, 1) from the parts (stable across runs and platforms)."""
    digest = hashlib.blake2b(":".join(map(str, parts)).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2**64


def validate_fractions(fractions: Sequence[float]) -> tuple[float, float, float]:
    if len(fractions) != 3 or any(f < 0 for f in fractions):
        raise InputError(
            f"split fractions must be three non-negative numbers, got {list(fractions)}"
        )
    total = sum(fractions)
    if abs(total - 1.0) > 1e-6:
        raise InputError(f"split fractions must sum to 1, got {list(fractions)} (sum {total:g})")
    return tuple(float(f) for f in fractions)  # type: ignore[return-value]


def split_counts(n: int, fractions: Sequence[float]) -> list[int]:
    """Integer counts summing to ``n`` in proportion to ``fractions`` (largest remainder);
    every split with a non-zero fraction gets at least one item when ``n`` allows."""
    raw = [n * f for f in fractions]
    counts = [int(r) for r in raw]
    for i in sorted(range(len(raw)), key=lambda i: (counts[i] - raw[i], i))[: n - sum(counts)]:
        counts[i] += 1
    for i, f in enumerate(fractions):
        if f > 0 and counts[i] == 0 and n >= sum(1 for g in fractions if g > 0):
            j = max(range(len(counts)), key=lambda k: counts[k])
            counts[j] -= 1
            counts[i] += 1
    return counts


def assign_blocks(
    blocks: Iterable[tuple[str, int, int]], *, fractions: Sequence[float], seed: int
) -> dict[tuple[str, int, int], str]:
    """Assign (source, block row, block col) keys to splits in hash order, exact in counts."""
    order = sorted(set(blocks), key=lambda b: (unit_hash(seed, *b), b))
    counts = split_counts(len(order), fractions)
    out: dict[tuple[str, int, int], str] = {}
    start = 0
    for name, k in zip(SPLITS, counts):
        for b in order[start : start + k]:
            out[b] = name
        start += k
    return out


def buffer_radius(buffer: int, size: int, stride: int) -> int:
    """Grid steps around a patch that must hold no higher-ranked split for it to be kept.

    Two patches ``d`` grid steps apart leave ``d * stride - size`` pixels between them; a
    buffer of N patch widths needs ``d * stride - size >= N * size``, that is
    ``d >= (N + 1) * size / stride``, so the radius is that distance minus one. With
    ``stride == size`` the radius is N (N patches dropped between blocks); 0 keeps all.
    """
    if buffer < 0:
        raise InputError(f"--buffer must be >= 0 patches, got {buffer}")
    if buffer == 0:
        return 0
    return -(-(buffer + 1) * size // stride) - 1


def in_buffer(
    block_splits: Mapping[tuple[str, int, int], str],
    source: str,
    row: int,
    col: int,
    *,
    block_size: int,
    radius: int,
) -> bool:
    """Whether the patch at (row, col) falls in the buffer: some grid position within
    ``radius`` steps (Chebyshev) belongs to a block of a higher-ranked split than its own."""
    if radius <= 0:
        return False
    own = _RANK[block_splits[(source, row // block_size, col // block_size)]]
    if own == max(_RANK.values()):
        return False
    b = block_size
    seen: set[tuple[int, int]] = set()
    for r in range(row - radius, row + radius + 1):
        for c in range(col - radius, col + radius + 1):
            key = (r // b, c // b)
            if r < 0 or c < 0 or key in seen:
                continue
            seen.add(key)  # pragma: no mutate (only skips re-reading a block: same answer)
            other = block_splits.get((source, *key))
            if other is not None and _RANK[other] > own:
                return True
    return False


def assign_sources(
    sources: Mapping[str, float],
    *,
    fractions: Sequence[float],
    seed: int,
    fixed: Mapping[str, str] | None = None,
) -> dict[str, str]:
    """Assign whole sources to splits: ``fixed`` first, the rest greedily in hash order to the
    split whose share of the total area (``sources`` maps name -> area) is furthest below its
    target fraction."""
    fixed = dict(fixed or {})
    for name, split in fixed.items():
        if name not in sources:
            raise InputError(f"--assign names unknown source {name!r}; sources: {sorted(sources)}")
        if split not in SPLITS:
            raise InputError(f"--assign {name}={split}: split must be one of {', '.join(SPLITS)}")
    total = sum(sources.values()) or 1.0
    filled = dict.fromkeys(SPLITS, 0.0)  # pragma: no mutate (any common start: same argmax)
    out = {}
    for name, split in fixed.items():
        out[name] = split
        filled[split] += sources[name]
    for name in sorted((n for n in sources if n not in fixed), key=lambda n: unit_hash(seed, n)):
        split = max(SPLITS, key=lambda s: fractions[SPLITS.index(s)] * total - filled[s])
        out[name] = split
        filled[split] += sources[name]
    return out


def leakage(patches: Iterable[tuple[str, int, int, str]]) -> dict[str, float | int]:
    """Count train/test patch pairs that touch (share an edge or a corner) in a patch grid.

    ``patches`` yields (source, row, col, split). Returns the pair count, the number of test
    patches touching any train patch, and that number as a fraction of the test patches.
    """
    where: dict[tuple[str, int, int], str] = {}
    for source, row, col, split in patches:
        where[(source, row, col)] = split
    pairs = 0
    touched = 0
    n_test = 0
    for (source, row, col), split in where.items():
        if split != "test":
            continue
        n_test += 1
        k = sum(
            where.get((source, row + dr, col + dc)) == "train"
            for dr in (-1, 0, 1)
            for dc in (-1, 0, 1)
            if dr or dc
        )
        pairs += k
        touched += k > 0
    return {
        "train_test_touching_pairs": pairs,
        "test_patches_touching_train": touched,
        "test_patches": n_test,
        "test_touching_fraction": round(touched / n_test, 6) if n_test else 0.0,
    }
