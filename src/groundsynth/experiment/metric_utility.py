"""``groundsynth experiment metric-utility``: do the interpretable metrics predict what synthetic
data adds?

Feature-similarity scores (FD and kin) are hard to read and need not track what a synthetic set
contributes downstream; grounded measures (label fidelity, caption↔image consistency,
composition divergence) say what is wrong in words. This experiment measures which of them, on
a family of synthetic sets that differ in quality and kind, ranks the sets by their
*utility*: the gain in segmentation macro IoU of real + set over real alone.

With real dataset A (``real``), optionally region B (``target``), and generator run directories
(``train-generator`` outputs; their ``checkpoints/step*.pt`` give sets along training):

1. a segmenter trained on real A (the benchmark's ``real`` run of the first seed, or
   ``segmenter`` when given) labels ungrounded samples, scores label fidelity and gives the
   features of FD / KID / PRDC; the pixel floor (per-pixel logistic regression on A's train
   split) gives a second reader of every image;
2. the **sets**, each of exactly ``n = budget x |A train|`` samples, per generator and
   checkpoint (the last ``checkpoints`` of each run, evenly spaced): a pool of
   ``oversample x n`` samples is generated (conditional models paint augmented layouts of A's
   training maps; unconditional models' samples get the segmenter's pseudo-labels), then

   - ``<gen>-s<step>``: the pool's first ``n`` samples (unfiltered);
   - ``<gen>-s<step>-filtered``: its best ``n`` -- by the segmenter's per-sample label
     fidelity for conditional models, by pseudo-label confidence for unconditional ones;
   - ``<gen>-s<step>-targeted`` (conditional models, last checkpoint, when ``targeted`` is
     set): ``n`` samples painted from layouts chosen to approach the class distribution
     ``targeted`` (``uniform``: every class 1/7, the rare ones over-represented);

3. every metric of every set (:data:`METRICS`): ``evaluate synthetic`` against A (label
   fidelity, FD / KID / precision / recall / density / coverage in segmenter features,
   composition JSD), the pixel floor's reading (label fidelity; a Fréchet distance on the
   weight-free descriptor), and the set's template captions (made from its maps) checked against
   what the floor reads in its images (consistent rate) and for redundancy (1 - distinct-2);
4. the **utility**: segmenters on ``real`` and on ``real,synthetic/<set>`` for each set and
   seed, tested on A's test split (in-domain) and on B (cross-region); a set's gain per seed is
   its IoU minus the ``real`` run's of the same seed (paired);
5. the **answer** (:mod:`.utility_stats`): Spearman and Kendall correlation of each metric
   with the mean gain over sets, bootstrap CIs over sets and seeds, a leave-one-generator-out
   concordance, the best single metric and the best pair; scatter plots per domain.

Every step writes into ``out`` and is skipped when already done, so rerunning resumes.
Outputs: ``metric_utility.json`` (everything), ``sets.csv``, ``gains_long.csv``,
``utility.csv``, ``correlations.csv``, ``scatter_<domain>.png``.
"""

from __future__ import annotations

import json
import logging
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from groundsynth.classes import NUM_CLASSES
from groundsynth.data.reader import open_dataset
from groundsynth.errors import InputError
from groundsynth.experiment.presets import PRESETS, Preset
from groundsynth.experiment.utility_metrics import (
    METRICS,
    caption_metrics,
    floor_metrics,
    floor_pass,
    one_split,
    summary_metrics,
)
from groundsynth.experiment.utility_tables import (
    TASKS,
    gains_from_rows,
    learning_summary,
    summarise,
)
from groundsynth.io import atomic_path, write_json
from groundsynth.runs import start_run

__all__ = ["METRICS", "MetricUtilityConfig", "run_metric_utility"]

log = logging.getLogger(__name__)

#: a set name: generator slug, checkpoint step, variant
_SLUG = re.compile(r"[^a-z0-9]+")


