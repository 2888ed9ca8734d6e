"""Training-step time of the experiment's diffusion U-Net: contiguous (NCHW) vs channels-last.

The ``small`` preset's diffusers ``UNet2DModel`` (the unconditional generator; the grounded
one adds 7 map channels to its input) on a batch of 8 images of 64 px, v-prediction MSE and
AdamW, on the CPU with ``--threads`` torch threads. ``train-generator`` switches channels-last
on with ``channels_last="on"`` (``auto``: CUDA only); the transfer experiment's ``small``
preset sets it from these figures. Prints the median ms per step of each layout and their
ratio, measured in the same run, and checks that both give the same output.

    python benchmarks/bench_generator_step.py [--threads 1] [--repeats 5]
"""

from __future__ import annotations

import argparse

from _common import median_time


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--steps", type=int, default=5, help="training steps per timed repeat")
    args = ap.parse_args()

    import torch
    import torch.nn.functional as F

    from groundsynth.experiment.presets import PRESETS
    from groundsynth.generate.diffusion import DiffusionConfig, build_unet

    torch.set_num_threads(args.threads)
    cfg = DiffusionConfig(**PRESETS["small"]["diffusion"])
    g = torch.Generator().manual_seed(0)
    x = torch.rand(args.batch, 3, args.size, args.size, generator=g)
    t = torch.randint(0, cfg.num_train_timesteps, (args.batch,), generator=g)

    def model(channels_last: bool):
        torch.manual_seed(0)
        net = build_unet(cfg, args.size)
        if channels_last:
            net.to(memory_format=torch.channels_last)
        return net

    def inputs(channels_last: bool):
        return x.contiguous(memory_format=torch.channels_last) if channels_last else x

    def steps(net, channels_last: bool):
        opt = torch.optim.AdamW(net.parameters(), 1e-3)
        inp = inputs(channels_last)

        def run() -> None:
            for _ in range(args.steps):
                loss = F.mse_loss(net(inp, t).sample, x)
                opt.zero_grad()
                loss.backward()
                opt.step()

        return run

    with torch.no_grad():
        same = torch.allclose(
            model(False)(inputs(False), t).sample, model(True)(inputs(True), t).sample, atol=1e-4
        )
    times = {}
    for name, cl in (("contiguous (NCHW)", False), ("channels-last (NHWC)", True)):
        times[name] = median_time(steps(model(cl), cl), repeats=args.repeats) / args.steps
    print(f"diffusion U-Net training step, batch {args.batch} x {args.size} px, "
          f"{torch.get_num_threads()} threads (median of {args.repeats} x {args.steps} steps)")  # fmt: skip
    for name, sec in times.items():
        print(f"  {name:<22} {1000 * sec:7.1f} ms/step")
    base = times["contiguous (NCHW)"]
    print(f"  channels-last / contiguous: {times['channels-last (NHWC)'] / base:.2f}x time")
    print(f"  same output before training: {same}")


if __name__ == "__main__":
    main()
