"""``groundsynth experiment transfer``: does grounded augmentation beat ungrounded augmentation,
in-domain and across regions?

With region A's real dataset (``source``) and region B's (``target``):

1. a segmenter is trained on real A (the benchmark's ``real`` run of the first seed); it
   verifies grounded samples and pseudo-labels ungrounded ones;
2. grounded synthetic data: a map-conditioned generator trained on A paints A's training
   maps (augmented layouts) -- with ``family="diffusion"`` (default) a diffusers U-Net that
   sees the map as input channels (``conditional-diffusion``), with ``family="gan"`` SPADE
   (as ARAS400k's tooling); samples whose image the segmenter does not read back as their map
   are dropped — per-sample mIoU below ``min_label_fidelity``, or by default below half the
   segmenter's own mean mIoU on real images (kept at least the largest budget's worth, the
   best ones) — so the map is known *and* verified;
3. ungrounded synthetic data: an unconditional diffusion model trained on A's images (with
   ``family="diffusion"`` the same U-Net and schedule as the grounded one, without the map, so
   grounding is the only difference); its samples get the segmenter's pseudo-labels,
   unchecked (what ARAS400k's synthetic split is);
4. for each synthetic budget (a fraction of A's real training set) and seed, segmenters are
   trained on real A; real A + ungrounded; real A + grounded; grounded only; ungrounded only —
   and tested on A's test split (in-domain) and on B (cross-region);
5. learning checks (:mod:`.learning`): every real-trained segmenter against the pixel
   floor, the grounded generator's label fidelity against the real ceiling, both generators'
   feature fidelity against two halves of the real set; when one fails, the comparison's
   conclusion is withheld in the report (``experiment.json`` ``learning``);
6. the table: means with 95 % CIs over seeds, and grounded − ungrounded paired by seed, with a
   95 % CI (t-interval below 20 seeds, paired bootstrap from 20; the bootstrap interval is
   always given too), seeds won and an exact sign-flip p-value (see :mod:`.stats`).

Every step writes its own run directory under ``out`` and is skipped when already finished, so
rerunning the command resumes. ``executor="processes"`` trains the independent models at once
in worker processes (see :mod:`.parallel`). The synthetic sets and B are exposed to the benchmark through
``out/pool`` (links to their split folders): ``synthetic/grounded``, ``synthetic/ungrounded``
and ``synthetic/target``.
"""

from __future__ import annotations

import json
import logging
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import pandas as pd

from groundsynth.data.reader import open_dataset
from groundsynth.distributed import EXECUTORS, check_executor_options
from groundsynth.errors import InputError
from groundsynth.experiment.parallel import at_once, workers
from groundsynth.experiment.presets import PRESETS, Preset
from groundsynth.experiment.tables import results_tables
from groundsynth.io import write_json, write_text
from groundsynth.runs import start_run

__all__ = ["PRESETS", "TransferConfig", "run_transfer"]

log = logging.getLogger(__name__)


#: generator family -> (grounded kind, ungrounded kind)
FAMILIES: dict[str, tuple[str, str]] = {
    "diffusion": ("conditional-diffusion", "diffusion"),
    "gan": ("conditional", "diffusion"),
}

#: Downstream tasks the experiment can compare grounded and ungrounded data on.
TASKS: tuple[str, ...] = ("segmentation", "retrieval", "captioning")


