"""Experiment and report commands."""

from __future__ import annotations

from pathlib import Path

import typer

from groundsynth.cli._common import console, friendly
from groundsynth.cli.evaluate import SWEEP_RAY_ADDRESS, SWEEP_RAY_CPUS

__all__ = ["register"]


@friendly
def report_cmd(
    run_dirs: list[Path] = typer.Argument(
        ..., help="Run directories: datasets, caption evaluations, benchmarks, experiments."
    ),
    out: Path = typer.Option(Path("report.html"), "--out", "-o", help="HTML file to write."),
    title: str = typer.Option("groundsynth report", help="Page title."),
) -> None:
    """Write one self-contained HTML report (figures embedded, no JavaScript) of run directories.

    The page opens with the findings: the question, the answer per task and domain with its
    95 % CI, the checks that qualify it (pass / warn) and what to run to tighten it. Then each
    directory becomes a section chosen by what it holds: a dataset gets its composition
    plots and sample grid, a caption evaluation its redundancy and consistency tables, a
    benchmark or experiment its results table. Grids show a few thumbnails whatever the
    dataset's size, so the page stays small.

    Example: `groundsynth report demo_out/dataset demo_out/captions_eval --out report.html`
    """
    from groundsynth.report import make_report

    path = make_report(run_dirs, out, title=title)
    console.print(f"report written to {path}")


experiment_app = typer.Typer(
    help="Experiments that answer one question each.", no_args_is_help=True
)


def _floats(text: str, what: str) -> tuple[float, ...]:
    try:
        vals = tuple(
            float(v.strip().rstrip("%")) / (100 if v.strip().endswith("%") else 1)
            for v in text.split(",")
            if v.strip()
        )
    except ValueError:
        raise typer.BadParameter(
            f"{what} expects comma-separated numbers or percentages, got {text!r}"
        ) from None
    return vals


def _seeds(text: str) -> tuple[int, ...]:
    """``3`` -> (0, 1, 2); ``0,5,7`` -> (0, 5, 7)."""
    parts = [p for p in text.split(",") if p.strip()]
    try:
        nums = tuple(int(p) for p in parts)
    except ValueError:
        raise typer.BadParameter(
            f"--seeds expects a count or a list of integers, got {text!r}"
        ) from None
    return tuple(range(nums[0])) if len(nums) == 1 else nums