@dataclass(frozen=True)
class MetricUtilityConfig:
    """Options of :func:`run_metric_utility` (saved as ``config.yaml``)."""

    real: str
    generators: tuple[str, ...]
    out: str
    target: str | None = None
    target_split: str = "test"
    segmenter: str | None = None
    preset: Preset = "small"
    seeds: tuple[int, ...] = (0, 1)
    budget: float = 0.5
    oversample: float = 1.5
    checkpoints: int = 3
    targeted: str | None = "uniform"
    archs: tuple[str, ...] = ("unet",)
    max_steps: int | None = None
    resamples: int = 2000
    tasks: tuple[str, ...] = ("segmentation",)
    clip_model: str | None = None
    clip_pretrained: str | None = None
    workers: int = 0
    device: str = "auto"
    progress: bool = True

    def __post_init__(self) -> None:
        if self.preset not in PRESETS:
            raise InputError(f"unknown preset {self.preset!r}; valid: {', '.join(PRESETS)}")
        if not self.generators:
            raise InputError("give at least one generator run directory (--generators)")
        for g in self.generators:
            if not Path(g).is_dir():
                raise InputError(f"--generators {g}: no such run directory")
        if not Path(self.real).is_dir():
            raise InputError(f"--real {self.real}: no such dataset directory")
        if self.target is not None and not Path(self.target).is_dir():
            raise InputError(f"--target {self.target}: no such dataset directory")
        if self.segmenter is not None and not Path(self.segmenter).is_file():
            raise InputError(f"--segmenter {self.segmenter}: no such checkpoint file")
        if not self.budget > 0:
            raise InputError(f"budget must be a positive fraction, got {self.budget}")
        if self.oversample < 1:
            raise InputError(f"oversample must be >= 1, got {self.oversample}")
        if self.checkpoints < 0:
            raise InputError(f"checkpoints must be >= 0 (0: all), got {self.checkpoints}")
        if not self.seeds or len(set(self.seeds)) != len(self.seeds):
            raise InputError(f"seeds must be distinct and at least one, got {self.seeds}")
        if "segmentation" not in self.tasks or any(t not in TASKS for t in self.tasks):
            raise InputError(
                f"tasks must be segmentation (always: its segmenter reads the sets) and "
                f"optionally retrieval, got {list(self.tasks)}"
            )
        if "retrieval" in self.tasks and self.target is None:
            raise InputError("the retrieval utility needs --target (its runs test on region B)")
        if self.resamples < 100:
            raise InputError(f"resamples must be >= 100, got {self.resamples}")


@dataclass(frozen=True)
class SetSpec:
    """One synthetic set of the family."""

    name: str
    generator: str
    kind: str  # grounded | ungrounded
    step: int
    filtered: bool
    targeted: bool


def choose_checkpoints(steps: list[int], k: int) -> list[int]:
    """The last ``k`` of ``steps`` spread evenly (always the last; ``k = 0``: all)."""
    if k == 0 or len(steps) <= k:
        return list(steps)
    if k == 1:
        return [steps[-1]]
    idx = np.linspace(0, len(steps) - 1, k).round().astype(int)
    return [steps[i] for i in sorted(set(idx.tolist()))]


def _slug(text: str) -> str:
    return _SLUG.sub("-", text.lower()).strip("-") or "generator"


