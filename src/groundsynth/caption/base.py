"""The interface every captioner back end implements."""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

from groundsynth.caption.facts import GroundingFacts

__all__ = ["Captioner"]


@runtime_checkable
class Captioner(Protocol):
    """Writes captions of one image from its grounding facts (and, for VLMs, its pixels).

    ``caption`` returns ``n`` captions; they must be a pure function of
    ``(facts, image, n, seed, key)`` for back ends that can promise it (the template one
    does; model back ends do as far as their decoding allows). ``key`` identifies the image
    for seeding and defaults to ``facts.image_id``.
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
