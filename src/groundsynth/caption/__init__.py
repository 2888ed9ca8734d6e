"""Captioning: grounding facts, prompts, captioner back ends and caption corpora.

Modules: :mod:`~groundsynth.caption.facts` (what a map says), :mod:`~.prompts` (templates of
the hybrid / vision / text streams), :mod:`~.template` (the built-in model-free captioner),
:mod:`~.corpora` (readers of caption files). Captioners implement :class:`Captioner`.

Back ends are listed in a plain registry: :func:`list_captioners` names them and
:func:`get_captioner` builds one by name (keyword arguments go to its constructor).

>>> list_captioners()
['template']
>>> get_captioner("template").name
'template'
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from groundsynth.caption.base import Captioner
from groundsynth.caption.facts import GroundingFacts, facts_from_mask, facts_from_percentages
from groundsynth.caption.prompts import STREAMS, load_template, render_prompt
from groundsynth.caption.template import TemplateCaptioner

__all__ = [
    "CAPTIONERS",
    "STREAMS",
    "Captioner",
    "GroundingFacts",
    "TemplateCaptioner",
    "facts_from_mask",
    "facts_from_percentages",
    "get_captioner",
    "list_captioners",
    "load_template",
    "render_prompt",
]

#: name -> factory (a class, or a function that imports a heavy back end on use).
CAPTIONERS: dict[str, Callable[..., Captioner]] = {
    "template": TemplateCaptioner,
}


def list_captioners() -> list[str]:
    """Names of the available captioner back ends."""
    return sorted(CAPTIONERS)


def get_captioner(name: str, **kwargs: Any) -> Captioner:
    """Build the captioner called ``name``; unknown names raise ValueError listing valid ones."""
    try:
        factory = CAPTIONERS[name]
    except KeyError:
        raise ValueError(
            f"unknown captioner {name!r}; valid captioners: {', '.join(list_captioners())}"
        ) from None
    return factory(**kwargs)