@friendly
def transfer_cmd(
    source: Path = typer.Option(
        ...,
        "--source",
        "-a",
        help="Region A: the real dataset to learn from (train/val/test splits).",
    ),
    target: Path = typer.Option(
        ...,
        "--target",
        "-b",
        help="Region B: a real dataset of another region (its test split is scored).",
    ),
    out: Path = typer.Option(..., "--out", "-o", help="Experiment directory (rerun to resume)."),
    budgets: str = typer.Option(
        "10%,100%", help="Synthetic budgets as fractions or percentages of A's real training set."
    ),
    seeds: str = typer.Option("3", help="Number of seeds, or a comma-separated list."),
    archs: str = typer.Option("unet", help="Segmentation architectures, comma-separated."),
    preset: str = typer.Option(
        "small",
        help="Model sizes and steps: tiny (tests), small (CPU minutes), full (GPU, paper scale).",
    ),
    min_label_fidelity: float | None = typer.Option(
        None,
        help="Grounding filter: minimum per-sample mIoU between a grounded sample's map and the real-trained segmenter's reading (default: half the segmenter's own mIoU on real images, keeping at least the largest budget's worth).",
    ),
    family: str = typer.Option(
        "diffusion",
        help="Generator family: diffusion (grounded = the U-Net with the map as input, ungrounded = the same U-Net without it: grounding is the only difference) or gan (grounded = SPADE, as ARAS400k; ungrounded = diffusion).",
    ),
    guidance: float = typer.Option(
        1.0, help="family diffusion: classifier-free guidance scale when painting maps (1: none)."
    ),
    synthetic_only: bool = typer.Option(
        True,
        "--synthetic-only/--no-synthetic-only",
        help="Also train on synthetic data alone (two more regimes per budget).",
    ),
    oversample: float = typer.Option(
        1.5, help="Generate this many times the largest budget (the filter drops some)."
    ),
    target_split: str = typer.Option("test", help="Split of region B to score on."),
    max_epochs: int | None = typer.Option(None, help="Segmenter epochs (default: the preset's)."),
    generator_steps: int | None = typer.Option(
        None, help="Conditional generator steps (default: the preset's)."
    ),
    diffusion_steps: int | None = typer.Option(
        None,
        help="Diffusion model steps (default: the preset's). With the small preset the "
        "ungrounded model is a cascade whose base takes 10 cheap steps per step of its U-Net.",
    ),
    device: str = typer.Option(
        "auto", help="Device for generation and evaluation: auto, cpu, cuda[:N]."
    ),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="Show progress bars."),
    tasks: str = typer.Option(
        "segmentation",
        help="Downstream tasks, comma-separated: segmentation (always), retrieval (image–text "
        "retrieval with a CLIP-style dual encoder) and captioning (a ViT + GPT-2 captioner; "
        "needs Java for the COCO metrics: the [captioning] extra). For the last two every set "
        "is captioned from its maps or pseudo-labels by the template captioner unless it has "
        "captions.",
    ),
    retrieval_pretrained: str | None = typer.Option(
        None, help="Retrieval: dual encoder weights to start from (default: the preset's, random)."
    ),
    executor: str = typer.Option(
        "local",
        "--executor",
        help="Where models train: local (here, one after the other), processes (worker "
        "processes of --ray-cpus threads each, as many as the cores: the generators beside "
        "the real segmenters, then the benchmarks' runs side by side) or ray (the "
        "benchmarks' runs as Ray tasks).",
    ),
    ray_address: str | None = SWEEP_RAY_ADDRESS,
    ray_cpus: float = SWEEP_RAY_CPUS,
) -> None:
    """Does grounded augmentation beat ungrounded augmentation, in-domain and across regions?

    Trains a segmenter on real A; a map-conditioned generator on A's maps (grounded, then
    filtered by label fidelity) and an unconditional one on A's images (ungrounded,
    pseudo-labelled); checks that every model learned (segmenters against a per-pixel linear
    floor, generators against the real ceiling and real-halves FD); then,
    per budget and seed, segmenters on real / real + ungrounded / real + grounded / synthetic
    only, scored on A's test split and on B. Writes results.csv (means with 95 % CIs),
    differences.csv (grounded - ungrounded per seed: t-interval below 20 seeds, paired
    bootstrap from 20, sign-flip test) and experiment.json.

    Example: `groundsynth experiment transfer --source data/A --target data/B --budgets 10%,100% --seeds 3 --out exp/`
    """
    from rich.table import Table

    from groundsynth.experiment.stats import format_difference
    from groundsynth.experiment.transfer import TransferConfig, run_transfer

    cfg = TransferConfig(
        source=str(source), target=str(target), out=str(out), budgets=_floats(budgets, "--budgets"),
        seeds=_seeds(seeds), archs=tuple(a.strip() for a in archs.split(",") if a.strip()),
        preset=preset,  # type: ignore[arg-type]
        min_label_fidelity=min_label_fidelity, oversample=oversample, target_split=target_split,
        family=family, guidance=guidance, synthetic_only=synthetic_only,  # type: ignore[arg-type]
        max_epochs=max_epochs, generator_steps=generator_steps, diffusion_steps=diffusion_steps,
        device=device, progress=progress,
        tasks=tuple(t.strip() for t in tasks.split(",") if t.strip()),
        retrieval_pretrained=retrieval_pretrained,
        executor=executor, ray_address=ray_address, ray_cpus=ray_cpus,  # type: ignore[arg-type]
    )  # fmt: skip
    result = run_transfer(cfg)
    t = Table(title="macro F1 % (mean over seeds [95 % CI])", show_edge=False)
    for col in ("regime", "domain", "F1", "IoU"):
        t.add_column(col)
    for r in result["table"]:
        t.add_row(r["regime"], r["domain"], _ci(r, "f1"), _ci(r, "iou"))
    console.print(t)
    for d in result["differences"]:
        if d["metric"] == "f1":
            console.print(f"{d['domain']}: {d['comparison']}: {format_difference(d, 'F1 points')}")
    retrieval = (result.get("tasks") or {}).get("retrieval")
    if retrieval:
        for d in retrieval["differences"]:
            if d["metric"] == "mean_recall":
                line = format_difference(d, "mR points", scale=1.0)
                console.print(f"retrieval, {d['domain']}: {d['comparison']}: {line}")
        if not retrieval["learning"]["passed"]:
            console.print(
                "[bold yellow]retrieval runs that did not beat chance and their untrained "
                "model[/]: " + "; ".join(retrieval["learning"]["not_learned"])
            )
    captioning = (result.get("tasks") or {}).get("captioning")
    if captioning:
        for d in captioning["differences"]:
            if d["metric"] == "cider":
                line = format_difference(d, "CIDEr points")
                console.print(f"captioning, {d['domain']}: {d['comparison']}: {line}")
        if not captioning["learning"]["passed"]:
            console.print(
                "[bold yellow]captioning runs that did not beat the most frequent caption and "
                "their untrained model[/]: " + "; ".join(captioning["learning"]["not_learned"])
            )
    learning = result.get("learning") or {}
    if learning and not learning.get("passed"):
        console.print(
            "[bold yellow]learning checks failed[/]: "
            + "; ".join(learning.get("failed", []))
            + " — the comparison's conclusion is withheld (see experiment.json: learning)"
        )
    console.print(
        f"written: {out / 'results.csv'}, {out / 'differences.csv'}, {out / 'experiment.json'}"
    )


