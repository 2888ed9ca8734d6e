"""The built-in ``template`` captioner: grounded captions from a grammar, no model.

A caption is one or two sentences built from the :class:`GroundingFacts` of an image:
the dominant class leads (with an adverb, a share or a percentage), the other classes follow
with quantity words, percentages and, when the layout is known, where they lie; water reads
as a river or a lake after its shape, built-up land as a village or scattered houses after
its fragmentation. Word lists are in :mod:`groundsynth.caption.phrases`.

Guarantees, checked by the tests against the consistency metric:

- it names only classes with a share of at least ``presence`` + ``margin`` (2 %: a 0.9 %
  class may read 1 % in an integer-percentage table) and always names the
  dominant class and every class of at least ``must_share`` (9 %: one point under the
  metric's 10 % recall share, so integer-percentage tables agree too);
- a quantity word is used only when the share lies inside its lexicon range shrunk by
  ``margin`` (1 point) at inner bounds; stated percentages are the integer percentages;
- captions are a pure function of (facts, seed, key, n): one ``random.Random`` seeded with
  the string ``"{seed}|{key}"`` (SHA-512 based, so stable across processes and platforms)
  draws them in turn, skipping repeats, so caption i does not depend on n.
"""

from __future__ import annotations

import random
from typing import Any

from groundsynth.caption import phrases as P
from groundsynth.caption.facts import BUILT_UP, CELL_NAMES, GroundingFacts
from groundsynth.classes import WATER
from groundsynth.errors import InputError
from groundsynth.evaluate.caption_consistency import PRESENCE_SHARE, RECALL_SHARE
from groundsynth.evaluate.caption_lexicon import Lexicon, load_lexicon

__all__ = ["TemplateCaptioner"]

_EDGES = {"north": {0, 1, 2}, "south": {6, 7, 8}, "west": {0, 3, 6}, "east": {2, 5, 8}}
_ADJ = {"north": "northern", "south": "southern", "west": "western", "east": "eastern"}
_PLURAL_VERB = {
    "covers": "cover",
    "occupies": "occupy",
    "makes up": "make up",
    "takes up": "take up",
    "accounts for": "account for",
    "dominates": "dominate",
    "fills": "fill",
    "is": "are",
}
_PCT_FORMS = ("{} %", "{}%", "{} percent", "{} per cent")
_APPROX = ("about ", "roughly ", "around ", "approximately ", "")


def _region(cells: set[int]) -> tuple[str, str] | None:
    """(kind, name) of a set of 3×3 cells: a cell, an edge, or two cells; None if spread."""
    if len(cells) == 1:
        c = next(iter(cells))
        return ("centre" if c == 4 else "edge" if c in (1, 3, 5, 7) else "corner"), CELL_NAMES[c]
    for name, group in _EDGES.items():
        if cells <= group:
            return "edge", name
    if cells <= {3, 4, 5} or cells <= {1, 4, 7}:
        return "centre", "centre"
    if len(cells) == 2:
        a, b = sorted(cells)
        return "pair", f"{CELL_NAMES[a]} and {CELL_NAMES[b]}"
    return None


def _join(parts: list[str]) -> str:
    return parts[0] if len(parts) == 1 else ", ".join(parts[:-1]) + " and " + parts[-1]


def _cap(text: str) -> str:
    return text[:1].upper() + text[1:]


