"""Captioning: grounding facts, prompts, captioner back ends, caption runs and corpora.

Modules: :mod:`~groundsynth.caption.facts` (what a map says), :mod:`~.prompts` (templates of
the hybrid / vision / text streams), :mod:`~.template` (the built-in model-free captioner),
:mod:`~.transformers_backend` (local VLMs/LLMs), :mod:`~.openai_backend` (OpenAI-compatible
servers), :mod:`~.run` (captioning a dataset into its captions tables, resumable),
:mod:`~.corpora` (readers of caption files). Captioners implement :class:`Captioner`.

Back ends are listed in a plain registry: :func:`list_captioners` names them and
:func:`get_captioner` builds one by name (keyword arguments go to its constructor). Model
back ends are imported when built, so importing this package imports neither torch,
transformers nor httpx.

>>> list_captioners()
['openai', 'template', 'transformers']
>>> get_captioner("template").name
'template'
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from groundsynth.caption.base import Captioner, CaptionJob, CaptionResult, caption_jobs
from groundsynth.caption.facts import GroundingFacts, facts_from_mask, facts_from_percentages
from groundsynth.caption.prompts import STREAMS, load_template, render_prompt
from groundsynth.caption.template import TemplateCaptioner

__all__ = [
    "CAPTIONERS",
    "STREAMS",
    "CaptionJob",
    "CaptionResult",
    "Captioner",
    "GroundingFacts",
    "TemplateCaptioner",
    "caption_jobs",
    "facts_from_mask",
    "facts_from_percentages",
    "get_captioner",
    "list_captioners",
    "load_template",
    "render_prompt",
]


def _transformers(**kwargs: Any) -> Captioner:
    from groundsynth.caption.transformers_backend import TransformersCaptioner

    return TransformersCaptioner(**kwargs)


def _openai(**kwargs: Any) -> Captioner:
    from groundsynth.caption.openai_backend import OpenAICaptioner

    return OpenAICaptioner(**kwargs)


#: name -> factory (a class, or a function that imports a heavy back end on use).
CAPTIONERS: dict[str, Callable[..., Captioner]] = {
    "openai": _openai,
    "template": TemplateCaptioner,
    "transformers": _transformers,
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
