"""Caption figures: template captioner speed and quality, caption metrics at ARAS scale.

Run: ``python benchmarks/bench_captions.py [--masks 10000] [--runs 3] [--quick]``

Prints (medians over ``--runs`` runs, one core):

1. ``facts_from_mask`` time per 256×256 mask;
2. template captioner throughput (captions/s, facts precomputed), from masks and from
   percentage rows;
3. over ``--masks`` composed 256×256 masks × 5 captions: exact-string redundancy and the
   share of captions the consistency metric calls consistent (targets: ≤ 1 %, 100 %);
4. consistency scoring speed (parse + score, captions/s);
5. redundancy + distinct-1..4 over 2,001,200 captions (ARAS400k's count, 5 streams): each
   caption joins two template captions drawn at random (~40 words, like ARAS VLM
   captions); target < 30 s.
"""

from __future__ import annotations

import argparse
import resource
import statistics
import time
from collections.abc import Callable, Iterator

import numpy as np

from groundsynth.caption import facts_from_mask, facts_from_percentages, get_captioner
from groundsynth.data.composition import integer_percentages
from groundsynth.evaluate.caption_consistency import score_caption
from groundsynth.evaluate.caption_diversity import CaptionDiversity
from groundsynth.evaluate.caption_lexicon import load_lexicon

ARAS_CAPTIONS = 2_001_200
WATER, BUILT_UP = 6, 4


def composed_masks(n: int, size: int = 256, seed: int = 0) -> Iterator[np.ndarray]:
    """Blobby class regions from a coarse random grid, sometimes a river, a lake or
    scattered houses; like ARAS, no mask is more than 90 % water."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size]
    made = 0
    while made < n:
        k = int(rng.integers(1, 6))
        classes = rng.choice(7, size=k, replace=False)
        grid = int(rng.choice([2, 3, 4, 6, 8, 16]))
        low = rng.choice(classes, size=(grid, grid), p=rng.dirichlet(np.full(k, 0.7)))
        rep = -(-size // grid)
        m = np.repeat(np.repeat(low, rep, 0), rep, 1)[:size, :size].astype(np.uint8)
        r = rng.random()
        if r < 0.25:
            width = rng.integers(1, size // 16)
            centre = rng.integers(size // 4, 3 * size // 4) + rng.uniform(0, size / 8) * np.sin(
                2 * np.pi * rng.uniform(0.5, 3) * xx / size
            )
            line = np.abs(yy - centre) < width
            m[line if rng.random() < 0.5 else line.T] = WATER
        elif r < 0.4:
            cy, cx = rng.integers(0, size, 2)
            m[(yy - cy) ** 2 + (xx - cx) ** 2 < rng.uniform(size / 16, size / 4) ** 2] = WATER
        if rng.random() < 0.3:
            for _ in range(rng.integers(1, 40)):
                y, x = rng.integers(0, size - 8, 2)
                m[y : y + rng.integers(2, 8), x : x + rng.integers(2, 8)] = BUILT_UP
        if (m == WATER).mean() > 0.9:
            continue
        made += 1
        yield m


def median_time(fn: Callable[[], object], runs: int) -> tuple[float, object]:
    times, out = [], None
    for _ in range(runs):
        t = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times), out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--masks", type=int, default=10_000)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--quick", action="store_true", help="1,000 masks, 200,000 captions")
    args = ap.parse_args()
    n_masks = 1_000 if args.quick else args.masks
    n_big = 200_000 if args.quick else ARAS_CAPTIONS

    masks = list(composed_masks(n_masks))
    t = time.perf_counter()
    facts = [facts_from_mask(m, f"{i:06d}") for i, m in enumerate(masks)]
    per_mask = (time.perf_counter() - t) / len(masks)
    print(f"facts_from_mask, 256x256: {per_mask * 1e3:.3f} ms per mask ({len(masks):,} masks)")
    del masks

    cap = get_captioner("template")
    dt, captions = median_time(lambda: [c for f in facts for c in cap.caption(f, n=5)], args.runs)
    print(f"template captioner, facts from masks: {len(captions) / dt:,.0f} captions/s")
    rng = np.random.default_rng(1)
    rows = []
    for i in range(n_masks):
        k = int(rng.integers(1, 6))
        p = np.zeros(7)
        p[rng.choice(7, k, replace=False)] = rng.dirichlet(np.ones(k))
        rows.append(facts_from_percentages(integer_percentages(p), f"r{i}"))
    dt_rows, row_caps = median_time(
        lambda: [c for f in rows for c in cap.caption(f, n=5)], args.runs
    )
    print(f"template captioner, facts from percentages: {len(row_caps) / dt_rows:,.0f} captions/s")

    lex = load_lexicon()
    pairs = [(f, c) for f, caps in zip(facts, _chunks(captions, 5), strict=True) for c in caps]
    redundancy = 1 - len(set(captions)) / len(captions)
    t = time.perf_counter()
    consistent = sum(score_caption(lex.parse(c), f.fractions).consistent for f, c in pairs)
    dt_score = time.perf_counter() - t
    print(
        f"{len(facts):,} masks x 5 captions: redundancy {redundancy:.4%}, "
        f"consistent {consistent / len(pairs):.4%}"
    )
    row_red = 1 - len(set(row_caps)) / len(row_caps)
    print(f"{len(rows):,} percentage rows x 5 captions: redundancy {row_red:.4%}")
    print(f"consistency scoring (parse + score): {len(pairs) / dt_score:,.0f} captions/s")
    words = statistics.mean(len(c.split()) for c in captions)
    print(f"template captions: {words:.1f} words on average")

    pick = np.random.default_rng(2).integers(0, len(captions), size=(n_big, 2))
    big = [f"{captions[a]} {captions[b]}" for a, b in pick.tolist()]
    streams = ["hybrid_a", "hybrid_b", "text_c", "vision_d", "vision_e"]

    def diversity() -> dict:
        d = CaptionDiversity()
        step = 20_000
        for i in range(0, len(big), step):
            d.update(big[i : i + step], streams[(i // step) % len(streams)])
        return d.compute()

    dt_big, out = median_time(diversity, args.runs)
    pooled = out["pooled"]
    print(
        f"redundancy + distinct-1..4 over {len(big):,} captions "
        f"({pooled['words']:,} words, {pooled['mean_length']:.1f} per caption): {dt_big:.1f} s "
        f"(median of {args.runs}); redundancy {pooled['redundancy']:.4%}, "
        + ", ".join(f"distinct-{n} {pooled[f'distinct_{n}']:.3g}" for n in range(1, 5))
    )
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"peak memory of this process (holding all captions): {peak:,.0f} MiB")


def _chunks(seq: list[str], n: int) -> Iterator[list[str]]:
    for i in range(0, len(seq), n):
        yield seq[i : i + n]


if __name__ == "__main__":
    main()
