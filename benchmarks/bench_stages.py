"""Per-image cost of each per-image stage, end to end, for the capacity plan (docs/scaling.md).

Run: ``python benchmarks/bench_stages.py [--world 2048] [--patch 256] [--device auto]``

Builds a dataset from a sample world (``--world`` px, ``--patch`` px patches), then times
each stage through its public API on that dataset — file reading and writing, tables and
journals included — and divides by the images it handled:

- ``build``: rasters -> patches, masks, tables;
- ``caption (template, 5/image)``: the built-in captioner;
- ``pseudo-label``: the ``small`` preset's segmenter (U-Net, RegNetX-200MF encoder, 3 stages),
  random weights (cost does not depend on them);
- ``generate (diffusion U-Net)``: the ``small`` preset's map-conditioned U-Net, 10 sampler
  steps, painting the dataset's maps;
- ``evaluate synthetic``: label fidelity + feature fidelity + composition of those samples;
- ``retrieval embedding``: the tiny CLIP encoding each image and its 5 captions.

Each figure is the median of ``--repeats`` runs into fresh folders. It prints seconds per image
and the wall time each stage would take over ARAS400k (400,240 images; its 300,000 synthetic
ones for generate / evaluate) on 1, 8 and 64 workers like this one, assuming the work splits
evenly (the Ray executor runs one chunk per task). An 8B VLM captioner is not measured here
(no GPU): measure it with ``benchmarks/bench_caption_backends.py`` on the target GPU.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

ARAS_IMAGES = 400_240
ARAS_SYNTHETIC = 300_000
WORKERS = (1, 8, 64)


def _time(fn: Callable[[Path], int], root: Path, repeats: int) -> tuple[float, int]:
    """Median seconds per image of ``fn(fresh_dir) -> images`` over ``repeats`` runs."""
    per, n = [], 0
    for k in range(repeats):
        work = root / f"run{k}"
        t = time.perf_counter()
        n = fn(work)
        per.append((time.perf_counter() - t) / max(n, 1))
        shutil.rmtree(work, ignore_errors=True)
    return statistics.median(per), n


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--world", type=int, default=2048)
    ap.add_argument("--patch", type=int, default=256)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()

    import torch

    from groundsynth.benchmark.model import build_model, save_segmenter
    from groundsynth.caption.run import caption_dataset
    from groundsynth.caption.spec import CaptionRunConfig, StreamSpec
    from groundsynth.data.build import BuildConfig, build_dataset
    from groundsynth.data.reader import open_dataset
    from groundsynth.data.sample_world import SampleWorldConfig, make_sample_world
    from groundsynth.evaluate.synthetic import evaluate_synthetic
    from groundsynth.experiment.presets import PRESETS
    from groundsynth.generate.config import TrainConfig, model_config_from_dict
    from groundsynth.generate.pseudo_label import PseudoLabelConfig, pseudo_label
    from groundsynth.generate.sampling import GenerateConfig, generate_dataset
    from groundsynth.generate.training import train_generator

    small = PRESETS["small"]
    tmp = Path(tempfile.mkdtemp(prefix="bench_stages_"))
    figures: dict[str, dict[str, float]] = {}
    try:
        world = make_sample_world(tmp / "world", SampleWorldConfig(size=args.world, seed=0))

        def build(work: Path) -> int:
            cfg = BuildConfig(imagery=(str(world.imagery),), landcover=(str(world.landcover),),
                              out=str(work), size=args.patch, seed=0, workers=1, block_size=2)  # fmt: skip
            return sum(build_dataset(cfg).counts.values())

        figures["build"] = dict(
            zip(("s_per_image", "images"), _time(build, tmp / "b", args.repeats))
        )
        data = tmp / "data"
        build(data)
        n_images = sum(open_dataset(data).len(s) for s in open_dataset(data).splits())

        def caption(work: Path) -> int:
            shutil.copytree(data, work, ignore=shutil.ignore_patterns("captions"))
            caption_dataset(
                CaptionRunConfig(dataset=str(work), streams=(StreamSpec("text", "template"),), n=5)
            )
            return n_images

        figures["caption (template, 5/image)"] = dict(
            zip(("s_per_image", "images"), _time(caption, tmp / "c", args.repeats))
        )
        seg = small["segmenter"]
        torch.manual_seed(0)
        ckpt = tmp / "segmenter.pt"
        save_segmenter(ckpt, build_model("unet", encoder=seg["encoder"], encoder_depth=seg["encoder_depth"],
                                         decoder_width=seg["decoder_width"]), {"name": "small"})  # fmt: skip

        def label(work: Path) -> int:
            res = pseudo_label(
                PseudoLabelConfig(
                    dataset=str(data), model=str(ckpt), out=str(work), device=args.device
                )
            )
            return sum(res.counts.values())

        figures["pseudo-label"] = dict(
            zip(("s_per_image", "images"), _time(label, tmp / "p", args.repeats))
        )
        model = {**small["diffusion"]}
        run = tmp / "gen"
        train_generator(TrainConfig(kind="conditional-diffusion", dataset=str(data), out=str(run),
                                    image_size=args.patch, max_steps=1, batch_size=2, checkpoint_every=1,
                                    eval_every=0, model=model_config_from_dict("conditional-diffusion", model)),
                        progress=False)  # fmt: skip
        n_gen = 16

        def generate(work: Path) -> int:
            generate_dataset(
                GenerateConfig(model=str(run), out=str(work), n=n_gen, device=args.device)
            )
            return n_gen

        figures["generate (diffusion U-Net)"] = dict(
            zip(("s_per_image", "images"), _time(generate, tmp / "g", args.repeats))
        )
        synth = tmp / "synth"
        generate(synth)

        def evaluate(work: Path) -> int:
            evaluate_synthetic(
                data, synth, work, model=str(ckpt), device=args.device, umap=False, tsne=False
            )
            return n_gen

        figures["evaluate synthetic"] = dict(
            zip(("s_per_image", "images"), _time(evaluate, tmp / "e", args.repeats))
        )

        from groundsynth.benchmark.dual_encoder import DualEncoderSpec, build_dual_encoder
        from groundsynth.benchmark.pairs import PairSource
        from groundsynth.benchmark.retrieval_module import embed_pairs

        capt = tmp / "captioned"
        caption(capt)
        pairs = PairSource(capt).pairs("train")
        enc = build_dual_encoder(DualEncoderSpec(image_size=64, context_length=64))

        def embed(_: Path) -> int:
            embed_pairs(enc, pairs, batch_size=64)
            return pairs.n_images

        figures["retrieval embedding (tiny CLIP)"] = dict(
            zip(("s_per_image", "images"), _time(embed, tmp / "r", args.repeats))
        )
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    print(f"per-image cost, {args.patch} px, device {args.device}, {torch.get_num_threads()} threads "
          f"(median of {args.repeats})")  # fmt: skip
    head = "".join(f"{'ARAS on ' + str(k) + ' w':>14}" for k in WORKERS)
    print(f"{'stage':34}{'ms/image':>10}{'images/h':>12}{head}")
    for name, f in figures.items():
        n = ARAS_SYNTHETIC if name.startswith(("generate", "evaluate")) else ARAS_IMAGES
        hours = "".join(f"{n * f['s_per_image'] / k / 3600:>13.1f}h" for k in WORKERS)
        print(f"{name:34}{1000 * f['s_per_image']:>10.1f}{3600 / f['s_per_image']:>12.0f}{hours}")
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