@dataclass(frozen=True)
class TransferConfig:
    """Options of :func:`run_transfer` (saved as ``config.yaml``)."""

    source: str
    target: str
    out: str
    budgets: tuple[float, ...] = (0.1, 1.0)
    seeds: tuple[int, ...] = (0, 1, 2)
    archs: tuple[str, ...] = ("unet",)
    preset: Preset = "small"
    family: Literal["diffusion", "gan"] = "diffusion"
    synthetic_only: bool = True
    map_dropout: float = 0.1
    guidance: float = 1.0
    target_split: str = "test"
    layouts: Literal["train-masks", "augmented"] = "augmented"
    min_label_fidelity: float | None = None
    label_fidelity_ratio: float = 0.5
    oversample: float = 1.5
    encoder_weights: str | None = None
    generator_steps: int | None = None
    diffusion_steps: int | None = None
    max_epochs: int | None = None
    max_steps: int | None = None
    batch_size: int | None = None
    workers: int = 0
    device: str = "auto"
    progress: bool = True
    tasks: tuple[str, ...] = ("segmentation",)
    retrieval_pretrained: str | None = None
    #: where models train (:mod:`.parallel`): local, processes or ray; with ``ray_address`` and
    #: ``ray_cpus`` (CPUs per task, threads per worker process)
    executor: Literal["local", "processes", "ray"] = "local"
    ray_address: str | None = None
    ray_cpus: float = 1.0
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        unknown = [t for t in self.tasks if t not in TASKS]
        if unknown or "segmentation" not in self.tasks or len(set(self.tasks)) != len(self.tasks):
            raise InputError(
                f"tasks must name each of {', '.join(TASKS)} at most once and include "
                f"segmentation (its segmenter grounds the synthetic sets), got {list(self.tasks)}"
            )
        check_executor_options(
            self.executor, self.ray_address, self.ray_cpus, 0.0, allowed=EXECUTORS
        )
        if self.family not in FAMILIES:
            raise InputError(f"unknown family {self.family!r}; valid: {', '.join(FAMILIES)}")
        if not 0 <= self.map_dropout < 1 or self.guidance < 0:
            raise InputError("map_dropout must be in [0, 1) and guidance >= 0")
        if self.preset not in PRESETS:
            raise InputError(f"unknown preset {self.preset!r}; valid: {', '.join(PRESETS)}")
        if not self.budgets or any(not b > 0 for b in self.budgets):
            raise InputError(
                f"budgets must be positive fractions of the real training set, got {self.budgets}"
            )
        if not self.seeds or len(set(self.seeds)) != len(self.seeds):
            raise InputError(f"seeds must be distinct and at least one, got {self.seeds}")
        if self.min_label_fidelity is not None and not 0 <= self.min_label_fidelity <= 1:
            raise InputError(
                f"min_label_fidelity must be within 0..1, got {self.min_label_fidelity}"
            )
        if not 0 <= self.label_fidelity_ratio <= 1:
            raise InputError(
                f"label_fidelity_ratio must be within 0..1, got {self.label_fidelity_ratio}"
            )
        if self.oversample < 1:
            raise InputError(f"oversample must be >= 1, got {self.oversample}")
        for p, what in ((self.source, "source"), (self.target, "target")):
            if not Path(p).is_dir():
                raise InputError(f"--{what} {p}: no such dataset directory")

    def setting(self, name: str) -> Any:
        value = getattr(self, name)
        return PRESETS[self.preset][name] if value is None else value

    def execution(self) -> dict[str, Any]:
        """The benchmarks' executor options (never part of a run's identity)."""
        return {"executor": self.executor, "ray_address": self.ray_address,
                "ray_cpus": self.ray_cpus}  # fmt: skip


def segmentation_bench_config(
    preset: str,
    *,
    out: Path,
    real: Path,
    synthetic: Path,
    train: tuple[str, ...],
    seeds: tuple[int, ...],
    archs: tuple[str, ...] = ("unet",),
    encoder_weights: str | None = None,
    workers: int = 0,
    progress: bool = True,
    max_epochs: int | None = None,
    max_steps: int | None = None,
    batch_size: int | None = None,
    test: str = "real/test,synthetic/target",
    floor: str = "regime",
    execution: dict[str, Any] | None = None,
) -> Any:
    """The segmentation benchmark of an experiment: ``preset``'s segmenter and step budget
    (``max_epochs`` / ``max_steps`` / ``batch_size`` override it), validated on real A and
    tested on ``test`` (default: A's test split and ``synthetic/target``, region B); ``floor``:
    the benchmark's pixel-floor basis (``regime`` or ``real``); ``execution``: its executor
    options (:meth:`TransferConfig.execution`)."""
    from groundsynth.benchmark.segmentation import BenchmarkConfig

    p = PRESETS[preset]
    seg = p["segmenter"]
    return BenchmarkConfig(
        out=str(out), real=str(real), synthetic=str(synthetic),
        train=train, val="real", test=test, archs=archs,
        encoder=seg["encoder"], encoder_depth=seg["encoder_depth"], decoder_width=seg["decoder_width"],
        encoder_weights=encoder_weights, seeds=seeds,
        max_epochs=p["max_epochs"] if max_epochs is None else max_epochs,
        max_steps=p["max_steps"] if max_steps is None else max_steps,
        batch_size=p["batch_size"] if batch_size is None else batch_size, workers=workers,
        progress=progress, lr=seg.get("lr", 1e-3),
        schedule=seg.get("schedule", "plateau"), patience=seg.get("patience", 5),
        loss=seg.get("loss", "dice"), floor=floor, **(execution or {}),
    )  # fmt: skip


