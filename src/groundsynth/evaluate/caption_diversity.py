"""Caption diversity, streamed: redundancy, distinct-n, vocabulary size and mean length.

Definitions (per stream and pooled over streams):

- **redundancy** = 1 − distinct / total, over exact caption strings (surrounding whitespace
  stripped, nothing else: case and punctuation count), as in the ARAS400k paper;
- **distinct-n** (n = 1..4) = distinct n-grams / total n-grams, n-grams taken within a
  caption; **vocabulary** = distinct words; **mean length** = words per caption. Words are
  the lower-cased runs of letters and digits, hyphens and apostrophes inside a word kept
  ("built-up", "it's"), punctuation dropped.

Memory and speed. Nothing is kept per caption. Texts are split on whitespace and each
distinct raw token is turned into words once (a cached table), then all work is numpy on
word ids. Exact strings are kept as 64-bit hashes
(Python's ``hash`` of the string, SipHash, salted per process); n-grams as 64-bit keys: words
get integer ids from one shared vocabulary, 1- and 2-grams are packed exactly and 3- and
4-grams are mixed into 64 bits (splitmix64 steps). Distinct keys are counted with pandas'
hash-table ``unique`` over batches, merged as the pending part outgrows the kept part.
*Collision risk*: two different strings (or n-grams) share a 64-bit key with probability
about D² / 2⁶⁵ over D distinct items — about 1e-7 for ARAS400k's 2,001,200 captions and
below 1e-3 for 10⁸ distinct 4-grams; a collision lowers a distinct count by one. Hashes of
strings differ between processes (Python's hash salt) but counts do not, barring that risk.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

import numpy as np
import pandas as pd

__all__ = ["CaptionDiversity", "words"]

_WORD_RE = re.compile(r"\x00|[^\W_]+(?:['’-][^\W_]+)*")
_SEP = "\x00"
_C1 = np.uint64(0xBF58476D1CE4E5B9)
_C2 = np.uint64(0x94D049BB133111EB)


def words(text: str) -> list[str]:
    """The words of a caption as distinct-n counts them (lower-cased, punctuation dropped)."""
    return [w for w in _WORD_RE.findall(text.lower()) if w != _SEP]


def _mix(h: np.ndarray) -> np.ndarray:
    """splitmix64 finaliser on a uint64 array (in place; wraps modulo 2**64)."""
    h ^= h >> np.uint64(30)
    h *= _C1
    h ^= h >> np.uint64(27)
    h *= _C2
    h ^= h >> np.uint64(31)
    return h


class _DistinctSet:
    """Distinct 64-bit keys, added in batches; memory ~ 8 bytes per distinct key."""

    def __init__(self, dtype: type = np.uint64) -> None:
        self._base = np.empty(0, dtype=dtype)
        self._pending: list[np.ndarray] = []
        self._pending_n = 0

    def add(self, keys: np.ndarray) -> None:
        if not len(keys):
            return
        u = pd.unique(keys)
        self._pending.append(u)
        self._pending_n += len(u)
        if self._pending_n > max(len(self._base), 1 << 22):
            self._compact()

    def _compact(self) -> None:
        if self._pending:
            self._base = pd.unique(np.concatenate([self._base, *self._pending]))
            self._pending = []
            self._pending_n = 0

    def keys(self) -> np.ndarray:
        self._compact()
        return self._base

    def __len__(self) -> int:
        return len(self.keys())


class _Tokens(dict):
    """Whitespace-separated token -> row in a table of word ids, built on first sight.

    Splitting on whitespace is far faster than a regex over the whole text; each distinct
    raw token ("farmland," "(45") goes through the word regex once, and the words of a
    batch are gathered from the table with numpy.
    """

    def __init__(self) -> None:
        super().__init__()
        self.words: dict[str, int] = {_SEP: 0}
        self._starts: list[int] = []
        self._lens: list[int] = []
        self._flat: list[int] = []
        self._arrays: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None

    def __missing__(self, token: str) -> int:
        found = [_SEP] if token == _SEP else _WORD_RE.findall(token)
        words = self.words
        self._starts.append(len(self._flat))
        self._lens.append(len(found))
        self._flat.extend(words.setdefault(w, len(words)) for w in found)
        self._arrays = None
        row = self[token] = len(self._lens) - 1
        return row

    def ids(self, text: str) -> np.ndarray:
        """Word ids of ``text`` (already lower-cased), in order, as uint64."""
        raw = text.split()
        rows = np.fromiter(map(self.__getitem__, raw), np.int64, len(raw))
        if self._arrays is None:
            self._arrays = (
                np.array(self._starts, dtype=np.int64),
                np.array(self._lens, dtype=np.int64),
                np.array(self._flat, dtype=np.uint64),
            )
        starts, lens, flat = self._arrays
        n = lens[rows]
        if np.all(n == 1):
            return flat[starts[rows]]
        first = np.cumsum(n) - n
        pos = np.repeat(starts[rows] - first, n) + np.arange(int(n.sum()))
        return flat[pos]


class _StreamState:
    def __init__(self, max_n: int) -> None:
        self.captions = 0
        self.words = 0
        self.strings = _DistinctSet(np.int64)
        self.ngrams = [_DistinctSet() for _ in range(max_n)]
        self.totals = [0] * max_n
        self.buffer: list[str] = []


class CaptionDiversity:
    """Streaming redundancy and distinct-n over caption strings, per stream and pooled.

    >>> d = CaptionDiversity()
    >>> d.update(["A lake.", "A lake.", "A small lake"], stream="s")
    >>> r = d.compute()["pooled"]
    >>> round(r["redundancy"], 4), r["distinct_ngrams_1"], r["ngrams_1"], r["vocabulary"]
    (0.3333, 3, 7, 3)
    """

    def __init__(self, max_n: int = 4, batch_size: int = 20_000) -> None:
        if not 1 <= max_n <= 8:
            raise ValueError(f"max_n must be in 1..8; got {max_n}")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1; got {batch_size}")
        self.max_n = max_n
        self.batch_size = batch_size
        self._tokens = _Tokens()
        self._streams: dict[str, _StreamState] = {}

    def update(self, texts: Iterable[str], stream: str = "captions") -> None:
        """Add captions of one stream (buffered; processed in vectorised batches)."""
        st = self._streams.get(stream)
        if st is None:
            st = self._streams[stream] = _StreamState(self.max_n)
        st.buffer.extend(texts)
        if len(st.buffer) >= self.batch_size:
            self._flush(st)

    def _flush(self, st: _StreamState) -> None:
        texts, st.buffer = st.buffer, []
        if not texts:
            return
        st.captions += len(texts)
        st.strings.add(np.fromiter(map(hash, map(str.strip, texts)), np.int64, len(texts)))
        joined = f" {_SEP} ".join(texts)
        if joined.count(_SEP) != len(texts) - 1:  # a caption holds the separator itself
            joined = f" {_SEP} ".join(t.replace(_SEP, " ") for t in texts)
        ids = self._tokens.ids(f"{joined} {_SEP}".lower())
        st.words += len(ids) - len(texts)
        seps = np.concatenate(([0], np.cumsum(ids == 0)))
        for n in range(1, self.max_n + 1):
            m = len(ids) - n + 1
            if m <= 0:
                continue
            idx = np.flatnonzero(seps[n : n + m] == seps[:m])  # no separator inside
            if n == 1:
                keys = ids[idx]
            elif n == 2:
                keys = (ids[idx] << np.uint64(32)) | ids[idx + 1]
            else:
                keys = ids[idx].copy()
                for j in range(1, n):
                    keys = _mix(keys)
                    keys += ids[idx + j]
            st.totals[n - 1] += len(idx)
            st.ngrams[n - 1].add(keys)

    @staticmethod
    def _summary(
        captions: int, words: int, distinct: int, ngram_distinct: list[int], totals: list[int]
    ) -> dict[str, Any]:
        out: dict[str, Any] = {
            "captions": captions,
            "distinct_captions": distinct,
            "redundancy": 1.0 - distinct / captions if captions else None,
            "words": words,
            "mean_length": words / captions if captions else None,
            "vocabulary": ngram_distinct[0] if ngram_distinct else 0,
        }
        for n, (d, t) in enumerate(zip(ngram_distinct, totals, strict=True), start=1):
            out[f"distinct_{n}"] = d / t if t else None
            out[f"ngrams_{n}"] = t
            out[f"distinct_ngrams_{n}"] = d
        return out

    def compute(self) -> dict[str, Any]:
        """``{"pooled": {...}, "per_stream": {stream: {...}}}`` with the figures above."""
        for st in self._streams.values():
            self._flush(st)
        per_stream = {
            name: self._summary(
                st.captions,
                st.words,
                len(st.strings),
                [len(s) for s in st.ngrams],
                st.totals,
            )
            for name, st in sorted(self._streams.items())
        }
        states = list(self._streams.values())

        def union(sets: list[_DistinctSet]) -> int:
            if not sets:
                return 0
            return len(pd.unique(np.concatenate([s.keys() for s in sets])))

        pooled = self._summary(
            sum(s.captions for s in states),
            sum(s.words for s in states),
            union([s.strings for s in states]),
            [union([s.ngrams[k] for s in states]) for k in range(self.max_n)],
            [sum(s.totals[k] for s in states) for k in range(self.max_n)],
        )
        return {"pooled": pooled, "per_stream": per_stream}
