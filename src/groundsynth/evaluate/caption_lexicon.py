"""Land-cover lexicon: which classes a caption names, which it negates, what shares it states.

The word lists live in a data file (``lexicon/landcover_en.yaml``) so they can be read and
edited without touching code; :func:`load_lexicon` reads it (or a user file of the same
shape) and :meth:`Lexicon.parse` turns a caption into a :class:`ParsedCaption`:

- *mentions*: class phrases matched on whole words, longest phrase first, plurals reduced to
  listed singulars; phrases in the ``ignore`` table ("tree-lined", "football field") block
  the shorter class phrases inside them;
- *negation*: a class phrase within a few words after a cue ("no", "without", "free of"),
  with no punctuation or breaker word ("and", "but", "with", ...) in between, is negated and
  is not a mention; so is one a few words before an after-cue ("water is absent",
  "water: none");
- *quantities*: quantity words ("mostly", "a little", "two-thirds") with the range of shares
  for which they are true, stated percentages ("45 %", "45 percent") and ranges
  ("30-40 %"), each attached to the nearest class phrase (percentages look back first, words
  look ahead first). A comparative in front makes a bound of it: "more than 70 %" is
  [0.7, 1], "less than a third" is [0, upper bound of "a third"]. A share that may be zero
  ("less than 10 %", "0-5 %") does not claim its class is present: a class named only
  with such shares is *hedged* (:attr:`ParsedCaption.hedged`).

>>> parsed = load_lexicon().parse("Mostly farmland with no water and a few tree-lined roads.")
>>> sorted(parsed.mentioned), sorted(parsed.negated)
([3], [6])
>>> [(q.cls, q.phrase, q.low, q.high) for q in parsed.quantities]
[(3, 'mostly', 0.5, 1.0)]
>>> [(q.cls, q.phrase, q.low, q.high) for q in load_lexicon().parse("Over 70 % forest.").quantities]
[(0, 'over 70 %', 0.7, 1.0)]
"""

from __future__ import annotations

import functools
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any, NamedTuple

import yaml

from groundsynth.classes import CLASS_NAMES, class_index
from groundsynth.errors import InputError

__all__ = [
    "DEFAULT_LEXICON",
    "Lexicon",
    "Mention",
    "ParsedCaption",
    "Quantity",
    "class_names",
    "load_lexicon",
]

#: Name of the built-in lexicon file inside ``groundsynth/evaluate/lexicon``.
DEFAULT_LEXICON = "landcover_en.yaml"

# Attachment windows of quantities, in tokens (see the lexicon file).
_AHEAD = 5
_BACK = 4

_NUM = r"\d+(?:\.\d+)?"
_PCT = r"(?:%|percent\b|per\s+cent\b|pct\b)"
_TOKEN_RE = re.compile(
    rf"(?P<range>{_NUM})\s*{_PCT}?\s*(?:-|–|to)\s*(?P<range_hi>{_NUM})\s*{_PCT}"
    rf"|(?P<pct>{_NUM})\s*{_PCT}"
    r"|(?P<word>[a-z]+(?:['’-][a-z]+)*)"
    rf"|(?P<num>{_NUM})"
    r"|(?P<punct>[,;:.!?()])"
)
# Tokens through which a quantity may look for its class (brackets and colons: "crop (45 %)").
_SEE_THROUGH = frozenset({"(", ")", ":"})


@dataclass(frozen=True)
class Mention:
    """A class phrase found in a caption (token span ``start:end``)."""

    cls: int
    phrase: str
    start: int
    end: int
    negated: bool = False


@dataclass(frozen=True)
class Quantity:
    """A stated share attached to a class: true when the class fraction is in [low, high].

    ``kind`` is ``"word"`` (a quantity word; bounds are the lexicon range) or ``"percent"``
    (a stated percentage or range; bounds are the stated values / 100, before tolerance);
    a comparative in front opens one side (``"more than 70 %"``: high 1.0). ``allows_absence``:
    the phrase bounds the share from above only or states 0 % ("less than 10 %", "up to a
    third", "0-5 %"), so it does not claim the class is present.
    """

    cls: int
    kind: str
    phrase: str
    low: float
    high: float
    allows_absence: bool = False


