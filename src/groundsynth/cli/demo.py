"""``groundsynth demo``: the whole pipeline on the built-in sample world, one report."""

from __future__ import annotations

from pathlib import Path

import typer

from groundsynth.cli._common import console, friendly, progress_bar
from groundsynth.cli.data import _print_build

__all__ = ["register"]


@friendly
def demo_cmd(
    out: Path = typer.Option(
        Path("demo_out"), "--out", "-o", help="Where the demo writes everything."
    ),
    size: int = typer.Option(4096, help="Sample-world size of the 256-pixel dataset."),
    patch_size: int = typer.Option(256, help="Patch size of that dataset."),
    seed: int = typer.Option(0, help="Seed of the sample worlds and the splits."),
    workers: int = typer.Option(2, "--workers", "-j", help="Worker processes for the builds."),
    experiment: bool = typer.Option(
        True,
        "--experiment/--no-experiment",
        help="Run the grounded-vs-ungrounded experiment (generators, benchmark).",
    ),
    experiment_size: int = typer.Option(
        1536,
        help="Sample-world size of the experiment's two regions (1536: about 190 training "
        "and 30 test patches of 64 px each, after a 1-patch split buffer).",
    ),
    experiment_patch: int = typer.Option(64, help="Patch size of the experiment's datasets."),
    preset: str = typer.Option(
        "small", help="Experiment model sizes: tiny, small (default, CPU minutes) or full."
    ),
    seeds: int = typer.Option(3, help="Seeds of the experiment's segmentation runs."),
    family: str = typer.Option(
        "diffusion",
        help="Generator family of the experiment: diffusion (the same U-Net with and without the map) or gan (SPADE vs diffusion).",
    ),
    min_label_fidelity: float | None = typer.Option(
        None,
        help="Grounding filter of the experiment: minimum per-sample mIoU (default: half the segmenter's own mIoU on real images).",
    ),
    retrieval: bool = typer.Option(
        True,
        "--retrieval/--no-retrieval",
        help="Also compare grounded and ungrounded data on image–text retrieval (about 1.5 min).",
    ),
    parallel: bool = typer.Option(
        True,
        "--parallel/--no-parallel",
        help="Train the experiment's independent models at once in worker processes, one "
        "thread each, as many as the cores (from 2 cores on); --no-parallel trains them one "
        "after the other in this process.",
    ),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="Show progress bars."),
) -> None:
    """Run the whole pipeline on the built-in sample world and write one HTML report.

    Sample world -> 256-pixel dataset (build, validate) -> template captions and their
    evaluation -> the experiment on two small regions (real-trained segmenter, grounded and
    ungrounded diffusion synthetic data, synthetic-data evaluation, segmentation benchmark
    with seeds and CIs, in-domain and cross-region, the same for image–text retrieval,
    learning checks of every model against its floor) -> report. Cost: about 800
    CPU-seconds (7 minutes measured on 2 idle CPU cores with --parallel). Rerunning
    resumes.

    Example: `groundsynth demo --out demo_out`
    """
    import time

    from groundsynth.demo import DemoConfig, run_demo
    from groundsynth.experiment.stats import format_difference

    t0 = time.time()
    if experiment and preset == "small":
        console.print(
            "the demo trains about 40 small models: roughly 800 CPU-seconds (7 minutes on 2 "
            "idle cores, side by side in worker processes); --no-experiment runs only the data "
            "and caption steps"
        )
    cfg = DemoConfig(
        out=str(out), size=size, patch_size=patch_size, seed=seed, workers=workers,
        experiment=experiment, experiment_size=experiment_size, experiment_patch=experiment_patch,
        preset=preset, seeds=seeds, progress=progress, min_label_fidelity=min_label_fidelity,  # type: ignore[arg-type]
        family=family,  # type: ignore[arg-type]
        executor=None if parallel else "local",
        tasks=("segmentation", "retrieval") if retrieval else ("segmentation",),
    )  # fmt: skip
    with progress_bar(progress) as bar:
        task = bar.add_task("build", total=None, info="", visible=False)

        def build_progress(d: int, t: int, w: int) -> None:
            bar.update(task, completed=d, total=t, info=f"{w} patches", visible=True)

        summary = run_demo(
            cfg, step=lambda title: console.rule(f"[bold]{title}"), build_progress=build_progress
        )
    _print_build(summary["build"])
    console.print(summary["validation"].summary(limit=10), highlight=False, soft_wrap=True)
    caps = summary["captions"]
    pooled = caps["diversity"]["pooled"]
    cons = (caps.get("consistency") or {}).get("pooled") or {}
    console.print(
        f"{pooled['captions']} template captions: redundancy {100 * pooled['redundancy']:.2f} %, "
        f"consistent with the maps {100 * (cons.get('consistent_rate') or 0):.1f} %"
    )
    exp = summary.get("experiment")
    if exp:
        for d in exp["differences"]:
            if d["metric"] == "f1":
                console.print(
                    f"{d['domain']}: {d['comparison']}: {format_difference(d, 'F1 points')}"
                )
        learning = exp.get("learning") or {}
        checks = learning.get("checks") or []
        passed = sum(1 for c in checks if c.get("passed"))
        console.print(f"learning checks: {passed} of {len(checks)} passed")
        for c in checks:
            if not c.get("passed"):
                console.print(
                    f"  [yellow]✗ {c['model']}[/]: {c.get('figure')} vs {c.get('floor')} "
                    f"({c.get('rule')})"
                )
        if checks and not learning.get("passed"):
            console.print(
                "[yellow]the comparison's conclusion is withheld in the report: "
                "not every model learned past its floor[/]"
            )
        ret = (exp.get("tasks") or {}).get("retrieval")
        if ret:
            for d in ret["differences"]:
                if d["metric"] == "mean_recall":
                    line = format_difference(d, "mR points", scale=1.0)
                    console.print(f"retrieval, {d['domain']}: {d['comparison']}: {line}")
            missed = ret["learning"]["not_learned"]
            if missed:
                console.print(
                    f"  [yellow]{len(missed)} retrieval run(s) did not beat chance and their "
                    f"untrained model[/]: {'; '.join(missed)}"
                )
            else:
                console.print("every retrieval run beat chance and its untrained model")
    console.rule("[bold]done")
    console.print(f"report: {summary['report']}  ({time.time() - t0:.0f} s)")


def register(app: typer.Typer) -> None:
    app.command("demo")(demo_cmd)
