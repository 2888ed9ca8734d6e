"""COCO caption metrics at scale: groundsynth's streamed scorer vs pycocoevalcap's own recipe.

Synthetic remote-sensing-like captions (templates filled from a ~1,500-word Zipf vocabulary;
five references per image; the candidate shares ~70 % of its slot words with the first
reference) are generated from a seed, image by image, so the streamed scorer never holds the
corpus. Random slot words make most 3- and 4-grams unique: a worst case for CIDEr's
document-frequency table, which real captions repeat far more. Each measurement runs in its
own child process, which reports its wall time, its peak resident memory (``VmHWM``) and the
peak of its Java children (the PTB tokenizer and METEOR JVMs, ``RUSAGE_CHILDREN``).
``pycocoevalcap`` (the baseline) needs every caption in dicts first; it is measured at
``--baseline-size`` only.

Usage: python benchmarks/bench_captioning_metrics.py [--sizes 10000,100000] [--repeats 3]
       [--metrics bleu,meteor,rouge_l,cider] [--baseline-size 10000]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

SUBJECTS = ["houses", "trees", "cars", "buildings", "roads", "fields", "boats", "planes"]
TEMPLATES = [
    "there are many {a} {s} {p} the {b} {t} .",
    "some {a} {s} are {v} {p} a {b} {t} .",
    "a {a} {t} with {s} and {b} {u} {p} it .",
    "{s} are {v} {p} the {a} {t} , next to {b} {u} .",
    "this is a {a} area with {s} {v} {p} a {b} {t} .",
]


def vmhwm_mib() -> float:
    text = Path("/proc/self/status").read_text()
    return int(re.search(r"VmHWM:\s+(\d+)\s+kB", text).group(1)) / 1024


def corpus(n: int, seed: int):
    """Yield (image id, candidate, five references), deterministic per image."""
    words = [f"w{i}" for i in range(1500)]
    p = 1.0 / np.arange(1, len(words) + 1)
    p /= p.sum()
    for i in range(n):
        rng = np.random.default_rng([seed, i])
        pick = rng.choice(len(words), size=(6, 6), p=p)
        pick[0] = np.where(rng.random(6) < 0.3, pick[0], pick[1])  # candidate: near reference 1
        subj = rng.choice(SUBJECTS, size=6)
        caps = []
        for k in range(6):
            w = [words[j] for j in pick[k]]
            tpl = TEMPLATES[rng.integers(len(TEMPLATES))]
            caps.append(
                tpl.format(a=w[0], b=w[1], t=w[2], u=w[3], v=w[4], p=w[5], s=subj[k]).capitalize()
            )
        yield f"{i}.png", caps[0], caps[1:]


def run_child(method: str, n: int, seed: int, metrics: tuple[str, ...]) -> dict:
    t0 = time.perf_counter()
    if method == "ours":
        from groundsynth.evaluate.captioning import CaptioningScorer

        with CaptioningScorer(metrics) as scorer:
            scorer.update(corpus(n, seed))
            scores = scorer.compute(lambda rows: None)
    else:
        from pycocoevalcap.bleu.bleu import Bleu
        from pycocoevalcap.cider.cider import Cider
        from pycocoevalcap.meteor.meteor import Meteor
        from pycocoevalcap.rouge.rouge import Rouge
        from pycocoevalcap.tokenizer.ptbtokenizer import PTBTokenizer

        from groundsynth.evaluate.captioning_java import java_executable

        os.environ["PATH"] = str(java_executable().parent) + os.pathsep + os.environ["PATH"]
        gts, res = {}, {}
        for key, cand, refs in corpus(n, seed):
            gts[key] = [{"caption": r} for r in refs]
            res[key] = [{"caption": cand}]
        tok = PTBTokenizer()
        gts, res = tok.tokenize(gts), tok.tokenize(res)
        scores = {}
        if "bleu" in metrics:
            b, _ = Bleu(4).compute_score(gts, res, verbose=0)
            scores.update({f"bleu_{k + 1}": b[k] for k in range(4)})
        if "meteor" in metrics:
            scores["meteor"], _ = Meteor().compute_score(gts, res)
        if "rouge_l" in metrics:
            scores["rouge_l"], _ = Rouge().compute_score(gts, res)
        if "cider" in metrics:
            scores["cider"], _ = Cider().compute_score(gts, res)
        scores = {k: float(v) for k, v in scores.items()}
    return {
        "seconds": time.perf_counter() - t0,
        "rss": vmhwm_mib(),
        "java_rss": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024,
        "scores": scores,
    }


def spawn(method: str, n: int, seed: int, metrics: str) -> dict:
    cmd = [sys.executable, __file__, "--child", method, "--sizes", str(n), "--seed", str(seed)]
    cmd += ["--metrics", metrics]
    res = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if res.returncode != 0:
        raise RuntimeError(f"{method} n={n} failed:\n{res.stderr[-3000:]}")
    return json.loads(res.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--sizes", default="10000,100000", help="images per measurement")
    ap.add_argument("--repeats", type=int, default=3, help="runs at the smallest size (median)")
    ap.add_argument("--metrics", default="bleu,meteor,rouge_l,cider")
    ap.add_argument("--baseline-size", type=int, default=10000, help="0: no pycocoevalcap run")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--child", choices=("ours", "pycocoevalcap"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    sizes = [int(s) for s in args.sizes.split(",") if s.strip()]
    metrics = tuple(m.strip() for m in args.metrics.split(",") if m.strip())
    if args.child:
        print(json.dumps(run_child(args.child, sizes[0], args.seed, metrics)))
        return
    plan = [("ours", n, args.repeats if n == min(sizes) else 1) for n in sizes]
    if args.baseline_size:
        plan.append(("pycocoevalcap", args.baseline_size, 1))
    results = {}
    print(f"metrics: {', '.join(metrics)}; 5 references per image")
    print(
        f"{'method':14s} {'images':>8s} {'runs':>5s} {'seconds':>9s} {'ms/image':>9s} "
        f"{'peak RSS MiB':>13s} {'java peak MiB':>14s}"
    )
    for method, n, repeats in plan:
        runs = [spawn(method, n, args.seed, args.metrics) for _ in range(repeats)]
        sec = statistics.median(r["seconds"] for r in runs)
        rss = statistics.median(r["rss"] for r in runs)
        java = statistics.median(r["java_rss"] for r in runs)
        results[(method, n)] = runs[0]["scores"]
        print(
            f"{method:14s} {n:8d} {repeats:5d} {sec:9.1f} {1e3 * sec / n:9.2f} "
            f"{rss:13.1f} {java:14.1f}",
            flush=True,
        )
    if args.baseline_size and ("ours", args.baseline_size) in results:
        a, b = results[("ours", args.baseline_size)], results[("pycocoevalcap", args.baseline_size)]
        diffs = {k: abs(a[k] - b[k]) for k in b}
        print(
            f"max |ours - pycocoevalcap| at n={args.baseline_size}: "
            + ", ".join(f"{k} {v:.2g}" for k, v in diffs.items())
        )
    for (method, n), scores in results.items():
        print(f"{method} n={n}: " + ", ".join(f"{k} {v:.4f}" for k, v in scores.items()))


if __name__ == "__main__":
    main()