@dataclass(frozen=True)
class ParsedCaption:
    """What a caption says about land cover, by class index."""

    mentions: tuple[Mention, ...]
    quantities: tuple[Quantity, ...]
    n_words: int
    #: Named classes whose every mention carries only shares that may be zero ("no more
    #: than 10 % water"): named, but not claimed present.
    hedged: frozenset[int] = frozenset()

    @property
    def mentioned(self) -> frozenset[int]:
        """Classes named at least once without negation."""
        return frozenset(m.cls for m in self.mentions if not m.negated)

    @property
    def negated(self) -> frozenset[int]:
        """Classes that are only ever named under a negation ("no water")."""
        return frozenset(m.cls for m in self.mentions if m.negated) - self.mentioned


class _Share(NamedTuple):
    """A stated share before attachment: token span, phrase, bounds (fractions)."""

    start: int
    end: int
    phrase: str
    low: float
    high: float
    allows_absence: bool

    def bounded(self, comparative: tuple[int, int, str, str]) -> _Share:
        """This share after a comparative (start, end, side, phrase): one side opened."""
        start, _, side, phrase = comparative
        text = f"{phrase} {self.phrase}"
        if side == "at_least":
            return _Share(start, self.end, text, self.low, 1.0, False)
        return _Share(start, self.end, text, 0.0, self.high, True)

    def quantity(self, cls: int, kind: str) -> Quantity:
        return Quantity(cls, kind, self.phrase, self.low, self.high, self.allows_absence)


def _singulars(word: str) -> tuple[str, ...]:
    """Candidate singular forms of an English plural (tried only for unknown words)."""
    out = []
    if word.endswith("ies") and len(word) > 4:
        out.append(word[:-3] + "y")
    if word.endswith("es") and len(word) > 3:
        out.append(word[:-2])
    if word.endswith("s") and not word.endswith("ss") and len(word) > 2:
        out.append(word[:-1])
    return tuple(out)


