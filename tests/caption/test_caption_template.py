"""Contract of the template captioner, checked against the consistency metric."""

from __future__ import annotations

import itertools
import re

import numpy as np
import pytest

from groundsynth.caption import (
    Captioner,
    TemplateCaptioner,
    facts_from_mask,
    facts_from_percentages,
    get_captioner,
    list_captioners,
)
from groundsynth.caption import phrases as P
from groundsynth.classes import NUM_CLASSES
from groundsynth.evaluate.caption_consistency import score_caption
from groundsynth.evaluate.caption_lexicon import load_lexicon
from tests.caption.masks import random_masks

LEX = load_lexicon()


@pytest.fixture(scope="module")
def corpus() -> list[tuple]:
    """~2,000 composed masks × 5 template captions: (facts, caption)."""
    cap = get_captioner("template")
    facts = [facts_from_mask(m, f"img{i:05d}") for i, m in enumerate(random_masks(2000, 48, 7))]
    return [(f, c) for f in facts for c in cap.caption(f, n=5, seed=0)]


def test_registry() -> None:
    assert "template" in list_captioners()
    cap = get_captioner("template")
    assert isinstance(cap, Captioner) and isinstance(cap, TemplateCaptioner)
    with pytest.raises(ValueError, match="valid captioners: .*template"):
        get_captioner("gpt-9")


def test_deterministic_by_seed_and_key_and_seeds_differ() -> None:
    mask = np.kron(np.array([[0, 3], [3, 6]], dtype=np.uint8), np.ones((32, 32), np.uint8))
    f = facts_from_mask(mask, "N40E033_041_023")
    cap = TemplateCaptioner()
    a = cap.caption(f, n=5, seed=3)
    assert a == TemplateCaptioner().caption(f, n=5, seed=3)
    assert len(set(a)) == 5
    assert cap.caption(f, n=2, seed=3) == a[:2]  # caption i does not depend on n
    b = cap.caption(f, n=5, seed=4)
    assert a != b and len(set(a) & set(b)) <= 1
    assert cap.caption(f, n=5, seed=3, key="other") != a


def test_never_names_absent_classes_and_always_consistent(corpus) -> None:
    for facts, text in corpus:
        s = score_caption(LEX.parse(text), facts.fractions)
        assert not s.hallucination, (facts.percentages, text)
        assert s.consistent, (facts.percentages, text, s)


def test_consistent_with_integer_percentage_tables() -> None:
    rng = np.random.default_rng(1)
    cap = TemplateCaptioner()
    for i in range(600):
        k = int(rng.integers(1, 6))
        shares = np.zeros(NUM_CLASSES)
        shares[rng.choice(NUM_CLASSES, k, replace=False)] = rng.dirichlet(np.ones(k))
        exact = facts_from_mask(_mask_with_shares(shares), f"m{i}")
        table = facts_from_percentages(exact.percentages, f"m{i}")
        for facts in (exact, table):
            for text in cap.caption(facts, n=3, seed=i):
                for fr in (exact.fractions, table.fractions):
                    assert score_caption(LEX.parse(text), fr).consistent, (exact.percentages, text)


def _mask_with_shares(shares: np.ndarray, size: int = 40) -> np.ndarray:
    counts = np.floor(shares * size * size).astype(int)
    counts[np.argmax(shares)] += size * size - counts.sum()
    return np.repeat(np.arange(NUM_CLASSES, dtype=np.uint8), counts).reshape(size, size)


def test_redundancy_below_one_percent(corpus) -> None:
    texts = [t for _, t in corpus]
    assert len(texts) >= 10_000
    redundancy = 1 - len(set(texts)) / len(texts)
    assert redundancy <= 0.01, redundancy


def test_captions_are_one_or_two_sentences(corpus) -> None:
    for _, text in itertools.islice(corpus, 0, None, 7):
        assert text[0].isupper() and text.endswith(".")
        assert 1 <= text.count(". ") + 1 <= 2, text
        assert "  " not in text and " ," not in text