class _Study:
    def __init__(self, cfg: MetricUtilityConfig) -> None:
        from groundsynth.generate.checkpoint import list_checkpoints, load_checkpoint

        self.cfg = cfg
        self.out = Path(cfg.out).resolve()
        self.real = Path(cfg.real).resolve()
        self.pool = self.out / "pool"
        self.preset = PRESETS[cfg.preset]
        reader = open_dataset(self.real)
        if "train" not in reader.splits() or reader.len("train") == 0:
            raise InputError(f"{self.real}: has no train split to learn from")
        self.n_train = reader.len("train")
        self.n = max(1, round(cfg.budget * self.n_train))
        self.n_pool = math.ceil(self.n * cfg.oversample)
        self.generators: dict[str, dict[str, Any]] = {}
        for g in cfg.generators:
            run = Path(g).resolve()
            found = list_checkpoints(run)
            if not found:
                raise InputError(f"{run}: no checkpoints/step*.pt; train it first")
            kind = str(load_checkpoint(found[-1][1]).get("kind"))
            name = _slug(run.name)
            while name in self.generators:
                name += "-b"
            steps = choose_checkpoints([s for s, _ in found], cfg.checkpoints)
            self.generators[name] = {
                "run": run, "kind": kind, "steps": steps,
                "paths": {s: p for s, p in found if s in steps},
                "grounded": kind.startswith("conditional"),
            }  # fmt: skip

    # ------------------------------------------------------------------ sets
    def specs(self) -> list[SetSpec]:
        out = []
        for name, g in self.generators.items():
            kind = "grounded" if g["grounded"] else "ungrounded"
            for step in g["steps"]:
                base = f"{name}-s{step}"
                out.append(SetSpec(base, name, kind, step, False, False))
                out.append(SetSpec(f"{base}-filtered", name, kind, step, True, False))
            if g["grounded"] and self.cfg.targeted:
                step = g["steps"][-1]
                out.append(SetSpec(f"{name}-s{step}-targeted", name, kind, step, False, True))
        return out

    def segmenter(self) -> Path:
        if self.cfg.segmenter is not None:
            return Path(self.cfg.segmenter).resolve()
        from groundsynth.benchmark.data import parse_regime
        from groundsynth.benchmark.segmentation import run_segmentation_benchmark

        seed = self.cfg.seeds[0]
        run_segmentation_benchmark(self.bench_config(("real",), (seed,)))
        path = (
            self.out / "benchmark" / "runs" / self.cfg.archs[0] / parse_regime("real").slug
            / f"seed{seed}" / "segmenter.pt"
        )  # fmt: skip
        if not path.is_file():
            raise InputError(f"{path}: the real-trained segmenter is missing after its run")
        return path

    def bench_config(self, train: tuple[str, ...], seeds: tuple[int, ...]) -> Any:
        from groundsynth.experiment.transfer import segmentation_bench_config

        utility = self.preset.get("utility", {})
        return segmentation_bench_config(
            self.cfg.preset, out=self.out / "benchmark", real=self.real, synthetic=self.pool,
            train=train, seeds=seeds, archs=self.cfg.archs, workers=self.cfg.workers,
            progress=self.cfg.progress,
            max_steps=self.cfg.max_steps if self.cfg.max_steps is not None else utility.get("max_steps"),
            test="real/test" if self.cfg.target is None else "real/test,synthetic/target",
            floor="real",  # one floor fit for the study, not one per set (~9 s each on 2 cores)
        )  # fmt: skip

    def raw_pool(self, generator: str, step: int, targeted: bool = False) -> Path:
        """Generate (or resume) the pool of samples of a checkpoint."""
        from groundsynth.generate.layouts import LayoutConfig
        from groundsynth.generate.sampling import GenerateConfig, generate_dataset

        g = self.generators[generator]
        tag = "targeted" if targeted else "pool"
        out = self.out / "raw" / f"{generator}-s{step}-{tag}"
        layouts = None
        if g["grounded"]:
            layouts = (
                LayoutConfig(strategy="target", distribution=_distribution(self.cfg.targeted))
                if targeted
                else LayoutConfig(strategy="augmented")
            )
        if not (out / "manifest.json").is_file():
            generate_dataset(
                GenerateConfig(model=str(g["paths"][step]), out=str(out),
                               n=self.n if targeted else self.n_pool, layouts=layouts,
                               masks=str(self.real) if g["grounded"] else None,
                               seed=self.cfg.seeds[0], device=self.cfg.device)
            )  # fmt: skip
        if g["grounded"]:
            return out
        labelled = self.out / "raw" / f"{generator}-s{step}-labelled"
        if not (labelled / "manifest.json").is_file():
            from groundsynth.generate.pseudo_label import PseudoLabelConfig, pseudo_label

            pseudo_label(
                PseudoLabelConfig(dataset=str(out), model=str(self.segmenter_path),
                                  out=str(labelled), device=self.cfg.device)
            )  # fmt: skip
        return labelled

    def build_set(self, spec: SetSpec) -> Path:
        """Write the set's dataset (hard links into its pool) and return it."""
        from groundsynth.evaluate.filter_output import write_subset

        dest = self.out / "sets" / spec.name
        if (dest / "set.json").is_file():
            return dest
        raw = self.raw_pool(spec.generator, spec.step, spec.targeted)
        reader = open_dataset(raw)
        split = one_split(reader)
        ids = reader.ids(split)
        if spec.filtered:
            score = self.sample_scores(spec, raw, split)
            order = sorted(ids, key=lambda i: (-score.get(i, -math.inf), i))
            chosen = sorted(order[: self.n])
            rule = "pseudo-label confidence" if spec.kind == "ungrounded" else "label fidelity"
        else:
            chosen = ids[: self.n]
            rule = None
        if len(chosen) < self.n:
            raise InputError(f"{raw}: {len(chosen)} samples, {self.n} needed for set {spec.name}")
        write_subset(reader, dest, {split: chosen}, mode="link")
        write_json(dest / "set.json", {**spec.__dict__, "n": len(chosen), "pool": str(raw),
                                       "filter": rule, "split": split})  # fmt: skip
        return dest

    def sample_scores(self, spec: SetSpec, raw: Path, split: str) -> dict[str, float]:
        """Per-sample filter score: pseudo-label confidence, or the segmenter's label
        fidelity (per-sample mIoU, scored once per pool)."""
        if spec.kind == "ungrounded":
            meta = pd.read_parquet(raw / "metadata.parquet", columns=["id", "confidence"])
            return dict(zip(meta["id"].astype(str), meta["confidence"].astype(float)))
        from groundsynth.evaluate.filter import filter_synthetic

        scored = self.out / "raw" / f"{raw.name}-scores"
        path = scored / "scores" / "per_sample.parquet"
        if not path.is_file():
            filter_synthetic(raw, scored, model=str(self.segmenter_path), min_label_fidelity=0.0,
                             mode="manifest", device=self.cfg.device)  # fmt: skip
        df = pd.read_parquet(path, columns=["id", "miou"])
        return dict(zip(df["id"].astype(str), df["miou"].fillna(0.0).astype(float)))

    # ------------------------------------------------------------------ metrics
    def real_descriptor(self, floor: Any) -> np.ndarray:
        """The weight-free descriptor of every real training image (cached)."""
        cache = self.out / "descriptor_real.npz"
        if cache.is_file():
            with np.load(cache) as z:
                return z["descriptor"]
        from groundsynth.evaluate.descriptor import image_descriptor

        reader = open_dataset(self.real)
        ref = np.asarray([image_descriptor(s.image[None], floor)[0]
                          for s in reader.iter_samples("train")])  # fmt: skip
        with atomic_path(cache, suffix=".npz") as tmp, open(tmp, "wb") as fh:
            np.savez(fh, descriptor=ref)
        return ref

    def clip(self) -> Any:
        if self.cfg.clip_model is None:
            return None
        from groundsynth.evaluate.clipscore import ClipScoreConfig

        return ClipScoreConfig(model=self.cfg.clip_model, pretrained=self.cfg.clip_pretrained,
                               device=self.cfg.device)  # fmt: skip

    def metrics(self, spec: SetSpec, dataset: Path, floor: Any) -> dict[str, Any]:
        """Every metric of a set, cached in its ``metrics.json`` (the caption metrics are
        redone when a CLIP was given after the cache was written)."""
        path = dataset / "metrics.json"
        if path.is_file():
            values = json.loads(path.read_text())
            if self.cfg.clip_model is None or "clipscore" in values:
                return values
            _, shares, _ = floor_pass(floor, dataset)
            values.update(caption_metrics(dataset, shares, self.cfg.seeds[0], self.clip()))
            write_json(path, values)
            return values
        from groundsynth.evaluate.synthetic import evaluate_synthetic

        evaluation = self.out / "evaluation" / spec.name
        summary_path = evaluation / "summary.json"
        if summary_path.is_file():
            summary = json.loads(summary_path.read_text())
        else:
            summary = evaluate_synthetic(
                self.real, dataset, evaluation, model=str(self.segmenter_path),
                device=self.cfg.device, umap=False, tsne=False, seed=self.cfg.seeds[0],
            )  # fmt: skip
        values = summary_metrics(summary)
        cm, shares, desc = floor_pass(floor, dataset)
        ref = self.real_descriptor(floor)
        values.update(floor_metrics(cm, desc, ref))
        values.update(caption_metrics(dataset, shares, self.cfg.seeds[0], self.clip()))
        write_json(path, values)
        return values


