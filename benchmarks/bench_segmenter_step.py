"""Training-step time of the experiment's segmenter: contiguous (NCHW) vs channels-last (NHWC).

The ``small`` preset's U-Net (timm RegNetX-200MF encoder, 3 stages, decoder width 8) on a batch
of 16 images of 64 px, cross-entropy and AdamW, on the CPU with the threads torch was given.
:class:`~groundsynth.benchmark.model.Segmenter` keeps its network and inputs channels-last;
the baseline converts both back to the contiguous layout. Prints the median ms per step of each
layout and their ratio, measured in the same run, and checks that both give the same logits.

    python benchmarks/bench_segmenter_step.py [--batch 16] [--size 64] [--repeats 7]
"""

from __future__ import annotations

import argparse

from _common import median_time


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--steps", type=int, default=5, help="training steps per timed repeat")
    args = ap.parse_args()

    import torch
    import torch.nn.functional as F

    from groundsynth.benchmark.model import build_model
    from groundsynth.experiment.presets import PRESETS

    seg = PRESETS["small"]["segmenter"]
    g = torch.Generator().manual_seed(0)
    images = torch.rand(args.batch, 3, args.size, args.size, generator=g)
    masks = torch.randint(0, 7, (args.batch, args.size, args.size), generator=g)

    def model(channels_last: bool):
        torch.manual_seed(0)
        m = build_model("unet", seg["encoder"], encoder_depth=seg["encoder_depth"],
                        decoder_width=seg["decoder_width"])  # fmt: skip
        if not channels_last:
            m.net.to(memory_format=torch.contiguous_format)
        return m

    def forward(m, channels_last: bool):
        if channels_last:
            return m(images)
        x = ((images - m.mean) / m.std).contiguous()
        return m.net(x)

    def steps(m, channels_last: bool):
        opt = torch.optim.AdamW(m.parameters(), 1e-3)

        def run() -> None:
            for _ in range(args.steps):
                loss = F.cross_entropy(forward(m, channels_last), masks)
                opt.zero_grad()
                loss.backward()
                opt.step()

        return run

    a, b = model(False), model(True)
    with torch.no_grad():
        same = torch.allclose(forward(a, False), forward(b, True), atol=1e-4)
    times = {}
    for name, cl in (("contiguous (NCHW)", False), ("channels-last (NHWC)", True)):
        times[name] = median_time(steps(model(cl), cl), repeats=args.repeats) / args.steps
    print(f"segmenter training step, batch {args.batch} x {args.size} px, "
          f"{torch.get_num_threads()} threads (median of {args.repeats} x {args.steps} steps)")  # fmt: skip
    for name, t in times.items():
        print(f"  {name:<22} {1000 * t:7.1f} ms/step")
    base = times["contiguous (NCHW)"]
    print(f"  channels-last / contiguous: {times['channels-last (NHWC)'] / base:.2f}x time")
    print(f"  same logits before training: {same}")


if __name__ == "__main__":
    main()
