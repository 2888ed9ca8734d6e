"""The demo: the whole pipeline on the built-in sample world, in minutes on a laptop CPU.

1. two sample-world regions: A (temperate) and B (arid, another seed);
2. build A's 256² patch dataset (the ARAS400k format) and validate it;
3. caption it with the template captioner (5 per image) and evaluate the captions;
4. the experiment on small 64² patch datasets of A and B: a real-trained segmenter, a
   map-conditioned diffusion U-Net (grounded, filtered by label fidelity), the same U-Net
   without the map (ungrounded, pseudo-labelled), synthetic-data evaluation, a segmentation
   benchmark (real, real + grounded, real + ungrounded) with three seeds, scored in-domain and
   across regions, the same regimes for image–text retrieval (a tiny CLIP trained on the
   sets' template captions), and the learning checks of every model against its floor;
5. one HTML report of all of it.

Each step writes its own run directory under ``out`` and is skipped or resumed on a rerun.
Every number in the report comes from this run.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from groundsynth.errors import GroundsynthError

__all__ = ["DemoConfig", "run_demo"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DemoConfig:
    """Sizes of the demo. The defaults take about 8.5 minutes on 2 idle CPU cores."""

    out: str = "demo_out"
    size: int = 4096  # sample world of the 256² dataset
    patch_size: int = 256
    seed: int = 0
    workers: int = 2
    experiment: bool = True
    experiment_size: int = 1536  # sample worlds of the experiment's regions
    experiment_patch: int = 64
    preset: Literal["tiny", "small", "full"] = "small"
    family: Literal["diffusion", "gan"] = "diffusion"
    seeds: int = 3
    #: regimes trained on synthetic data alone (two more per seed) -- off to stay in budget
    synthetic_only: bool = False
    tasks: tuple[str, ...] = ("segmentation", "retrieval")
    min_label_fidelity: float | None = None  # default: relative to the segmenter (experiment)
    #: where the experiment's models train: "processes" (worker processes, one thread each, as
    #: many as the cores) or "local" (one after the other); None: processes from 2 cores on
    executor: str | None = None
    progress: bool = True

    def resolved_executor(self) -> str:
        from groundsynth.process_pool import usable_cpus

        if self.executor is not None:
            return self.executor
        return "processes" if usable_cpus() >= 2 else "local"


Step = Callable[[str], None]


def _region(
    out: Path, name: str, size: int, patch: int, seed: int, region: str, workers: int
) -> Path:
    from groundsynth.data.build import BuildConfig, build_dataset
    from groundsynth.data.sample_world import SampleWorldConfig, make_sample_world

    world = make_sample_world(
        out / f"world_{name}", SampleWorldConfig(size=size, seed=seed, region=region)
    )  # type: ignore[arg-type]
    cfg = BuildConfig(
        imagery=(str(world.imagery),), landcover=(str(world.landcover),), out=str(out / name),
        size=patch, seed=seed, workers=workers, block_size=3, buffer=1,
    )  # fmt: skip
    return build_dataset(cfg).out


def run_demo(
    config: DemoConfig, *, step: Step | None = None, build_progress: Any = None
) -> dict[str, Any]:
    """Run the demo; ``step(title)`` is called as each step starts. Returns a summary."""
    from groundsynth.caption.run import caption_dataset
    from groundsynth.caption.spec import CaptionRunConfig, StreamSpec
    from groundsynth.data.build import BuildConfig, build_dataset
    from groundsynth.data.sample_world import SampleWorldConfig, make_sample_world
    from groundsynth.data.validate import validate_dataset
    from groundsynth.evaluate.captions import evaluate_captions
    from groundsynth.report import make_report

    say = step or (lambda title: log.info("demo: %s", title))
    out = Path(config.out)
    summary: dict[str, Any] = {}

    say("1. sample world")
    world = make_sample_world(out / "world", SampleWorldConfig(size=config.size, seed=config.seed))
    summary["world"] = {"landcover": str(world.landcover), "imagery": str(world.imagery)}

    say("2. build and validate the 256² dataset")
    built = build_dataset(
        BuildConfig(
            imagery=(str(world.imagery),), landcover=(str(world.landcover),), out=str(out / "dataset"),
            size=config.patch_size, seed=config.seed, workers=config.workers, block_size=2, buffer=1,
        ),
        progress=build_progress,
    )  # fmt: skip
    summary["build"] = built
    report = validate_dataset(built.out)
    summary["validation"] = report
    if not report.ok:
        raise GroundsynthError(f"the demo dataset failed validation:\n{report.summary(limit=10)}")

    say("3. captions")
    caption_dataset(
        CaptionRunConfig(
            dataset=str(built.out), streams=(StreamSpec("text", "template"),), n=5, seed=config.seed
        )
    )
    cap_eval = out / "captions_eval"
    summary["captions"] = evaluate_captions(built.out, cap_eval)
    runs = [built.out, cap_eval]

    if config.experiment:
        say("4. experiment: grounded vs ungrounded augmentation, in-domain and across regions")
        from groundsynth.experiment.transfer import TransferConfig, run_transfer

        regions = out / "regions"
        a = _region(
            regions,
            "A",
            config.experiment_size,
            config.experiment_patch,
            config.seed,
            "temperate",
            config.workers,
        )
        b = _region(
            regions,
            "B",
            config.experiment_size,
            config.experiment_patch,
            config.seed + 1,
            "arid",
            config.workers,
        )
        exp_dir = out / "experiment"
        summary["experiment"] = run_transfer(
            TransferConfig(
                source=str(a), target=str(b), out=str(exp_dir), budgets=(1.0,),
                seeds=tuple(range(config.seeds)), preset=config.preset, progress=config.progress,
                min_label_fidelity=config.min_label_fidelity, family=config.family,
                synthetic_only=config.synthetic_only, tasks=config.tasks,
                executor=config.resolved_executor(),  # type: ignore[arg-type]
            )
        )  # fmt: skip
        runs += [a, b, exp_dir]  # the regions' datasets, then the experiment and its evaluations

    say("5. report")
    summary["report"] = make_report(runs, out / "report.html", title="groundsynth demo")
    return summary