def _distribution(targeted: str | None) -> str:
    """``uniform`` -> every class 1/7; anything else is a ``Class=x`` distribution."""
    from groundsynth.classes import CLASS_NAMES

    if targeted == "uniform":
        return ", ".join(f"{c}={1 / NUM_CLASSES:.6f}" for c in CLASS_NAMES[:-1])
    return str(targeted)


def _link(dst: Path, src: Path) -> None:
    from groundsynth.experiment.transfer import _link as link

    link(dst, src)


def retrieval_rows(study: _Study, names: list[str], regimes: tuple[str, ...]) -> list[dict]:
    """Run (or resume) the retrieval benchmark on real and real + each set (the sets' template
    captions, A's and B's from their maps); return its rows."""
    from groundsynth.experiment.multimodal import (
        ensure_captions,
        link_pool_captions,
        run_retrieval_task,
    )

    cfg = study.cfg
    ensure_captions(study.real, cfg.seeds[0])
    target = Path(cfg.target).resolve()  # type: ignore[arg-type]
    ensure_captions(target, cfg.seeds[0])
    link_pool_captions(study.pool, "target", target, cfg.target_split)
    for name in names:
        dataset = study.out / "sets" / name
        link_pool_captions(study.pool, name, dataset, one_split(open_dataset(dataset)))
    run_retrieval_task(
        out=study.out, source=study.real, pool=study.pool, regimes=regimes, seeds=cfg.seeds,
        settings=dict(study.preset["retrieval"]), workers=cfg.workers, progress=cfg.progress,
    )  # fmt: skip
    return pd.read_csv(study.out / "retrieval_results_long.csv").to_dict(orient="records")