class Lexicon:
    """Compiled phrase tables of a lexicon file; use :func:`load_lexicon` to build one."""

    def __init__(self, data: Mapping[str, Any], source: str = "<memory>") -> None:
        self.source = source
        if not isinstance(data, Mapping) or "classes" not in data:
            raise InputError(f"{source}: a lexicon needs a 'classes' table")
        entries: list[tuple[str, str, Any]] = []  # (phrase, kind, payload)
        self.class_phrases: dict[int, tuple[str, ...]] = {}
        for name, phrases in dict(data["classes"]).items():
            try:
                idx = class_index(str(name))
            except ValueError as exc:
                raise InputError(f"{source}: {exc}") from None
            self.class_phrases[idx] = tuple(str(p) for p in phrases)
            entries += [(str(p), "class", idx) for p in phrases]
        entries += [(str(p), "ignore", None) for p in data.get("ignore", []) or []]
        neg = data.get("negation", {}) or {}
        self.negation_scope = int(neg.get("scope", 4))
        self.after_scope = int(neg.get("after_scope", 3))
        cues = {str(p).lower(): "ahead" for p in neg.get("cues", []) or []}
        for p in neg.get("after_cues", []) or []:
            cues[str(p).lower()] = "both" if str(p).lower() in cues else "back"
        entries += [(p, "negation", way) for p, way in cues.items()]
        comparatives = data.get("comparatives", {}) or {}
        sides = {"at_least", "at_most"}
        if not isinstance(comparatives, Mapping) or set(comparatives) - sides - {"fractions"}:
            raise InputError(
                f"{source}: 'comparatives' must map at_least, at_most and fractions to "
                f"lists of phrases; got {comparatives!r}"
            )
        for side in sides & set(comparatives):
            entries += [(str(p), "comparative", side) for p in comparatives[side] or []]
        self.fractions = frozenset(str(w).lower() for w in comparatives.get("fractions") or [])
        self.breakers = frozenset(str(w).lower() for w in neg.get("breakers", []) or [])
        self.quantities: dict[str, tuple[float, float]] = {}
        for p, rng in (data.get("quantities", {}) or {}).items():
            lo, hi = (float(v) for v in rng)
            if not 0.0 <= lo <= hi <= 1.0:
                raise InputError(f"{source}: quantity {p!r} has range {rng!r}; need 0<=lo<=hi<=1")
            self.quantities[str(p).lower()] = (lo, hi)
            entries.append((str(p), "quantity", (lo, hi)))
        self.spatial = frozenset(str(w).lower() for w in data.get("spatial_modifiers", []) or [])
        # Words are compared in a canonical form: the singular when a listed word is one.
        self._known = {w for p, _, _ in entries for w in p.lower().split()}
        self._canon: dict[str, str] = {}
        self._phrases: dict[tuple[str, ...], tuple[str, Any]] = {}
        for phrase, kind, payload in entries:
            self._add(phrase, kind, payload)
        self._starts: dict[str, int] = {}
        for key in self._phrases:
            self._starts[key[0]] = max(self._starts.get(key[0], 0), len(key))

    def _add(self, phrase: str, kind: str, payload: Any) -> None:
        key = tuple(self._normalise(w) for w in phrase.lower().split())
        if not key:
            raise InputError(f"{self.source}: empty phrase in the {kind} table")
        old = self._phrases.get(key)
        if old is not None and old != (kind, payload):
            raise InputError(
                f"{self.source}: phrase {phrase!r} is listed twice "
                f"({old[0]} and {kind}); keep it in one table"
            )
        self._phrases[key] = (kind, payload)

    def class_of(self, phrase: str) -> int | None:
        """The class index a phrase names on its own (None if it names none)."""
        mentioned = self.parse(phrase).mentioned
        return next(iter(mentioned)) if len(mentioned) == 1 else None

    def _normalise(self, word: str) -> str:
        out = self._canon.get(word)
        if out is None:
            out = next((c for c in _singulars(word) if c in self._known), word)
            if len(self._canon) < 1_000_000:
                self._canon[word] = out
        return out

    def parse(self, text: str) -> ParsedCaption:
        """Find class mentions, negations and attached quantities in one caption."""
        toks: list[str] = []  # normalised words; punctuation as itself; "" for numbers
        pcts: dict[int, _Share] = {}  # token position -> stated percentage
        n_words = 0
        for m in _TOKEN_RE.finditer(text.lower()):
            kind = m.lastgroup
            if kind == "word":
                toks.append(self._normalise(m.group("word")))
                n_words += 1
            elif kind == "punct":
                toks.append(m.group("punct"))
            else:
                n_words += 1
                pos = len(toks)
                if kind == "pct":
                    v = float(m.group("pct")) / 100.0
                    pcts[pos] = _Share(pos, pos + 1, m.group(0), v, v, v <= 0.0)
                elif kind == "range_hi":
                    a, b = float(m.group("range")) / 100.0, float(m.group("range_hi")) / 100.0
                    lo, hi = min(a, b), max(a, b)
                    pcts[pos] = _Share(pos, pos + 1, m.group(0), lo, hi, lo <= 0.0)
                toks.append("")
        # Phrase matching, longest first. items: (start, end, kind, payload, phrase)
        items: list[tuple[int, int, str, Any, str]] = []
        phrases, starts, n = self._phrases, self._starts, len(toks)
        i = 0
        while i < n:
            max_len = starts.get(toks[i], 0)
            if not max_len:
                i += 1
                continue
            for k in range(min(max_len, n - i), 0, -1):
                key = tuple(toks[i : i + k])
                hit = phrases.get(key)
                if hit is not None:
                    items.append((i, i + k, hit[0], hit[1], " ".join(key)))
                    i += k
                    break
            else:
                i += 1
        # Negation scopes: class phrases starting in negated_at (after a cue) or ending in
        # negated_end (before an after-cue) are negated.
        negated_at: set[int] = set()
        negated_end: set[int] = set()
        class_ends = {end for _, end, kind, _, _ in items if kind == "class"}
        for start, end, kind, way, _ in items:
            if kind != "negation":
                continue
            if way in ("ahead", "both"):
                j, words = end, 0
                while j < n and words < self.negation_scope:
                    t = toks[j]
                    if t and not t[0].isalpha() or t in self.breakers:
                        break
                    negated_at.add(j)
                    j += 1
                    words += 1
            if way in ("back", "both"):  # the nearest class phrase before the cue
                j, words = start, 0
                while j > 0 and j not in class_ends and words < self.after_scope:
                    t = toks[j - 1]
                    if t in self.breakers or (t and not t[0].isalpha() and t != ":"):
                        break
                    j -= 1
                    words += 1
                if j in class_ends:
                    negated_end.add(j)
        mentions = tuple(
            Mention(p, phrase, s, e, s in negated_at or e in negated_end)
            for s, e, kind, p, phrase in items
            if kind == "class"
        )
        words = self._shares(items, pcts)
        quantities, hedged = self._attach(toks, words, mentions, pcts)
        return ParsedCaption(mentions, quantities, n_words, hedged)

    def _shares(
        self, items: list[tuple[int, int, str, Any, str]], pcts: dict[int, _Share]
    ) -> list[_Share]:
        """The quantity words; a comparative is folded into the share right after it (a
        stated percentage, updated in ``pcts`` in place, or a quantity word)."""
        words: list[_Share] = []
        before: tuple[int, int, str, str] | None = None  # the comparative just before
        for start, end, kind, payload, phrase in items:
            if kind == "comparative" and end in pcts:
                pcts[end] = pcts[end].bounded((start, end, payload, phrase))
            elif kind == "quantity":
                share = _Share(start, end, phrase, payload[0], payload[1], False)
                fraction = not self.fractions.isdisjoint(phrase.replace("-", " ").split())
                bound = fraction and before is not None and before[1] == start
                words.append(share.bounded(before) if bound else share)
            before = (start, end, payload, phrase) if kind == "comparative" else None
        return words

    def _attach(
        self,
        toks: list[str],
        words: list[_Share],
        mentions: tuple[Mention, ...],
        pcts: dict[int, _Share],
    ) -> tuple[tuple[Quantity, ...], frozenset[int]]:
        """Quantities attached to their class phrases, and the hedged classes."""
        live = {m.start: m for m in mentions if not m.negated}
        if not live:
            return (), frozenset()
        starts_at_end = {m.end: m for m in live.values()}
        out: list[Quantity] = []

        def ahead(pos: int) -> Mention | None:
            for j in range(pos, min(pos + _AHEAD, len(toks))):
                if j in live:
                    return live[j]
                if self._stops(toks[j]):
                    return None
            return None

        def back(pos: int) -> Mention | None:
            for j in range(pos, max(pos - _BACK, 0), -1):
                if j in starts_at_end:
                    return starts_at_end[j]
                if self._stops(toks[j - 1]):
                    return None
            return None

        absence: dict[int, bool] = {}  # mention start -> all its shares may be zero
        for pos, share in sorted(pcts.items()):
            m = back(share.start) or ahead(pos + 1)
            if m is not None:
                out.append(share.quantity(m.cls, "percent"))
                absence[m.start] = absence.get(m.start, True) and share.allows_absence
        for share in words:
            if share.start > 0 and toks[share.start - 1] in self.spatial:
                continue
            m = ahead(share.end) or back(share.start)
            if m is not None:
                out.append(share.quantity(m.cls, "word"))
                absence[m.start] = absence.get(m.start, True) and share.allows_absence
        by_class: dict[int, list[bool]] = {}
        for m in live.values():
            by_class.setdefault(m.cls, []).append(absence.get(m.start, False))
        hedged = frozenset(c for c, flags in by_class.items() if all(flags))
        return tuple(out), hedged

    def _stops(self, tok: str) -> bool:
        return (bool(tok) and not tok[0].isalpha() and tok not in _SEE_THROUGH) or (
            tok in self.breakers
        )


@functools.lru_cache(maxsize=8)
def _load_cached(path: str | None) -> Lexicon:
    if path is None:
        res = resources.files("groundsynth.evaluate") / "lexicon" / DEFAULT_LEXICON
        return Lexicon(
            yaml.safe_load(res.read_text(encoding="utf-8")), f"<builtin {DEFAULT_LEXICON}>"
        )
    p = Path(path)
    try:
        data = yaml.safe_load(p.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise InputError(f"lexicon file not found: {p}") from None
    except yaml.YAMLError as exc:
        raise InputError(f"{p}: not valid YAML ({exc})") from None
    return Lexicon(data, str(p))


def load_lexicon(path: str | os.PathLike[str] | None = None) -> Lexicon:
    """Load a lexicon file (YAML, the shape of the built-in one); None for the built-in."""
    return _load_cached(None if path is None else str(Path(path).resolve()))


def class_names(indices: frozenset[int] | set[int]) -> list[str]:
    """Class names of a set of indices, in schema order."""
    return [CLASS_NAMES[i] for i in sorted(indices)]