def _agreement_errors() -> list[re.Pattern[str]]:
    """Patterns of subject-verb disagreement in the phrases the grammar can produce."""
    nouns = [
        pair
        for table in (P.CLASS_NOUNS, P.WATER_NOUNS, P.BUILTUP_NOUNS)
        for options in table.values()
        for pair in options
    ]

    def alt(kinds: tuple[str, ...]) -> str:
        words = sorted({n for n, k in nouns if k in kinds}, key=len, reverse=True)
        return "(?:" + "|".join(map(re.escape, words)) + r")\b"

    amount = r"(?:some |extensive |(?:about |roughly |around |approximately )?\d+ ?(?:%|percent|per cent) )?"
    plural_head = r"(?:(?:small|large|broad) (?:patches|areas|expanses) of |traces of |a few )"
    singular_head = r"(?:an? (?!few\b)|a bit of |a small amount of |a scattering of )"
    be = r"(?:there {v}(?: also)?|also visible {v}) "
    singular_verbs = r"(?:covers|occupies|makes up|takes up|accounts for|dominates|fills|is)\b"
    plural_verbs = r"(?:cover|occupy|make up|take up|account for|dominate|fill|are)\b"
    return [
        # "There is also large expanses of tree cover", "Also visible is some fields"
        re.compile(be.format(v="is") + f"(?:{plural_head}|{amount}{alt(('plural',))})"),
        # "There are also a scattering of houses", "Elsewhere there are some farmland"
        re.compile(be.format(v="are") + f"(?:{singular_head}|{amount}{alt(('mass',))})"),
        # a leading subject: "Fields covers ...", "Farmland are the main land cover ..."
        re.compile(f"^{alt(('plural',))} {singular_verbs}"),
        re.compile(f"^{alt(('mass', 'single'))} {plural_verbs}"),
    ]


def test_subject_verb_agreement(corpus) -> None:
    """The verb agrees with the finished noun phrase, quantity words included."""
    errors = _agreement_errors()
    assert len(corpus) >= 5_000
    bad = [t for _, t in corpus if any(e.search(t.lower()) for e in errors)]
    assert not bad, f"{len(bad)} of {len(corpus)} disagree, e.g. {bad[:3]}"
    texts = " ".join(t.lower() for _, t in corpus)  # the checks are not vacuous
    assert re.search(r"there are also (?:small|large|broad) \w+ of \w+", texts)
    assert re.search(r"there is also (?:some )?[a-z ]*land\b", texts)
    assert any(
        e.search(t)
        for e in errors
        for t in ("there is also large areas of forest.", "also visible are a little scrub.")
    )


def test_word_lists_agree_with_the_lexicon() -> None:
    for cls, nouns in P.CLASS_NOUNS.items():
        for noun, _ in nouns:
            assert LEX.parse(noun).mentioned == {cls}, noun
    for table, cls in ((P.WATER_NOUNS, 6), (P.BUILTUP_NOUNS, 4)):
        for nouns in table.values():
            for noun, _ in nouns:
                assert LEX.parse(noun).mentioned == {cls}, noun
    for phrase in P.QUANTITY_MASS + P.QUANTITY_PLURAL + P.ADVERBS + P.FRACTION_WORDS:
        parsed = LEX.parse(f"{phrase} farmland")
        assert len(parsed.quantities) == 1 and parsed.quantities[0].cls == 3, phrase
    for text in P.OPENINGS + P.LAND_OPENINGS + P.SCENE_NOUNS + P.FULL_ADJECTIVES + P.ONLY_CLASS:
        assert not LEX.parse(text).mentions, text


def test_quantity_words_follow_the_shares() -> None:
    cap = TemplateCaptioner()
    mostly = facts_from_percentages([0, 0, 0, 95, 0, 0, 5], "a")
    little = facts_from_percentages([0, 0, 60, 0, 0, 38, 2], "b")
    for facts in (mostly, little):
        for text in cap.caption(facts, n=40, seed=11):
            for q in LEX.parse(text).quantities:
                share = facts.fractions[q.cls]
                tol = 0.05 if q.kind == "percent" else 0.0
                assert q.low - tol - 1e-9 <= share <= q.high + tol + 1e-9, (text, q)


def _random_tables(n: int) -> list[list[int]]:
    rng = np.random.default_rng(5)
    out = []
    for _ in range(n):
        k = int(rng.integers(1, 5))
        p = np.zeros(NUM_CLASSES)
        p[rng.choice(NUM_CLASSES, k, replace=False)] = rng.dirichlet(np.ones(k))
        from groundsynth.data.composition import integer_percentages

        out.append(integer_percentages(p).tolist())
    return out


def test_rejects_bad_settings() -> None:
    with pytest.raises(ValueError):
        TemplateCaptioner(presence=0.2, must_share=0.1)
    with pytest.raises(ValueError):
        TemplateCaptioner().caption(facts_from_percentages([100, 0, 0, 0, 0, 0, 0]), n=0)