@friendly
def metric_utility_cmd(
    real: Path = typer.Option(
        ..., "--real", "-a", help="Region A: the real dataset (train/val/test splits)."
    ),
    generators: list[Path] = typer.Option(
        ...,
        "--generators",
        "-g",
        help="Generator run directories (train-generator outputs), repeat the option for each; "
        "their checkpoints give sets along training. Conditional runs make grounded sets, "
        "unconditional ones pseudo-labelled sets.",
    ),
    out: Path = typer.Option(..., "--out", "-o", help="Study directory (rerun to resume)."),
    target: Path | None = typer.Option(
        None, "--target", "-b", help="Region B: a real dataset of another region (cross-region)."
    ),
    segmenter: Path | None = typer.Option(
        None,
        help="A real-trained segmenter checkpoint (e.g. an experiment's "
        "benchmark/runs/unet/real/seed0/segmenter.pt); default: train one on A.",
    ),
    seeds: str = typer.Option("2", help="Number of seeds, or a comma-separated list."),
    budget: float = typer.Option(
        0.5, help="Samples per set, as a fraction of A's real training set."
    ),
    checkpoints: int = typer.Option(
        3, help="Checkpoints per generator run, evenly spaced, the last included (0: all)."
    ),
    targeted: str | None = typer.Option(
        "uniform",
        help="Class distribution of the composition-targeted set of each conditional "
        "generator (uniform, or e.g. 'Water=0.2, Built-up=0.2'); 'none' for no such set.",
    ),
    preset: str = typer.Option(
        "small", help="Segmenter size and steps: tiny (tests), small (CPU), full (GPU)."
    ),
    max_steps: int | None = typer.Option(
        None, help="Segmenter training steps (default: the preset's)."
    ),
    resamples: int = typer.Option(2000, help="Bootstrap resamples of the correlation CIs."),
    tasks: str = typer.Option(
        "segmentation",
        help="Utilities, comma-separated: segmentation (always; IoU gain) and retrieval (mean "
        "recall gain of a CLIP-style dual encoder on the sets' template captions; needs "
        "--target; about 20 s more per run on a CPU).",
    ),
    clip_model: str | None = typer.Option(
        None,
        help="CLIP for the CLIPScore metric: an open_clip name or config JSON (default: no "
        "CLIPScore).",
    ),
    clip_pretrained: str | None = typer.Option(
        None, help="Its weights: a local file or an open_clip tag."
    ),
    device: str = typer.Option(
        "auto", help="Device for generation and evaluation: auto, cpu, cuda[:N]."
    ),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="Show progress bars."),
) -> None:
    """Do the interpretable metrics predict what synthetic data adds?

    Builds a family of synthetic sets from the generator runs -- each checkpoint's samples,
    unfiltered and filtered (best by label fidelity or pseudo-label confidence), plus a
    composition-targeted set per conditional generator -- each of the same size. For each set:
    every metric the project has (label fidelity by the segmenter and by the pixel floor, FD /
    KID / precision / recall / density / coverage, a weight-free descriptor FD, composition
    JSD, caption↔image consistency and redundancy of its captions) and its utility: the gain
    in macro IoU of segmenters trained on real A + the set over real A alone, per seed, on A's
    test split and on B. Then Spearman and Kendall correlations of each metric with utility,
    with bootstrap CIs over sets and seeds, a leave-one-generator-out check, and the best
    single metric and pair. Writes metric_utility.json, sets.csv, gains_long.csv,
    correlations.csv and scatter_<domain>.png; `groundsynth report OUT` shows them.

    Cost (small preset, 2 generators x 3 checkpoints = 13 sets, 2 seeds, 64 px), measured
    on 2 idle CPU cores: 14 minutes (1,465 CPU-s, 1.3 GB peak memory) -- the sets and their
    metrics, then 28 segmenter runs of ~23 s against one pixel floor; with --max-steps 100
    the real-only segmenters fall below the pixel floor.

    Example: `groundsynth experiment metric-utility --real demo_out/regions/A --target demo_out/regions/B -g demo_out/experiment/generators/conditional-diffusion -g demo_out/experiment/generators/diffusion --segmenter demo_out/experiment/benchmark/runs/unet/real/seed0/segmenter.pt --out mu/`
    """
    from rich.table import Table

    from groundsynth.experiment.metric_utility import MetricUtilityConfig, run_metric_utility

    cfg = MetricUtilityConfig(
        real=str(real), generators=tuple(str(g) for g in generators), out=str(out),
        target=None if target is None else str(target),
        segmenter=None if segmenter is None else str(segmenter), preset=preset,  # type: ignore[arg-type]
        seeds=_seeds(seeds), budget=budget, checkpoints=checkpoints,
        targeted=None if targeted in (None, "", "none") else targeted, max_steps=max_steps,
        resamples=resamples, device=device, progress=progress,
        tasks=tuple(t.strip() for t in tasks.split(",") if t.strip()), clip_model=clip_model,
        clip_pretrained=clip_pretrained,
    )  # fmt: skip
    result = run_metric_utility(cfg)
    labels = {m: v["label"] for m, v in result["metrics"].items()}
    for domain in result["domains"]:
        t = Table(title=f"{domain}: rank correlation with the IoU gain", show_edge=False)
        for col in ("metric", "Spearman [95 % CI]", "Kendall", "LOGO"):
            t.add_column(col)
        rows = [r for r in result["correlations"] if r["domain"] == domain]
        rows.sort(
            key=lambda r: -(r["oriented_spearman"] if r["oriented_spearman"] is not None else -9)
        )
        for r in rows:
            t.add_row(labels.get(r["metric"], r["metric"]), _rho(r, "spearman"), _num(r["kendall"]),
                      _num(r["logo_concordance"]))  # fmt: skip
        console.print(t)
        best = (result["best"].get(domain) or {}).get("single") or {}
        if best.get("metric"):
            console.print(
                f"best single predictor, {domain}: {labels.get(best['metric'], best['metric'])} "
                f"(oriented ρ {_num(best.get('oriented_spearman'))})"
            )
    if not result["learning"]["passed"]:
        console.print(
            "[bold yellow]real segmenters below the pixel floor[/]: the gains measure "
            "segmenters that did not learn (see metric_utility.json: learning)"
        )
    console.print(f"written: {out / 'metric_utility.json'}, {out / 'correlations.csv'}")


def _num(x: float | None) -> str:
    return "n/a" if x is None or x != x else f"{x:+.2f}"


def _rho(row: dict, m: str) -> str:
    lo, hi = row.get(f"{m}_ci95_low"), row.get(f"{m}_ci95_high")
    ci = "" if lo is None or lo != lo else f" [{lo:+.2f}, {hi:+.2f}]"
    return _num(row.get(m)) + ci


def _ci(row: dict, m: str) -> str:
    mean, lo, hi = row[f"{m}_mean"], row[f"{m}_ci95_low"], row[f"{m}_ci95_high"]
    if mean != mean:
        return "n/a"
    return f"{100 * mean:.2f}" + (f" [{100 * lo:.2f}, {100 * hi:.2f}]" if lo == lo else "")


def register(app: typer.Typer) -> None:
    app.command("report")(report_cmd)
    experiment_app.command("transfer")(transfer_cmd)
    experiment_app.command("metric-utility")(metric_utility_cmd)
    app.add_typer(experiment_app, name="experiment")