def _regimes(budgets: tuple[float, ...], synthetic_only: bool = True) -> list[str]:
    out = ["real"]
    for b in budgets:
        r = f"{b:g}" if "." in f"{b:g}" else f"{b:.1f}"  # a decimal point: a ratio, not a count
        out += [
            f"real,synthetic/ungrounded:{r}",
            f"real,synthetic/grounded:{r}",
        ]
        if synthetic_only:
            out += [f"synthetic/grounded:{r}", f"synthetic/ungrounded:{r}"]
    return out


def _link(dst: Path, src: Path) -> None:
    """Make ``dst`` a symbolic link to the folder ``src`` (replacing a stale link)."""
    if dst.is_symlink() or dst.exists():
        if dst.is_symlink() and Path(os.readlink(dst)) == src:
            return
        if dst.is_symlink():
            dst.unlink()
        else:
            raise InputError(f"{dst}: exists and is not a link made by the experiment")
    dst.parent.mkdir(parents=True, exist_ok=True)
    os.symlink(src, dst, target_is_directory=True)


def _only_split(root: Path) -> Path:
    reader = open_dataset(root)
    splits = [s for s in reader.splits() if reader.len(s)]
    if len(splits) != 1:
        raise InputError(f"{root}: expected one split of synthetic samples, found {splits}")
    return root / splits[0]


