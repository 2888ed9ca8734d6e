"""Caption back-end and caption-run figures.

Run: ``python benchmarks/bench_caption_backends.py [--requests 400] [--images 2000] [--quick]``

Prints:

1. ``openai`` captioner throughput (captions/s) against the loopback chat-completions
   server of the tests (``tests/caption/chat_server.py``), concurrency 1 vs 8, with a server
   answering at once (client overhead: JSON, PNG data URLs, HTTP) and after 50 ms (a
   latency-bound server, as a remote VLM is);
2. ``groundsynth caption`` end to end with the template back end over a dataset of 256×256
   images (mask reading, facts, captions, fsync'd journal, table rebuild): images/s, then
   the time of a rerun that finds everything done (resume cost).
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # for tests.caption.*

from tests.caption.chat_server import ChatServer  # noqa: E402
from tests.caption.dataset import make_dataset  # noqa: E402
from tests.caption.masks import random_masks  # noqa: E402

from groundsynth.caption import CaptionJob, caption_jobs, facts_from_mask  # noqa: E402
from groundsynth.caption.openai_backend import OpenAICaptioner  # noqa: E402
from groundsynth.caption.run import CaptionRunConfig, caption_dataset  # noqa: E402


def bench_openai(requests: int, delay: float, concurrency: int, stream: str) -> float:
    masks = list(random_masks(min(requests, 200), 64, seed=1))
    rng = np.random.default_rng(0)
    jobs = [
        CaptionJob(
            facts_from_mask(masks[i % len(masks)], f"img{i}"),
            rng.integers(0, 256, (256, 256, 3), dtype=np.uint8) if stream != "text" else None,
            f"img{i}",
        )
        for i in range(requests)
    ]
    with ChatServer(delay=delay, lifetime=600) as srv:
        cap = OpenAICaptioner(
            model="fake", stream=stream, base_url=srv.base_url, concurrency=concurrency
        )
        with cap:
            caption_jobs(cap, jobs[:8])  # warm up the connection pool
            t = time.perf_counter()
            results = []
            for i in range(0, len(jobs), 64):
                results += caption_jobs(cap, jobs[i : i + 64])
            dt = time.perf_counter() - t
    assert all(r.ok for r in results)
    return len(jobs) / dt


def bench_run(images: int) -> tuple[float, float]:
    tmp = Path(tempfile.mkdtemp(prefix="bench_caption_run_"))
    try:
        root = make_dataset(tmp / "ds", {"train": images}, px=256)
        cfg = CaptionRunConfig(str(root), batch_size=64)
        t = time.perf_counter()
        caption_dataset(cfg)
        first = time.perf_counter() - t
        t = time.perf_counter()
        caption_dataset(cfg)
        again = time.perf_counter() - t
        return images / first, again
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--requests", type=int, default=400)
    ap.add_argument("--images", type=int, default=2000)
    ap.add_argument("--quick", action="store_true", help="160 requests, 300 images")
    args = ap.parse_args()
    if args.quick:
        args.requests, args.images = 160, 300
    for delay in (0.0, 0.05):
        for stream in ("text", "hybrid"):
            rates = {c: bench_openai(args.requests, delay, c, stream) for c in (1, 8)}
            print(
                f"openai back end, {stream} stream (256x256 PNG data URLs: {stream != 'text'}), "
                f"server latency {delay * 1e3:.0f} ms, {args.requests} requests: "
                f"concurrency 1: {rates[1]:,.0f} captions/s, concurrency 8: {rates[8]:,.0f} "
                f"captions/s (x{rates[8] / rates[1]:.1f})"
            )
    rate, again = bench_run(args.images)
    print(
        f"caption run, template back end, {args.images} 256x256 images: {rate:,.0f} images/s "
        f"end to end; rerun with all done: {again:.2f} s"
    )


if __name__ == "__main__":
    main()
