"""Segmentation metrics: groundsynth's streaming confusion matrix vs the reference scripts'
approach (concatenate every prediction and target, then scikit-learn).

Simulated 256x256 test predictions (blocky land-cover-like targets with a skewed class
balance, 25 % of pixels predicted wrong; no ignored pixels, as in ARAS400k's masks) are
generated batch by batch from a seed, so both methods see the same data without it being
stored first. Each method runs in its own child process, which
reports its peak resident memory from ``/proc/self/status`` (``VmHWM``; ``ru_maxrss`` would
include the parent's, inherited across exec on Linux), the seconds spent in metric work
(data generation excluded) and its scores. Prints medians over ``--repeats`` runs, the
speed-up and the largest difference between the two methods' scores.

The baseline is given its best case: one ``precision_recall_fscore_support`` call (instead of
one call per metric), one ``jaccard_score`` and one ``accuracy_score``; predictions are kept
as int64, what ``argmax`` returns.

Usage: python benchmarks/bench_metrics.py [--n 2000] [--big 10024] [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

BATCH = 32
METHODS = ("ours", "ours-torch", "reference")


def vmhwm_mib() -> float:
    """Peak resident set size of this process so far, MiB (Linux)."""
    text = Path("/proc/self/status").read_text()
    return int(re.search(r"VmHWM:\s+(\d+)\s+kB", text).group(1)) / 1024


def batches(n: int, size: int, seed: int):
    """Yield ``(pred, target)`` int64 batches of simulated predictions, deterministic."""
    probs = np.array([0.22, 0.08, 0.25, 0.25, 0.05, 0.05, 0.10])
    block = 16
    for start in range(0, n, BATCH):
        b = min(BATCH, n - start)
        rng = np.random.default_rng([seed, start])
        coarse = rng.choice(7, size=(b, size // block, size // block), p=probs)
        target = coarse.repeat(block, axis=1).repeat(block, axis=2).astype(np.int64)
        wrong = rng.random(target.shape) < 0.25
        pred = np.where(wrong, rng.choice(7, size=target.shape, p=probs), target)
        yield pred, target


def run_child(method: str, n: int, size: int, seed: int) -> dict:
    """Compute the metrics with ``method``; return timings, memory and scores."""
    from groundsynth.classes import CLASS_NAMES

    if method == "reference":
        from sklearn.metrics import accuracy_score, jaccard_score, precision_recall_fscore_support
    else:
        from groundsynth.benchmark.metrics import confusion_update, metrics_from_confusion

        if method == "ours-torch":
            import torch
    after_import = vmhwm_mib()
    spent = 0.0
    t_all = time.perf_counter()
    if method == "reference":
        preds, targets = [], []
        for pred, target in batches(n, size, seed):
            t = time.perf_counter()
            preds.append(pred.reshape(-1))
            targets.append(target.reshape(-1))
            spent += time.perf_counter() - t
        t = time.perf_counter()
        y = np.concatenate(targets)
        p = np.concatenate(preds)
        del preds, targets
        prec, rec, f1, _ = precision_recall_fscore_support(y, p, average=None, zero_division=0)
        iou = jaccard_score(y, p, average=None, zero_division=0)
        acc = accuracy_score(y, p)
        labels = np.union1d(np.unique(y), np.unique(p))
        spent += time.perf_counter() - t
        scores = {"accuracy": float(acc)}
        for name, per in (("f1", f1), ("iou", iou), ("precision", prec), ("recall", rec)):
            scores[name] = float(np.mean(per))
            scores.update({f"{name}/{CLASS_NAMES[c]}": float(v) for c, v in zip(labels, per)})
    else:
        cm = np.zeros((7, 7), dtype=np.int64)
        for pred, target in batches(n, size, seed):
            if method == "ours-torch":
                pred, target = torch.from_numpy(pred), torch.from_numpy(target)
            t = time.perf_counter()
            update = confusion_update(pred, target)
            cm += update.numpy() if method == "ours-torch" else update
            spent += time.perf_counter() - t
        t = time.perf_counter()
        scores = metrics_from_confusion(cm)
        spent += time.perf_counter() - t
    return {
        "method": method,
        "n": n,
        "metric_seconds": spent,
        "total_seconds": time.perf_counter() - t_all,
        "vmhwm_mib": vmhwm_mib(),
        "after_import_mib": after_import,
        "scores": scores,
    }


def spawn(method: str, n: int, size: int, seed: int) -> dict:
    cmd = [sys.executable, __file__, "--child", method, "--n", str(n), "--size", str(size)]
    cmd += ["--seed", str(seed)]
    res = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if res.returncode != 0:
        raise RuntimeError(f"{method} n={n} failed:\n{res.stderr[-3000:]}")
    return json.loads(res.stdout.strip().splitlines()[-1])


def measure(method: str, n: int, size: int, seed: int, repeats: int) -> dict:
    runs = [spawn(method, n, size, seed) for _ in range(repeats)]
    return {
        "method": method,
        "n": n,
        "seconds": statistics.median(r["metric_seconds"] for r in runs),
        "rss": statistics.median(r["vmhwm_mib"] for r in runs),
        "import_rss": statistics.median(r["after_import_mib"] for r in runs),
        "scores": runs[0]["scores"],
        "repeats": repeats,
    }


def max_difference(a: dict, b: dict) -> tuple[float, str]:
    worst, key = 0.0, ""
    for k, v in b.items():
        if k not in a:
            continue
        d = abs(a[k] - v)
        if d > worst:
            worst, key = d, k
    return worst, key


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument(
        "--n", type=int, default=2000, help="test predictions compared with the reference"
    )
    ap.add_argument("--big", type=int, default=10024, help="predictions for ours alone (ARAS test)")
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--repeats", type=int, default=3, help="runs per measurement (median)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--child", choices=METHODS, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        print(json.dumps(run_child(args.child, args.n, args.size, args.seed)))
        return

    small = max(args.n // 4, BATCH)
    rows = []
    for method, sizes in (
        ("ours", (small, args.n, args.big)),
        ("ours-torch", (args.n,)),
        ("reference", (small, args.n // 2, args.n)),
    ):
        for n in sizes:
            rows.append(measure(method, n, args.size, args.seed, args.repeats))
            r = rows[-1]
            print(
                f"  measured {method:10s} n={n:6d}: {r['seconds']:8.3f} s, peak RSS {r['rss']:8.1f} MiB",
                flush=True,
            )
    by = {(r["method"], r["n"]): r for r in rows}
    ours, ref = by[("ours", args.n)], by[("reference", args.n)]
    diff, key = max_difference(ours["scores"], ref["scores"])
    diff_t, key_t = max_difference(by[("ours-torch", args.n)]["scores"], ref["scores"])
    print()
    print(f"{args.size}x{args.size} simulated predictions, median of {args.repeats} runs each")
    print(
        f"{'method':12s} {'images':>7s} {'metric s':>9s} {'ms/image':>9s} {'peak RSS MiB':>13s} {'after imports':>14s}"
    )
    for r in rows:
        print(
            f"{r['method']:12s} {r['n']:7d} {r['seconds']:9.3f} {1e3 * r['seconds'] / r['n']:9.3f} "
            f"{r['rss']:13.1f} {r['import_rss']:14.1f}"
        )
    print()
    print(
        f"identical values (n={args.n}): max |ours - sklearn| = {diff:.3g} ({key or 'all equal'})"
    )
    print(
        f"  torch path:                   max |ours - sklearn| = {diff_t:.3g} ({key_t or 'all equal'})"
    )
    print(f"speed-up at n={args.n}: {ref['seconds'] / ours['seconds']:.1f}x (metric work only)")
    print(
        f"peak RSS ours: {by[('ours', small)]['rss']:.0f} / {ours['rss']:.0f} / "
        f"{by[('ours', args.big)]['rss']:.0f} MiB at n={small} / {args.n} / {args.big} (flat)"
    )
    print(
        f"peak RSS reference: {by[('reference', small)]['rss']:.0f} / "
        f"{by[('reference', args.n // 2)]['rss']:.0f} / {ref['rss']:.0f} MiB at "
        f"n={small} / {args.n // 2} / {args.n} (grows with n)"
    )
    print(f"macro F1 / IoU (n={args.n}): {ours['scores']['f1']:.6f} / {ours['scores']['iou']:.6f}")


if __name__ == "__main__":
    main()
