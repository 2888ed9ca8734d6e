"""Prompt templates of the three caption streams, filled from grounding facts.

The streams follow ARAS400k's design (the prompts themselves are ours):

``hybrid``  a VLM sees the image and the composition (and the layout when known);
``vision``  a VLM sees only the image and a generic request;
``text``    an LLM sees only the composition (and the layout), no image.

Templates are plain text files (``groundsynth/caption/prompts/<stream>.txt``); lines that
start with ``#`` are comments and ``{field}`` placeholders are filled with
:meth:`str.format` from :func:`prompt_fields` (write ``{{``/``}}`` for literal braces).
:func:`load_template` reads the built-in file or a user one — a file, or a folder holding
``<stream>.txt`` — and rejects unknown fields naming the file and the valid ones.

>>> from groundsynth.caption.facts import facts_from_percentages
>>> facts = facts_from_percentages([30, 0, 0, 70, 0, 0, 0], "a.png")
>>> print(load_template("text").render(facts).splitlines()[1])
- Crop: 70 %
"""

from __future__ import annotations

import os
import re
import string
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from groundsynth.caption.facts import CELL_NAMES, GroundingFacts
from groundsynth.classes import CLASS_NAMES, NUM_CLASSES
from groundsynth.errors import InputError

__all__ = ["FIELDS", "STREAMS", "PromptTemplate", "load_template", "prompt_fields", "render_prompt"]

#: Prompt streams, as in ARAS400k.
STREAMS: tuple[str, ...] = ("hybrid", "vision", "text")

_PCT_FIELDS = tuple("pct_" + n.lower().replace("-", "_") for n in CLASS_NAMES)
#: Fields a template may use (all strings).
FIELDS: tuple[str, ...] = (
    "image_id",
    "composition",  # "Crop 70 %, Tree 30 %" (classes of at least 1 %, largest first)
    "composition_list",  # one "- Crop: 70 %" line per class of at least 1 %
    "dominant",
    "present_classes",  # "Crop and Tree"
    "absent_classes",  # "Shrub, Grass, Built-up, Barren and Water" or "none"
    "class_names",
    "layout",  # "north-west: Tree; north: Crop; ..." or "" when unknown
    "layout_section",  # a titled block of the layout, or "" when unknown
    "water",  # a sentence on the water shape, or ""
    "builtup",  # a sentence on built-up fragmentation, or ""
    "shapes_section",  # water and builtup together, or ""
    *_PCT_FIELDS,  # pct_tree ... pct_water: integer percentages
)


def _and(names: list[str]) -> str:
    if not names:
        return "none"
    return names[0] if len(names) == 1 else ", ".join(names[:-1]) + " and " + names[-1]


def prompt_fields(facts: GroundingFacts) -> dict[str, str]:
    """The values of :data:`FIELDS` for one image."""
    present = [i for i in facts.present(0.0) if facts.percentages[i] >= 1]
    absent = [CLASS_NAMES[i] for i in range(NUM_CLASSES) if i not in present]
    layout = section = ""
    if facts.layout is not None:
        cells = [
            f"{cell}: {CLASS_NAMES[c] if c >= 0 else 'no data'}"
            for cell, c in zip(CELL_NAMES, facts.layout, strict=True)
        ]
        layout = "; ".join(cells)
        section = (
            "\nDominant land cover in each ninth of the image (north up):\n"
            + "\n".join(f"- {c}" for c in cells)
            + "\n"
        )
    water = {
        "line": "Water forms a thin line (a river or canal).",
        "blob": "Water forms a compact body (a lake, pond or reservoir).",
    }.get(facts.water_shape or "", "")
    builtup = ""
    if facts.builtup_pattern == "compact":
        builtup = "Built-up land is compact (one main cluster)."
    elif facts.builtup_pattern == "scattered":
        builtup = f"Built-up land is scattered over {facts.builtup_patches} separate patches."
    shapes = " ".join(s for s in (water, builtup) if s)
    fields = {
        "image_id": facts.image_id,
        "composition": ", ".join(f"{CLASS_NAMES[i]} {facts.percentages[i]} %" for i in present),
        "composition_list": "\n".join(
            f"- {CLASS_NAMES[i]}: {facts.percentages[i]} %" for i in present
        ),
        "dominant": CLASS_NAMES[facts.dominant],
        "present_classes": _and([CLASS_NAMES[i] for i in present]),
        "absent_classes": _and(absent),
        "class_names": ", ".join(CLASS_NAMES),
        "layout": layout,
        "layout_section": section,
        "water": water,
        "builtup": builtup,
        "shapes_section": shapes + "\n" if shapes else "",
    }
    fields.update({k: str(v) for k, v in zip(_PCT_FIELDS, facts.percentages, strict=True)})
    return fields


@dataclass(frozen=True)
class PromptTemplate:
    """A prompt template of one stream (comment lines already removed)."""

    stream: str
    text: str
    source: str

    @property
    def fields(self) -> tuple[str, ...]:
        """The field names the template uses."""
        names = [f for _, f, _, _ in string.Formatter().parse(self.text) if f is not None]
        return tuple(dict.fromkeys(names))

    def render(self, facts: GroundingFacts) -> str:
        """The prompt for one image: fields filled, runs of blank lines collapsed."""
        text = self.text.format_map(prompt_fields(facts))
        return re.sub(r"\n{3,}", "\n\n", text).strip() + "\n"


def _read(stream: str, path: str | os.PathLike[str] | None) -> tuple[str, str]:
    if path is None:
        res = resources.files("groundsynth.caption") / "prompts" / f"{stream}.txt"
        return res.read_text(encoding="utf-8"), f"<builtin prompts/{stream}.txt>"
    p = Path(path)
    if p.is_dir():
        p = p / f"{stream}.txt"
    if not p.is_file():
        raise InputError(f"prompt template for stream {stream!r} not found: {p}")
    return p.read_text(encoding="utf-8"), str(p)


def load_template(stream: str, path: str | os.PathLike[str] | None = None) -> PromptTemplate:
    """The prompt template of ``stream``: built in, or from a file / a folder of ``<stream>.txt``.

    Raises InputError for an unknown stream, a missing file, bad brace syntax or a field
    that is not in :data:`FIELDS`.
    """
    if stream not in STREAMS:
        raise InputError(f"unknown prompt stream {stream!r}; valid streams: {', '.join(STREAMS)}")
    raw, source = _read(stream, path)
    text = "\n".join(ln for ln in raw.splitlines() if not ln.lstrip().startswith("#"))
    template = PromptTemplate(stream, text, source)
    try:
        used = template.fields
    except ValueError as exc:
        raise InputError(f"{source}: bad template syntax ({exc}); write {{{{ for a brace") from None
    unknown = [f for f in used if f not in FIELDS]
    if unknown:
        raise InputError(
            f"{source}: unknown field(s) {', '.join(unknown)}; valid fields: {', '.join(FIELDS)}"
        )
    return template


def render_prompt(
    stream: str, facts: GroundingFacts, path: str | os.PathLike[str] | None = None
) -> str:
    """Shorthand for ``load_template(stream, path).render(facts)``."""
    return load_template(stream, path).render(facts)