def run_metric_utility(config: MetricUtilityConfig) -> dict[str, Any]:
    """Run (or resume) the study; return its summary (also ``out/metric_utility.json``)."""
    from groundsynth.experiment.learning import floor_of, segmenter_checks

    study = _Study(config)
    out = study.out
    run = start_run(out, "experiment-metric-utility", config,
                    seeds={"seeds": list(config.seeds)})  # fmt: skip
    try:
        if config.target is not None:
            _link(study.pool / "target", Path(config.target).resolve() / config.target_split)
        specs = study.specs()
        log.info(
            "%d sets of %d samples from %d generator(s); %d segmenter runs per seed",
            len(specs), study.n, len(study.generators), len(specs) + 1,
        )  # fmt: skip
        log.info("1/4 real-trained segmenter and pixel floor")
        study.segmenter_path = study.segmenter()
        floor = floor_of(study.real, out, config.seeds[0], out / "benchmark")
        log.info("2/4 synthetic sets and their metrics")
        rows = []
        for i, spec in enumerate(specs, 1):
            log.info("set %d/%d: %s", i, len(specs), spec.name)
            dataset = study.build_set(spec)
            _link(study.pool / spec.name, dataset / one_split(open_dataset(dataset)))
            row = {"set": spec.name, **{k: v for k, v in spec.__dict__.items() if k != "name"}}
            rows.append({**row, "n": study.n, **study.metrics(spec, dataset, floor)})
        sets = pd.DataFrame(rows)
        log.info("3/4 utility: segmenters on real and on real + each set")
        from groundsynth.benchmark.segmentation import run_segmentation_benchmark

        regimes = ("real", *(f"real,synthetic/{s.name}" for s in specs))
        bench = run_segmentation_benchmark(study.bench_config(regimes, config.seeds))
        names = [s.name for s in specs]
        gains = gains_from_rows(bench.rows, names)
        if "retrieval" in config.tasks:
            log.info("3b/4 utility: retrieval on real and on real + each set")
            rows = retrieval_rows(study, names, regimes)
            gains = pd.concat([gains, gains_from_rows(rows, names, "retrieval")], ignore_index=True)
        log.info("4/4 correlations")
        directions = {m: d for m, (d, _, _) in METRICS.items() if m in sets.columns}
        result = summarise(study, config, sets, gains, directions, floor, bench)
        result["learning"] = learning_summary(
            segmenter_checks(out / "benchmark", floor, study.real)
        )
        write_json(out / "metric_utility.json", result)
        run.finish(
            inputs=[study.real, *(g["run"] for g in study.generators.values())],
            outputs={"sets": len(specs), "results": "metric_utility.json"},
            digest=[out / "correlations.csv", out / "metric_utility.json"],
        )
    except BaseException:
        run.close()
        raise
    return result
