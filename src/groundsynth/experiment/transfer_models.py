"""The models and synthetic sets of the transfer experiment (:mod:`.transfer`).

:class:`_Experiment` knows where each of the experiment's runs lives under its ``out``
folder and makes it when it is missing -- the benchmark's real-only segmenters, the two
generators, the grounded set (generated from A's maps, filtered by label fidelity) and the
ungrounded one (generated, pseudo-labelled), each captioned and evaluated -- every step
skipped when already finished. :meth:`_Experiment.train_ahead` and :func:`_branch_task` are
what the worker pool runs (:mod:`.parallel`).
"""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path
from typing import Any

import pandas as pd

from groundsynth.data.reader import open_dataset
from groundsynth.errors import InputError
from groundsynth.experiment.multimodal import caption_real, run_task
from groundsynth.experiment.parallel import at_once
from groundsynth.experiment.presets import PRESETS, generator_model, generator_steps

__all__ = ["FAMILIES", "segmentation_bench_config"]

log = logging.getLogger(__name__)


#: generator family -> (grounded kind, ungrounded kind)
FAMILIES: dict[str, tuple[str, str]] = {
    "diffusion": ("conditional-diffusion", "diffusion"),
    "gan": ("conditional", "diffusion"),
}


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


class _Experiment:
    def __init__(self, cfg: Any) -> None:
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
            captions = caption_real(self)
            for task in multimodal:
                calls[task] = lambda task=task: run_task(self, task, captions, ("real",))
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

        model = generator_model(self.preset, kind)
        if kind == "conditional":
            if model.get("fm_weight"):  # the preset's feature-matching term needs a segmenter
                model["fm_segmenter"] = str(self.feature_segmenter())
            steps = self.cfg.setting("generator_steps")
        else:  # a cascade's patch-size U-Net gets as many steps as the grounded U-Net
            steps = generator_steps(model, self.cfg.setting("diffusion_steps"))
            if kind == "conditional-diffusion":
                model.update(map_dropout=self.cfg.map_dropout, guidance=self.cfg.guidance)
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


def _branch_task(job: tuple[Any, str, str]) -> dict[str, Any]:
    """A worker's task (or a call here): :meth:`_Experiment.branch` of ``(config, which,
    segmenter)``."""
    config, which, segmenter = job
    return _Experiment(config).branch(which, Path(segmenter))