class TemplateCaptioner:
    """Grammar-based captions from grounding facts (see the module docstring)."""

    name = "template"

    def __init__(
        self,
        *,
        presence: float = PRESENCE_SHARE,
        must_share: float = RECALL_SHARE - 0.01,
        margin: float = 0.01,
        minor_probability: float = 0.6,
        max_mentions: int = 6,
        lexicon: str | None = None,
    ) -> None:
        if not 0.0 < presence <= must_share <= 1.0:
            raise InputError(f"need 0 < presence <= must_share <= 1; got {presence}, {must_share}")
        if max_mentions < 1:
            raise InputError(f"max_mentions must be >= 1; got {max_mentions}")
        self.presence, self.must_share, self.margin = presence, must_share, margin
        self.minor_probability, self.max_mentions = minor_probability, max_mentions
        lex = load_lexicon(lexicon)
        words = set(P.QUANTITY_MASS + P.QUANTITY_PLURAL + P.ADVERBS + P.FRACTION_WORDS)
        self._ranges = {w: self._lexicon_range(lex, w) for w in words | {"dominated by"}}

    @staticmethod
    def _lexicon_range(lex: Lexicon, phrase: str) -> tuple[float, float]:
        for key in (phrase, phrase.split(" ", 1)[-1]):  # "about half" -> "half"
            if key in lex.quantities:
                return lex.quantities[key]
        raise InputError(f"quantity phrase {phrase!r} is not in the lexicon {lex.source}")

    def _ok(self, phrase: str, share: float) -> bool:
        lo, hi = self._ranges[phrase]
        m = self.margin
        return (lo <= 0.0 or share >= lo + m) and (hi >= 1.0 or share <= hi - m)

    def _valid(self, phrases: tuple[str, ...], share: float) -> list[str]:
        return [p for p in phrases if self._ok(p, share)]

    # -- nouns and noun phrases ------------------------------------------------------------
    def _noun(self, c: int, facts: GroundingFacts, rng: random.Random) -> tuple[str, str]:
        share = facts.fractions[c]
        options: tuple[tuple[str, str], ...] = P.CLASS_NOUNS[c]
        if c == WATER and facts.water_shape in ("line", "blob") and rng.random() < 0.85:
            shape = facts.water_shape
            band = "-small" if share < 0.05 else "-large" if share >= 0.3 else ""
            options = P.WATER_NOUNS.get(shape + band, P.WATER_NOUNS[shape])
        elif (
            c == BUILT_UP
            and facts.builtup_pattern in ("compact", "scattered")
            and rng.random() < 0.8
        ):
            pat = facts.builtup_pattern
            band = "-small" if share < 0.05 else "-large" if share >= 0.3 else ""
            options = P.BUILTUP_NOUNS.get(pat + band, P.BUILTUP_NOUNS[pat])
        return rng.choice(options)

    def _pct(self, c: int, facts: GroundingFacts, rng: random.Random) -> str:
        return rng.choice(_PCT_FORMS).format(facts.percentages[c])

    def _location(self, c: int, kind: str, facts: GroundingFacts, rng: random.Random) -> str:
        if facts.layout is None or facts.class_cells is None or rng.random() < 0.3:
            return ""
        cells = {i for i, v in enumerate(facts.layout) if v == c} or set(facts.class_cells[c])
        region = _region(cells) if cells else None
        river = c == WATER and kind == "single" and facts.water_shape == "line"
        if region is None:
            return rng.choice((" crossing the image", " crossing the scene")) if river else ""
        rkind, name = region
        if river:
            verb = rng.choice(("running through", "winding through", "crossing", "flowing through"))
            return f" {verb} the {name}"
        if rkind == "edge":
            return rng.choice(
                (f" in the {name}", f" to the {name}", f" along the {_ADJ[name]} edge")
                if name in _ADJ
                else (f" in the {name}", f" towards the {name}")
            )
        if rkind == "corner":
            return rng.choice((f" in the {name}", f" in the {name} corner", f" towards the {name}"))
        if rkind == "centre":
            return rng.choice((" in the centre", " in the middle", " at the centre"))
        return f" in the {name}"

    def _item(self, c: int, facts: GroundingFacts, rng: random.Random) -> tuple[str, bool]:
        """A noun phrase for a non-dominant class, and whether the finished phrase is
        grammatically plural (its quantity head's number if it has one, else its noun's)."""
        share = facts.fractions[c]
        noun, kind = self._noun(c, facts, rng)
        plural = kind == "plural"
        r = rng.random()
        if kind != "single" and r < 0.55:
            pool = P.QUANTITY_MASS if kind == "mass" else P.QUANTITY_PLURAL
            if kind == "plural" and c not in P.SCATTERABLE:
                pool = tuple(q for q in pool if q != "a scattering of")
            words = self._valid(pool, share)
            if words:
                quantity = rng.choice(words)
                noun = f"{quantity} {noun}"
                plural = quantity in P.PLURAL_HEADS or (plural and quantity not in P.SINGULAR_HEADS)
        elif r < 0.75:
            noun = f"{noun} ({self._pct(c, facts, rng)})"
        elif r < 0.82 and kind == "mass":
            noun = f"{rng.choice(_APPROX)}{self._pct(c, facts, rng)} {noun}"
        return noun + self._location(c, kind, facts, rng), plural

    # -- sentences -------------------------------------------------------------------------
    def _lead(
        self, facts: GroundingFacts, rest: list[tuple[str, bool]], alone: bool, rng: random.Random
    ) -> tuple[str, bool]:
        """The first sentence, and whether it states the dominant share as a number/fraction."""
        d = facts.dominant
        share = facts.fractions[d]
        noun, kind = self._noun(d, facts, rng)
        if kind == "mass" and (alone or share >= 0.97 + self.margin) and rng.random() < 0.5:
            noun = f"{rng.choice(P.FULL_ADJECTIVES)} {noun}"
        plural = kind == "plural"
        land = kind != "single" and d != WATER
        openings = P.OPENINGS + P.LAND_OPENINGS if land else P.OPENINGS
        frame = rng.randrange(7)
        links = P.WITH_LINKS if frame not in (2, 5) else [w for w in P.WITH_LINKS if w[0] == ","]
        tail = rng.choice(links) + " " + _join([t for t, _ in rest]) if rest else ""
        scene = rng.choice(P.SCENE_NOUNS)
        adverbs = self._valid(P.ADVERBS, share) if kind != "single" else []
        if frame == 0 and adverbs:
            return f"{rng.choice(openings)} {rng.choice(adverbs)} {noun}{tail}.", False
        if frame == 1 and adverbs:
            return f"{_cap(rng.choice(adverbs))} {noun}{tail}.", False
        if frame == 2:
            shares = [f"{rng.choice(_APPROX)}{self._pct(d, facts, rng)}"]
            shares += self._valid(P.FRACTION_WORDS, share)
            if share >= 0.5 + self.margin:
                shares.append("most")
            verb = rng.choice(P.COVER_VERBS)
            verb = _PLURAL_VERB[verb] if plural else verb
            return f"{_cap(noun)} {verb} {rng.choice(shares)} of the {scene}{tail}.", True
        if frame == 3:
            how = ["covered by", "made up of"]
            if self._ok("dominated by", share):
                how.append("dominated by")
            how_word = rng.choice(how)
            if how_word != "dominated by" and adverbs and rng.random() < 0.6:
                how_word = f"{rng.choice(adverbs)} {how_word}"
            return f"The {scene} is {how_word} {noun}{tail}.", False
        if frame == 4:
            pct = self._pct(d, facts, rng)
            if rng.random() < 0.5:
                return f"{rng.choice(openings)} {noun} ({pct}){tail}.", True
            return f"{rng.choice(openings)} {noun} covering {pct} of the {scene}{tail}.", True
        if frame == 5:
            verbs = ["is the main land cover in", "is the largest land cover of"]
            if share >= 0.4 + self.margin:
                verbs.append("dominates")
            if share >= 0.9 + self.margin:
                verbs.append("fills")
            verb = rng.choice(verbs)
            if plural:
                head, _, rest_v = verb.partition(" ")
                verb = " ".join(filter(None, (_PLURAL_VERB.get(head, head), rest_v)))
            return f"{_cap(noun)} {verb} the {scene}{tail}.", False
        if frame == 6 and share >= 0.9 + self.margin:
            whole = rng.choice(("the whole", "the entire", "all of the"))
            forms = [f"{_cap(noun)} across {whole} {scene}{tail}."]
            if share >= 0.97 + self.margin:
                fill = _PLURAL_VERB["fills"] if plural else "fills"
                forms += [
                    f"{_cap(whole)} {scene} is {noun}{tail}.",
                    f"Nothing but {noun} in the {scene}{tail}.",
                    f"{_cap(noun)} {fill} {whole} {scene}{tail}.",
                ]
            return rng.choice(forms), False
        return f"{rng.choice(openings)} {noun}{tail}.", False

    def _second(self, items: list[tuple[str, bool]], rng: random.Random) -> str:
        text = _join([t for t, _ in items])
        be = "are" if items[0][1] else "is"  # agrees with the first phrase listed
        frame = rng.randrange(6)
        if frame == 0:
            return f"There {be} also {text}."
        if frame == 1:
            return f"{_cap(text)} can also be seen."
        if frame == 2:
            return f"Elsewhere there {be} {text}."
        if frame == 3:
            return f"Also visible {be} {text}."
        if frame == 4:
            return f"The {rng.choice(P.SCENE_NOUNS)} also includes {text}."
        return f"It also contains {text}."

    def _one(self, facts: GroundingFacts, rng: random.Random) -> str:
        # Minor classes need a margin too: a 0.9 % class may read 1 % in an integer table.
        others = [c for c in facts.present(self.presence + self.margin) if c != facts.dominant]
        must = [c for c in others if facts.fractions[c] >= self.must_share]
        minors = [c for c in others if c not in must and rng.random() < self.minor_probability]
        rng.shuffle(minors)
        chosen = must + minors[: max(0, self.max_mentions - 1 - len(must))]
        items = [self._item(c, facts, rng) for c in chosen]
        first, second = items, []
        if len(items) >= 2 and rng.random() < 0.5:
            k = rng.randrange(len(items))
            first, second = items[:k], items[k:]
        elif len(items) == 1 and rng.random() < 0.25:
            first, second = [], items
        alone = len(facts.present(self.presence)) == 1
        text, stated = self._lead(facts, first, alone, rng)
        if second:
            return f"{text} {self._second(second, rng)}"
        r = rng.random()
        if (alone or not stated) and (text.count(" ") < 8 or r < 0.3 or (alone and r < 0.7)):
            return f"{text} {self._coda(facts, alone, stated, bool(first), rng)}"
        return text

    def _coda(
        self, facts: GroundingFacts, alone: bool, stated: bool, listed: bool, rng: random.Random
    ) -> str:
        """A second sentence without class words: the only class, or the dominant share
        (unless the first sentence stated it)."""
        scene = rng.choice(P.SCENE_NOUNS)
        if alone and (stated or rng.random() < 0.6):
            return rng.choice(P.ONLY_CLASS).format(scene=scene)
        pct = f"{rng.choice(_APPROX)}{self._pct(facts.dominant, facts, rng)}"
        # After a list of classes "It" would be ambiguous.
        subjects = ("The main land cover", "The largest land cover")
        subject = rng.choice(subjects if listed else (*subjects, "It", "This"))
        verbs = [v for v in P.COVER_VERBS if v != "covers" or subject in ("It", "This")]
        return f"{subject} {rng.choice(verbs)} {pct} of the {scene}."

    def caption(
        self,
        facts: GroundingFacts,
        *,
        image: Any = None,
        n: int = 1,
        seed: int = 0,
        key: str = "",
    ) -> list[str]:
        """``n`` distinct captions (as far as the grammar allows) of one image.

        ``key`` identifies the image for seeding (default: ``facts.image_id``); ``image`` is
        accepted for the common captioner interface and not used.
        """
        if n < 1:
            raise InputError(f"n must be >= 1; got {n}")
        rng = random.Random(f"{seed}|{key or facts.image_id}")
        out: list[str] = []
        seen: set[str] = set()
        for _ in range(20 * n):
            text = self._one(facts, rng)
            if text not in seen:
                seen.add(text)
                out.append(text)
                if len(out) == n:
                    return out
        while len(out) < n:  # the grammar ran out of variants for these facts
            out.append(self._one(facts, rng))
        return out
