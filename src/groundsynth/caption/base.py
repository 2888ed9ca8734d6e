"""The interface every captioner back end implements, and what back ends share.

A captioner writes captions of one image from its grounding facts (and, for VLMs, its
pixels). Every back end has :meth:`Captioner.caption`; back ends that gain from batching
(model back ends: batched generation, concurrent requests) also have ``caption_batch``,
which takes many :class:`CaptionJob` and returns one :class:`CaptionResult` per job — a
failure of one image is a result with an ``error``, not an exception, so a run can record
it and go on. :func:`caption_jobs` calls ``caption_batch`` when a back end has it and falls
back to ``caption`` per job otherwise.

Optional attributes a back end may have (read with ``getattr``): ``needs_image`` (bool,
default False: whether it looks at pixels, so a run reads images only when needed),
``describe()`` (a dict of its settings, secrets excluded, for run records) and ``close()``.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

from groundsynth.caption.facts import GroundingFacts
from groundsynth.errors import GroundsynthError, InputError

__all__ = [
    "Captioner",
    "CaptionJob",
    "CaptionResult",
    "caption_jobs",
    "clean_caption",
    "item_seed",
]


@runtime_checkable
class Captioner(Protocol):
    """Writes captions of one image from its grounding facts (and, for VLMs, its pixels).

    ``caption`` returns ``n`` captions; they must be a pure function of
    ``(facts, image, n, seed, key)`` for back ends that can promise it (the template one
    does; model back ends do as far as their decoding allows). ``key`` identifies the image
    for seeding and defaults to ``facts.image_id``. It raises
    :class:`~groundsynth.errors.GroundsynthError` when it cannot caption the image.
    """

    name: str

    def caption(
        self,
        facts: GroundingFacts,
        *,
        image: Any = None,
        n: int = 1,
        seed: int = 0,
        key: str = "",
    ) -> list[str]: ...


@dataclass(frozen=True)
class CaptionJob:
    """One image to caption: its facts, its pixels (HxWx3 uint8 or a PIL image; None when
    the back end does not look at images) and its seeding key (default: the image id)."""

    facts: GroundingFacts
    image: Any = None
    key: str = ""

    @property
    def seed_key(self) -> str:
        return self.key or self.facts.image_id


@dataclass(frozen=True)
class CaptionResult:
    """The outcome of one job: ``n`` captions, or an ``error`` message (never both)."""

    captions: tuple[str, ...] = ()
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None


class BatchCaptioner:
    """Mixin of back ends that caption in batches: :meth:`caption` is one job of
    :meth:`caption_batch` (which the back end defines), failures raised as errors."""

    def caption_batch(
        self, jobs: Sequence[CaptionJob], *, n: int = 1, seed: int = 0
    ) -> list[CaptionResult]:
        raise NotImplementedError

    def caption(
        self,
        facts: GroundingFacts,
        *,
        image: Any = None,
        n: int = 1,
        seed: int = 0,
        key: str = "",
    ) -> list[str]:
        """``n`` captions of one image; raises GroundsynthError when it fails."""
        (result,) = self.caption_batch([CaptionJob(facts, image, key)], n=n, seed=seed)
        if result.error is not None:
            raise GroundsynthError(f"{key or facts.image_id}: {result.error}")
        return list(result.captions)


def item_seed(seed: int, key: str, index: int = 0) -> int:
    """A 31-bit seed for caption ``index`` of the image ``key`` (stable across processes)."""
    digest = hashlib.sha256(f"{seed}|{key}|{index}".encode()).digest()
    return int.from_bytes(digest[:4], "big") & 0x7FFFFFFF


_THINK = re.compile(r"<think>.*?(</think>|$)", re.DOTALL | re.IGNORECASE)
_QUOTES = ('"', "'", "“", "”", "‘", "’", "`")


def clean_caption(text: str) -> str:
    """A model reply as a one-line caption: reasoning blocks (``<think>…</think>``),
    a leading ``Caption:`` label and wrapping quotes removed, whitespace collapsed."""
    text = _THINK.sub(" ", text)
    text = " ".join(text.split())
    if text.lower().startswith("caption:"):
        text = text[8:].lstrip()
    if len(text) >= 2 and text[0] in _QUOTES and text[-1] in _QUOTES:
        text = text[1:-1].strip()
    return text


def _check_n(n: int) -> None:
    if n < 1:
        raise InputError(f"n must be >= 1; got {n}")


def caption_jobs(
    captioner: Captioner, jobs: Sequence[CaptionJob], *, n: int = 1, seed: int = 0
) -> list[CaptionResult]:
    """Caption ``jobs`` with ``captioner``: one result per job, in order.

    Uses the back end's ``caption_batch`` when it has one; otherwise calls ``caption`` per
    job and turns a :class:`GroundsynthError` into a failed result. Errors that concern the
    whole run (a rejected API key, a missing model) propagate.
    """
    _check_n(n)
    batch = getattr(captioner, "caption_batch", None)
    if batch is not None:
        results = list(batch(jobs, n=n, seed=seed))
        if len(results) != len(jobs):
            raise GroundsynthError(
                f"captioner {captioner.name!r} returned {len(results)} results for {len(jobs)} jobs"
            )
        return results
    out = []
    for job in jobs:
        try:
            texts = captioner.caption(job.facts, image=job.image, n=n, seed=seed, key=job.key)
        except GroundsynthError as exc:
            out.append(CaptionResult(error=str(exc) or type(exc).__name__))
            continue
        out.append(_checked(texts, n))
    return out


def _checked(texts: Sequence[str], n: int) -> CaptionResult:
    """A result from ``n`` caption texts: a failure if any is empty or some are missing."""
    texts = [t.strip() for t in texts]
    if len(texts) != n:
        return CaptionResult(error=f"expected {n} captions, got {len(texts)}")
    if not all(texts):
        return CaptionResult(error="the back end returned an empty caption")
    return CaptionResult(captions=tuple(texts))