class _Experiment:
    def __init__(self, cfg: TransferConfig) -> None:
        self.cfg = cfg
        self.out = Path(cfg.out).resolve()
        self.source = Path(cfg.source).resolve()
        self.target = Path(cfg.target).resolve()
        self.pool = self.out / "pool"
        self.preset = PRESETS[cfg.preset]
        reader = open_dataset(self.source)
        if "train" not in reader.splits() or reader.len("train") == 0:
            raise InputError(f"{self.source}: has no train split to learn from")
        self.n_train = reader.len("train")
        first = reader.ids("train")[0]
        self.image_size = int(reader.read_image("train", first).shape[0])
        self.n_synthetic = math.ceil(max(cfg.budgets) * self.n_train * cfg.oversample)

    # ------------------------------------------------------------------ benchmark
    def bench_config(self, train: tuple[str, ...], seeds: tuple[int, ...]) -> Any:
        return segmentation_bench_config(
            self.cfg.preset, out=self.out / "benchmark", real=self.source, synthetic=self.pool,
            train=train, seeds=seeds, archs=self.cfg.archs,
            encoder_weights=self.cfg.encoder_weights, workers=self.cfg.workers,
            progress=self.cfg.progress, max_epochs=self.cfg.setting("max_epochs"),
            max_steps=self.cfg.setting("max_steps"), batch_size=self.cfg.setting("batch_size"),
            execution=self.cfg.execution(),
        )  # fmt: skip

    def train_ahead(self, executor: Any) -> None:
        """Train at once on ``executor``: both generators (as its tasks, from a thread), every
        seed's real-only segmenter and the multimodal tasks' real-only runs (each benchmark
        from a thread of its own). SPADE with its feature-matching term waits for its
        segmenter and trains later, in :meth:`train`."""
        from groundsynth.benchmark.segmentation import run_segmentation_benchmark
        from groundsynth.experiment.parallel import in_background

        kinds = [
            k for k in FAMILIES[self.cfg.family]
            if not (k == "conditional" and self.preset["cond"].get("fm_weight"))
        ]  # fmt: skip
        generators = in_background(executor, [self.train_config(k) for k in kinds])
        calls: dict[str, Any] = {
            "segmentation": lambda: run_segmentation_benchmark(
                self.bench_config(("real",), self.cfg.seeds)
            )
        }
        multimodal = [t for t in ("retrieval", "captioning") if t in self.cfg.tasks]
        if multimodal:
            captions = _caption_real(self)
            for task in multimodal:
                calls[task] = lambda task=task: _multimodal(self, task, captions, ("real",))
        try:
            at_once(calls)
        finally:
            generators.result()

    def segmenter(self, seed: int | None = None) -> Path:
        """The benchmark's ``real`` run of ``seed`` (default: the first), trained now if it
        is not yet; the path of its ``segmenter.pt``."""
        from groundsynth.benchmark.data import parse_regime
        from groundsynth.benchmark.segmentation import run_segmentation_benchmark

        seed = self.cfg.seeds[0] if seed is None else seed
        cfg = self.bench_config(("real",), (seed,))
        run_segmentation_benchmark(cfg)
        slug = parse_regime("real").slug
        runs = self.out / "benchmark" / "runs" / self.cfg.archs[0]
        path = runs / slug / f"seed{seed}" / "segmenter.pt"
        if not path.is_file():
            raise InputError(f"{path}: the real-trained segmenter is missing after its run")
        return path

    def feature_segmenter(self) -> Path:
        """The segmenter whose encoder SPADE's feature-matching term uses: the real run of the
        second seed when there is one -- not the first seed's, which scores label fidelity
        and runs the grounding filter, so the filter does not read images painted to please it
        (its run is one the benchmark trains anyway)."""
        return self.segmenter(self.cfg.seeds[1] if len(self.cfg.seeds) > 1 else None)

    # ------------------------------------------------------------------ generators
    def train(self, kind: str) -> Path:
        """Train (or resume, or find finished) the generator of ``kind``; its run folder."""
        from groundsynth.generate.training import train_generator

        cfg = self.train_config(kind)
        train_generator(cfg, progress=self.cfg.progress)
        return Path(cfg.out)

    def train_config(self, kind: str) -> Any:
        """The :class:`~groundsynth.generate.config.TrainConfig` of ``kind``'s generator."""
        from groundsynth.generate.config import TrainConfig, model_config_from_dict

        if kind == "conditional":
            model = {"generator": dict(self.preset["spade"]), **self.preset["cond"]}
            if model.get("fm_weight"):  # the preset's feature-matching term needs a segmenter
                model["fm_segmenter"] = str(self.feature_segmenter())
            steps = self.cfg.setting("generator_steps")
        else:
            model = dict(self.preset["diffusion"])
            steps = self.cfg.setting("diffusion_steps")
            if kind == "conditional-diffusion":
                model.update(map_dropout=self.cfg.map_dropout, guidance=self.cfg.guidance)
                model.update(self.preset.get("cond_diffusion", {}))
        run = self.out / "generators" / kind
        return TrainConfig(
            kind=kind, dataset=str(self.source), out=str(run), image_size=self.image_size,
            max_steps=steps, batch_size=self.preset["generator_batch"],
            checkpoint_every=max(1, steps // 2), eval_every=max(1, steps // 2),
            seed=self.cfg.seeds[0], num_workers=self.cfg.workers,
            model=model_config_from_dict(kind, model),
        )  # fmt: skip

    def generate(self, run: Path, name: str, layouts: Any = None) -> Path:
        from groundsynth.generate.sampling import GenerateConfig, generate_dataset

        out = self.out / "synthetic" / name
        generate_dataset(
            GenerateConfig(model=str(run), out=str(out), n=self.n_synthetic, layouts=layouts,
                           seed=self.cfg.seeds[0], device=self.cfg.device)
        )  # fmt: skip
        return out

    def branch(self, which: str, segmenter: Path) -> dict[str, Any]:
        """One synthetic set, made and evaluated: ``grounded`` (generated from maps, filtered
        by label fidelity; ``rule``: the filter's threshold) or ``ungrounded`` (generated,
        pseudo-labelled), captioned first when a multimodal task needs captions."""
        if which == "grounded":
            out, rule = self.grounded(segmenter)
        else:
            out, rule = self.ungrounded(segmenter), None
        reader = open_dataset(out)
        if not any(reader.len(split) for split in reader.splits()):
            return {"path": str(out), "rule": rule}  # the caller says why
        if {"retrieval", "captioning"} & set(self.cfg.tasks):
            from groundsynth.experiment.multimodal import ensure_captions

            ensure_captions(out, self.cfg.seeds[0])
        self.fidelity(which, out, segmenter)
        return {"path": str(out), "rule": rule}

    def grounded(self, segmenter: Path) -> tuple[Path, dict[str, Any]]:
        """Generate, score label fidelity, keep the verified samples; return (dataset, the
        filter's threshold and how it was chosen)."""
        from groundsynth.evaluate.filter import filter_synthetic
        from groundsynth.generate.layouts import LayoutConfig

        run = self.train(FAMILIES[self.cfg.family][0])
        raw = self.generate(run, "grounded_raw", LayoutConfig(strategy=self.cfg.layouts))
        scores = self.fidelity("grounded_raw", raw, segmenter)
        rule = self.threshold(scores)
        threshold = rule["threshold"]
        out = self.out / "synthetic" / "grounded"
        if not (out / "manifest.json").is_file():
            filter_synthetic(
                raw, out, scores=self.out / "evaluation" / "grounded_raw" / "per_sample.parquet",
                min_label_fidelity=threshold, mode="link",
            )  # fmt: skip
        return out, rule

    def threshold(self, scores: dict[str, Any]) -> dict[str, Any]:
        """The label-fidelity threshold of the grounding filter.

        ``min_label_fidelity`` when given; else ``label_fidelity_ratio`` times the segmenter's
        mean per-sample mIoU on real images (its own ceiling), lowered if needed so that at
        least the largest budget's worth of samples passes (the best ones by label fidelity).
        Returns ``threshold`` with how it was chosen (``rule``: given / ratio / lowered).
        """
        if self.cfg.min_label_fidelity is not None:
            return {"threshold": float(self.cfg.min_label_fidelity), "rule": "given"}
        lf = scores.get("label_fidelity") or {}
        ceiling = float(
            ((lf.get("real_reference") or {}).get("sample_miou") or {}).get("mean", 0.0)
        )
        wanted = self.cfg.label_fidelity_ratio * ceiling
        per_sample = pd.read_parquet(
            self.out / "evaluation" / "grounded_raw" / "per_sample.parquet", columns=["miou"]
        )
        ranked = per_sample["miou"].fillna(0.0).sort_values(ascending=False).to_numpy()
        need = math.ceil(max(self.cfg.budgets) * self.n_train)
        floor = float(ranked[min(need, len(ranked)) - 1]) if len(ranked) else 0.0
        threshold = min(wanted, floor)
        log.info(
            "grounding filter: label fidelity >= %.3f (%.2f x real ceiling %.3f = %.3f; %d-th best %.3f)",
            threshold, self.cfg.label_fidelity_ratio, ceiling, wanted, need, floor,
        )  # fmt: skip
        return {
            "threshold": threshold, "rule": "ratio" if threshold >= wanted else "lowered",
            "ratio": self.cfg.label_fidelity_ratio, "real_ceiling": ceiling, "wanted": wanted,
            "needed": need, "needed_best": floor,
        }  # fmt: skip

    def ungrounded(self, segmenter: Path) -> Path:
        from groundsynth.generate.pseudo_label import PseudoLabelConfig, pseudo_label

        run = self.train(FAMILIES[self.cfg.family][1])
        raw = self.generate(run, "ungrounded_raw")
        out = self.out / "synthetic" / "ungrounded"
        pseudo_label(
            PseudoLabelConfig(
                dataset=str(raw), model=str(segmenter), out=str(out), device=self.cfg.device
            )
        )
        return out

    def fidelity(self, name: str, synthetic: Path, segmenter: Path) -> dict[str, Any]:
        from groundsynth.evaluate.synthetic import evaluate_synthetic

        out = self.out / "evaluation" / name
        summary = out / "summary.json"
        if summary.is_file():
            return json.loads(summary.read_text())
        return evaluate_synthetic(
            self.source,
            synthetic,
            out,
            model=str(segmenter),
            device=self.cfg.device,
            umap=False,
            seed=self.cfg.seeds[0],
        )


def _branch_task(job: tuple[TransferConfig, str, str]) -> dict[str, Any]:
    """A worker's task (or a call here): :meth:`_Experiment.branch` of ``(config, which,
    segmenter)``."""
    config, which, segmenter = job
    return _Experiment(config).branch(which, Path(segmenter))


def run_transfer(config: TransferConfig) -> dict[str, Any]:
    """Run (or resume) the whole transfer experiment; return its summary (also in
    ``out/experiment.json``, with ``results.csv`` (means and CIs per regime and domain),
    ``results_long.csv`` (every run) and ``differences.csv``)."""
    exp = _Experiment(config)
    out = exp.out
    run = start_run(out, "experiment-transfer", config, seeds={"seeds": list(config.seeds)})
    try:
        with workers(config.executor, config.ray_address, config.ray_cpus) as executor:
            result = _run(exp, config, executor)
        write_json(out / "experiment.json", result)
        write_text(out / "notes.txt", " ".join(result["notes"]) + "\n")
        run.finish(
            inputs=[exp.source, exp.target],
            outputs={"synthetic_sizes": result["synthetic_sizes"], "results": "results.csv"},
            digest=[out / "results.csv", out / "differences.csv", out / "experiment.json"],
        )
    except BaseException:
        run.close()
        raise
    return result


def _run(exp: _Experiment, config: TransferConfig, executor: Any) -> dict[str, Any]:
    """The experiment's steps; ``executor``: None (one model after the other, here) or the
    pool or cluster its independent models train on at once (:mod:`.parallel`)."""
    out = exp.out
    _link(exp.pool / "target", exp.target / config.target_split)
    log.info("1/5 real-trained segmenter")
    if executor is not None:
        exp.train_ahead(executor)
    segmenter = exp.segmenter()
    log.info("2/5 grounded and 3/5 ungrounded synthetic data")
    jobs = [(config, which, str(segmenter)) for which in ("grounded", "ungrounded")]
    if executor is None:
        made = {job[1]: _branch_task(job) for job in jobs}
    else:  # the two sets are made side by side on the workers
        done = executor.map_unordered(_branch_task, jobs, label=lambda j: f"{j[1]} synthetic data")
        made = {job[1]: result for job, result in done}
    grounded, rule = Path(made["grounded"]["path"]), made["grounded"]["rule"]
    ungrounded = Path(made["ungrounded"]["path"])
    threshold = rule["threshold"]
    if not any(open_dataset(grounded).len(sp) for sp in open_dataset(grounded).splits()):
        raise InputError(
            f"the grounding filter kept no sample (label fidelity >= {threshold:.3g}); "
            "train the generator longer or lower --min-label-fidelity"
        )
    _link(exp.pool / "grounded", _only_split(grounded))
    _link(exp.pool / "ungrounded", _only_split(ungrounded))
    need = math.ceil(max(config.budgets) * exp.n_train)
    sizes = {n: open_dataset(exp.pool).len(n) for n in ("grounded", "ungrounded")}
    short = {n: k for n, k in sizes.items() if k < need}
    if short:
        raise InputError(
            f"too few synthetic samples for budget {max(config.budgets):g} ({need} needed): {short}; "
            "lower --min-label-fidelity or raise --oversample"
        )
    if {"retrieval", "captioning"} & set(config.tasks):
        captions = _caption_sets(exp, grounded, ungrounded)
    fidelity = {
        "grounded": exp.fidelity("grounded", grounded, segmenter),
        "ungrounded": exp.fidelity("ungrounded", ungrounded, segmenter),
    }
    log.info("4/5 segmentation benchmark")
    from groundsynth.benchmark.segmentation import run_segmentation_benchmark

    regimes = tuple(_regimes(config.budgets, config.synthetic_only))
    calls: dict[str, Any] = {
        "segmentation": lambda: run_segmentation_benchmark(exp.bench_config(regimes, config.seeds))
    }
    for task in ("retrieval", "captioning"):
        if task in config.tasks:
            log.info("%s benchmark (captions: %s)", task, captions)
            calls[task] = lambda task=task: _multimodal(exp, task, captions)
    # with workers, the benchmarks' runs share them; else one after the other
    done = at_once(calls) if executor is not None else {n: call() for n, call in calls.items()}
    bench = done["segmentation"]
    log.info("5/5 learning checks and tables")
    from groundsynth.experiment.learning import learning_block

    learning = learning_block(
        out=out, source=exp.source, bench=out / "benchmark",
        grounded_raw=out / "synthetic" / "grounded_raw",
        fidelity={"grounded_raw": exp.fidelity("grounded_raw", out / "synthetic" / "grounded_raw", segmenter),
                  "ungrounded": fidelity["ungrounded"]},
        seed=config.seeds[0],
    )  # fmt: skip
    summary_df, diffs = results_tables(bench.rows)
    pd.DataFrame(bench.rows).to_csv(out / "results_long.csv", index=False)
    summary_df.to_csv(out / "results.csv", index=False)
    pd.DataFrame(diffs).to_csv(out / "differences.csv", index=False)
    result = {
        "source": str(exp.source),
        "target": str(exp.target),
        "n_real_train": exp.n_train,
        "synthetic_sizes": sizes,
        "grounding_threshold": threshold,
        "grounding_filter": rule,
        "family": config.family,
        "generators": dict(zip(("grounded", "ungrounded"), FAMILIES[config.family])),
        "learning": learning,
        # where the models trained: here one after the other, or a pool / cluster at once
        "execution": executor.describe() if executor is not None else {"name": "local"},
        "budgets": list(config.budgets),
        "seeds": list(config.seeds),
        "table": summary_df.to_dict(orient="records"),
        "differences": diffs,
        "fidelity": {k: _fidelity_brief(v) for k, v in fidelity.items()},
        "notes": [
            "f1 / iou: macro over the 7 classes, confusion matrices over whole test sets, "
            "averaged over architectures per seed; CIs are t-intervals over seeds",
            "differences: grounded minus ungrounded paired by seed; 95 % CI a t-interval below "
            "20 seeds (a percentile bootstrap over few seeds covers far less than 95 %), the "
            "paired bootstrap from 20 (boot95 columns: always); sign-flip p exact",
            "scores against WorldCover-derived maps measure agreement with WorldCover "
            "(about 77 % accurate), not with the ground",
        ],
    }
    for task in ("retrieval", "captioning"):
        if task in done:
            result.setdefault("tasks", {})[task] = done[task]
    return result


def _multimodal(
    exp: _Experiment, task: str, captions: dict[str, str], regimes: tuple[str, ...] | None = None
) -> dict[str, Any]:
    """Run the retrieval or captioning task of the experiment (see .multimodal): every
    regime, or only ``regimes``."""
    from groundsynth.experiment import multimodal

    cfg = exp.cfg
    settings = {**exp.preset[task], **cfg.execution()}
    if task == "retrieval" and cfg.retrieval_pretrained:
        settings["pretrained"] = cfg.retrieval_pretrained
    run = multimodal.run_retrieval_task if task == "retrieval" else multimodal.run_captioning_task
    block = run(
        out=exp.out, source=exp.source, pool=exp.pool,
        regimes=regimes or tuple(_regimes(cfg.budgets, cfg.synthetic_only)), seeds=cfg.seeds,
        settings=settings, workers=cfg.workers, progress=cfg.progress,
    )  # fmt: skip
    block["caption_sources"] = captions
    return block


def _caption_sets(exp: _Experiment, grounded: Path, ungrounded: Path) -> dict[str, str]:
    """Captions for every set of the retrieval task, linked into the pool (see .multimodal)."""
    from groundsynth.experiment.multimodal import ensure_captions, link_pool_captions

    seed = exp.cfg.seeds[0]
    made = _caption_real(exp)
    for name, dataset in (("grounded", grounded), ("ungrounded", ungrounded)):
        made[name] = ensure_captions(dataset, seed)
        link_pool_captions(exp.pool, name, dataset, _only_split(dataset).name)
    return made


def _caption_real(exp: _Experiment) -> dict[str, str]:
    """Captions of the real sets (A; B, linked into the pool as ``target``)."""
    from groundsynth.experiment.multimodal import ensure_captions, link_pool_captions

    seed = exp.cfg.seeds[0]
    made = {"real": ensure_captions(exp.source, seed), "target": ensure_captions(exp.target, seed)}
    link_pool_captions(exp.pool, "target", exp.target, exp.cfg.target_split)
    return made


def _fidelity_brief(summary: dict[str, Any]) -> dict[str, Any]:
    """The headline numbers of an evaluate-synthetic summary (whatever of them exist)."""
    keep = ("label_fidelity", "feature_fidelity", "composition")
    return {k: summary[k] for k in keep if k in summary}
