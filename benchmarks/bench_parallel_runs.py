"""Two trainings at once in worker processes vs one after the other with every thread.

The transfer experiment (and so ``groundsynth demo``) trains its independent small models --
the segmenters, the generators, the retrieval models -- on the ``processes`` executor:
worker processes of one thread each. This script measures why: two jobs of ``--steps``
training steps of the ``small`` preset's segmenter (batch 16 x 64 px) or its diffusion U-Net
(batch 8 x 64 px), run

- one after the other in this process with ``--threads`` torch threads (the baseline), and
- at once, one per worker process of one thread (:class:`groundsynth.process_pool.ProcessExecutor`;
  the workers are started and warmed before the clock starts),

and prints the median wall time of each over ``--repeats`` and their ratio, measured in the
same run. Run it on an otherwise idle machine.

    python benchmarks/bench_parallel_runs.py [--model segmenter|diffusion] [--steps 20]
"""

from __future__ import annotations

import argparse
import time

from _common import median_time


def train_steps(job: tuple[str, int, int]) -> float:
    """``steps`` training steps of ``model`` (seeded by ``seed``); returns the seconds."""
    import torch
    import torch.nn.functional as F

    from groundsynth.experiment.presets import PRESETS

    model, steps, seed = job
    torch.manual_seed(seed)
    small = PRESETS["small"]
    if model == "segmenter":
        from groundsynth.benchmark.model import build_model

        seg = small["segmenter"]
        net = build_model("unet", seg["encoder"], encoder_depth=seg["encoder_depth"],
                          decoder_width=seg["decoder_width"])  # fmt: skip
        x = torch.rand(16, 3, 64, 64)
        y = torch.randint(0, 7, (16, 64, 64))

        def loss() -> torch.Tensor:
            return F.cross_entropy(net(x), y)
    else:
        from groundsynth.generate.diffusion import DiffusionConfig, build_unet

        net = build_unet(DiffusionConfig(**small["diffusion"]), 64)
        x = torch.rand(8, 3, 64, 64)
        t = torch.randint(0, 100, (8,))

        def loss() -> torch.Tensor:
            return F.mse_loss(net(x, t).sample, x)

    opt = torch.optim.AdamW(net.parameters(), 1e-3)
    start = time.perf_counter()
    for _ in range(steps):
        value = loss()
        opt.zero_grad()
        value.backward()
        opt.step()
    return time.perf_counter() - start


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", choices=("segmenter", "diffusion"), default="segmenter")
    ap.add_argument("--steps", type=int, default=20, help="training steps per job")
    ap.add_argument("--threads", type=int, default=2, help="torch threads of the baseline")
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()

    import torch

    from groundsynth.process_pool import ProcessExecutor

    torch.set_num_threads(args.threads)
    jobs = [(args.model, args.steps, seed) for seed in (0, 1)]
    serial = median_time(lambda: [train_steps(j) for j in jobs], repeats=args.repeats)
    with ProcessExecutor(num_cpus=1, workers=2) as pool:
        warm = [(args.model, 1, seed) for seed in (0, 1)]
        list(pool.map_unordered(train_steps, warm))  # start the workers, import torch there
        parallel = median_time(
            lambda: list(pool.map_unordered(train_steps, jobs)), repeats=args.repeats
        )
    print(f"two jobs of {args.steps} {args.model} training steps "
          f"(median of {args.repeats} after a warm-up)")  # fmt: skip
    print(f"  one after the other, {args.threads} threads  {serial:7.2f} s")
    print(f"  at once, 2 processes x 1 thread   {parallel:7.2f} s")
    print(f"  at once / one after the other: {parallel / serial:.2f}x time")


if __name__ == "__main__":
    main()
