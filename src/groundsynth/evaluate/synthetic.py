"""What does a synthetic dataset add, and how faithful is it? ``evaluate synthetic``.

:func:`evaluate_synthetic` compares a synthetic dataset with a real one (either layout) and
writes, in a run directory (``config.yaml``, ``manifest.json``, ``evaluate_synthetic.log``):

- **composition** -- per-class pixel share, per-image class-fraction distributions, Jensen-
  Shannon divergence per class and overall, class co-occurrence (:mod:`.composition`), from
  ``metadata.parquet``/class-percentage tables, or from the masks where there are none;
- **label fidelity** (with a segmenter trained on real data) -- per synthetic sample, mIoU and
  per-class IoU between the segmenter's prediction and the sample's map; pooled per-class IoU;
  the same on a sample of real images as the reference (:mod:`.label_fidelity`);
- **feature fidelity** on the segmenter's encoder features -- Fréchet distance, KID,
  precision/recall/density/coverage, per generator when the set mixes ``origin`` values,
  with a real-half vs real-half baseline (:mod:`.fidelity`); Inception FID only from local
  weights;
- **projections** -- t-SNE and UMAP plots of the feature reservoirs and silhouette scores
  (:mod:`.projections`);
- **captions** -- :func:`~groundsynth.evaluate.captions.evaluate_captions` on the synthetic
  set's caption tables, and per-sample caption consistency;
- ``per_sample.parquet`` (one row per evaluated synthetic sample, :data:`SCORE_COLUMNS`),
  ``per_sample_real.parquet`` (the real reference sample), ``summary.json`` and PNG figures.

Everything streams (see :mod:`.sample_scores`). Scores against maps measure agreement with
WorldCover-derived labels (WorldCover is ~77 % accurate), not with the ground.

The output directory must be new, empty, or hold this same evaluation (which is then computed
again); one holding another command's run, an evaluation with other options or other files is
refused before anything is written. Real and synthetic images of different sizes are
evaluated, with a warning (and a note in the summary) when features are compared.

**Chunks, resuming and Ray.** The images run through the segmenter (and Inception) in chunks of
``chunk_size`` (:mod:`.image_chunks`); with a checkpoint path as the segmenter each finished
chunk is recorded under ``OUT/.evaluate/``, so an interrupted evaluation rerun with the same
options redoes only the unfinished chunks; the records are removed once the evaluation is
written. ``executor="ray"`` runs each chunk as a Ray task (:mod:`groundsynth.distributed`):
the worker loads the segmenter once per process and returns the chunk's record; this process
records it and, once all are done, reads the records back in order. The outputs are the same
bytes as a local run's (``summary.json`` but its timings), and a run begun on one executor
resumes on the other. The executor options are not in ``config.yaml`` nor part of the run's
identity; the manifest's ``executor`` block records them.
"""

from __future__ import annotations

import logging
import os
import shutil
import time
from contextlib import closing
from pathlib import Path
from typing import Any

from groundsynth.data.reader import DatasetReader, open_dataset
from groundsynth.distributed import make_executor
from groundsynth.errors import InputError
from groundsynth.evaluate import synthetic_summary as summ
from groundsynth.evaluate.image_chunks import Execution, Models
from groundsynth.evaluate.sample_scores import (
    SCORE_COLUMNS,
    CaptionScores,
    describe_model,
    load_model,
    score_writer,
    select_ids,
)
from groundsynth.evaluate.set_pass import Progress, SetPass
from groundsynth.evaluate.synthetic_config import (
    EVAL_KEYS,
    NOT_IDENTITY,
    SyntheticEvalConfig,
    resolve_config,
)
from groundsynth.evaluate.tables import copy_table_rows
from groundsynth.io import write_json
from groundsynth.runs import check_run_dir, file_digest, start_run, to_plain

__all__ = [
    "PER_SAMPLE",
    "PER_SAMPLE_REAL",
    "SCORE_COLUMNS",
    "SUMMARY",
    "SyntheticEvalConfig",
    "evaluate_split_captions",
    "evaluate_synthetic",
    "resolve_config",
]

logger = logging.getLogger(__name__)

PER_SAMPLE = "per_sample.parquet"
PER_SAMPLE_REAL = "per_sample_real.parquet"
SUMMARY = "summary.json"
#: Where an evaluation keeps its image chunks' records until it is written.
RECORDS = ".evaluate"
SKIPPED_INCEPTION = "skipped: no local Inception weights"
NOTES = (
    "label fidelity and pixel agreement compare a segmenter's prediction with a map; the maps "
    "are WorldCover labels or pseudo-labels (WorldCover is ~77 % accurate): this is agreement, "
    "not truth",
    "real_reference gives the same scores on real images: the ceiling synthetic samples can "
    "reach with this segmenter",
    "composition: every image weighs the same in the pixel shares; JSD in bits, 0 = identical, "
    "1 = disjoint",
    "silhouette in [-1, 1] on encoder features: near 0 or below = groups overlap (synthetic "
    "looks real to the encoder), near 1 = separable",
    "feature_fidelity.real_halves is the Fréchet distance / KID between two halves of the real "
    "sample: the floor a synthetic set can reach at this sample size (the distance: the median "
    "over random splits, each in frechet_distance_splits; KID: one split)",
)


def evaluate_synthetic(
    real: str | os.PathLike[str],
    synthetic: str | os.PathLike[str],
    out: str | os.PathLike[str],
    *,
    model: Any = None,
    real_splits: tuple[str, ...] | None = None,
    synthetic_splits: tuple[str, ...] | None = None,
    max_samples: int | None = None,
    max_real: int | None = 5000,
    batch_size: int = 32,
    workers: int = 0,
    device: str = "auto",
    seed: int = 0,
    umap: bool = True,
    tsne: bool = True,
    inception_weights: str | os.PathLike[str] | None = None,
    progress: Progress | None = None,
    **options: Any,
) -> dict[str, Any]:
    """Evaluate ``synthetic`` against ``real``; write the outputs in ``out``; return the summary.

    Args:
        model: a segmenter checkpoint path (``load_segmenter``) or a model object (a
            ``Segmenter`` or any module mapping 0..1 images to 7-class logits, with an smp
            ``net.encoder`` or a ``features`` method). ``None``: no label or feature fidelity.
        options: further :class:`SyntheticEvalConfig` fields (``reservoir``, ``captions``, ...).
        progress: ``progress(stage, done, total)`` callback.

    See :class:`SyntheticEvalConfig` for the other arguments and the module doc for outputs.

    Raises:
        InputError: a dataset, split or option is unusable.
        OutputConflictError: ``out`` holds another run or other files (nothing is written).
    """
    cfg = SyntheticEvalConfig(
        real=os.fspath(real),
        synthetic=os.fspath(synthetic),
        out=os.fspath(out),
        model=describe_model(model),
        real_splits=None if real_splits is None else tuple(real_splits),
        synthetic_splits=None if synthetic_splits is None else tuple(synthetic_splits),
        max_samples=max_samples,
        max_real=max_real,
        batch_size=batch_size,
        workers=workers,
        device=device,
        seed=seed,
        umap=umap,
        tsne=tsne,
        inception_weights=None if inception_weights is None else os.fspath(inception_weights),
        **options,
    )
    cfg = resolve_config(cfg)
    if cfg.executor == "ray" and model is not None and not isinstance(model, (str, os.PathLike)):
        raise InputError(
            "on Ray the segmenter is loaded by each worker: give it as a checkpoint path "
            f"(--model FILE), not a {type(model).__name__} object"
        )
    real_reader, synth_reader = open_dataset(cfg.real), open_dataset(cfg.synthetic)
    out_dir = Path(cfg.out)
    _check_out(out_dir, cfg)
    size_note = None
    if model is not None or cfg.inception_weights is not None:
        size_note = _size_note(real_reader, cfg.real_splits, synth_reader, cfg.synthetic_splits)
    run = start_run(out_dir, "evaluate_synthetic", cfg.saved(), seeds={"seed": cfg.seed})
    try:
        if size_note is not None:
            logger.warning(size_note)
        summary, executor = _evaluate(cfg, real_reader, synth_reader, model, out_dir, progress)
        if size_note is not None:
            summary["notes"].append(size_note)
        write_json(out_dir / SUMMARY, summary)
        outputs = sorted(p.name for p in out_dir.iterdir() if p.is_file() or p.name == "captions")
        run.finish(
            inputs=[cfg.real, cfg.synthetic, *([cfg.model] if cfg.model else [])],
            outputs={"files": outputs},
            digest=[out_dir / SUMMARY, out_dir / PER_SAMPLE],
            extra={"executor": executor},
        )
        shutil.rmtree(out_dir / RECORDS, ignore_errors=True)  # written: nothing to resume
    finally:
        run.close()
    return summary


def _check_out(out: Path, cfg: SyntheticEvalConfig) -> None:
    """Refuse an ``out`` holding another command's run, other files, or an evaluation with
    other options (nothing is written); the same evaluation's folder is evaluated again."""
    if check_run_dir(
        out, to_plain(cfg), what="synthetic evaluation", ignore=NOT_IDENTITY, required=EVAL_KEYS
    ):
        logger.info("%s: evaluating again into the earlier run of this evaluation", out)


def _size_note(
    real: DatasetReader,
    real_splits: tuple[str, ...] | None,
    synthetic: DatasetReader,
    synthetic_splits: tuple[str, ...] | None,
) -> str | None:
    """A warning when the splits' image sizes differ (first image of each split), else None."""
    sizes: dict[str, tuple[int, int]] = {}
    for name, reader, splits in (
        ("real", real, real_splits),
        ("synthetic", synthetic, synthetic_splits),
    ):
        for split in splits or ():
            ids = reader.ids(split)
            if ids:
                h, w = reader.read_image(split, ids[0]).shape[:2]
                sizes[f"{name}/{split}"] = (int(h), int(w))
    if len(set(sizes.values())) < 2:
        return None
    listed = ", ".join(f"{k} {h}x{w} px" for k, (h, w) in sizes.items())
    return (
        f"image sizes differ ({listed}): feature fidelity (Fréchet distance, KID, PRDC) compares "
        "features of images of different resolutions, which adds to the distances; resize one "
        "set to the other's size for a like-for-like comparison"
    )


def _models(cfg: SyntheticEvalConfig, model: Any) -> Models | None:
    """What workers need to rebuild the models (and what keys the chunk records); None for a
    model object (its chunks run here, recorded in a temporary folder)."""
    if model is not None and not isinstance(model, (str, os.PathLike)):
        return None
    weights = cfg.inception_weights
    return Models(
        model=None if model is None else str(Path(model).resolve()),
        model_sha256=None if model is None else file_digest(model),
        inception=None if weights is None else str(Path(weights).resolve()),
        inception_sha256=None if weights is None else file_digest(weights),
        device=cfg.device,
    )


def _evaluate(
    cfg: SyntheticEvalConfig,
    real_reader: DatasetReader,
    synth_reader: DatasetReader,
    model: Any,
    out: Path,
    progress: Progress | None,
) -> tuple[dict[str, Any], dict[str, Any]]:
    """The summary, and the executor's description (for the manifest)."""
    for stale in (PER_SAMPLE_REAL, "label_fidelity.png", "projections.parquet"):
        (out / stale).unlink(missing_ok=True)  # outputs of an earlier run this one may not write
    for stale_png in out.glob("projection_*.png"):
        stale_png.unlink()
    on_ray = cfg.executor == "ray"
    device = None
    model_info: dict[str, Any] | None = None
    source = model
    if model is not None or cfg.inception_weights is not None:
        from groundsynth.benchmark.model import resolve_device

        # on Ray the workers run the models; here they are only loaded (on the CPU) to check
        device = resolve_device("cpu" if on_ray else cfg.device)
    if model is not None:
        model, model_info = load_model(model, device)
    inception = None
    if cfg.inception_weights is not None:
        from groundsynth.evaluate.inception import InceptionFeatures

        inception = InceptionFeatures(cfg.inception_weights, device=device)
    models = _models(cfg, source)
    execution = Execution(
        make_executor(cfg.executor, cfg.ray_address, cfg.ray_cpus, cfg.ray_gpus),
        models,
        cfg.chunk_size,
    )

    def records(name: str) -> Path | None:
        return None if models is None else out / RECORDS / name

    if cfg.captions:
        captions_summary, caption_scores = evaluate_split_captions(
            synth_reader,
            cfg.synthetic_splits,
            out,  # type: ignore[arg-type]
        )
    else:
        captions_summary, caption_scores = "skipped: disabled", None
    pass_kw = {
        "model": model,
        "inception": inception,
        "device": device,
        "batch_size": cfg.batch_size,
        "workers": cfg.workers,
        "reservoir": cfg.reservoir,
        "seed": cfg.seed,
        "progress": progress,
        "execution": execution,
    }
    with closing(execution.executor):
        t0 = time.perf_counter()
        synth_ids = select_ids(synth_reader, cfg.synthetic_splits, cfg.max_samples, cfg.seed)  # type: ignore[arg-type]
        with score_writer(out / PER_SAMPLE) as writer:
            synth = SetPass(
                synth_reader,
                name="synthetic",
                default_origin="synthetic",
                writer=writer,
                captions=caption_scores,
                records=records("synthetic"),
                **pass_kw,
            ).run(synth_ids, None)
        t1 = time.perf_counter()
        real_ids = {s: real_reader.ids(s) for s in cfg.real_splits}  # type: ignore[union-attr]
        image_subset = None
        if model is not None or inception is not None:
            chosen = select_ids(real_reader, cfg.real_splits, cfg.max_real, cfg.seed)  # type: ignore[arg-type]
            image_subset = {s: set(v) for s, v in chosen.items()}
        with score_writer(out / PER_SAMPLE_REAL, enabled=image_subset is not None) as writer:
            real = SetPass(
                real_reader,
                name="real",
                default_origin="real",
                halves=True,
                writer=writer,
                write_all=False,
                records=records("real"),
                **pass_kw,
            ).run(real_ids, image_subset if image_subset is not None else {})
        t2 = time.perf_counter()

    generators = sorted(synth.origins)
    summary: dict[str, Any] = {
        "real": summ.set_info(real_reader, cfg.real_splits, real),
        "synthetic": summ.set_info(synth_reader, cfg.synthetic_splits, synth),
        "generators": generators,
        "composition": summ.composition(real, synth, generators),
    }
    from groundsynth.evaluate import synthetic_plots as plots

    files = {"per_sample": PER_SAMPLE}
    groups = {"real": real.composition}
    groups.update(summ.generator_groups(synth, "composition_by_origin", "composition", generators))
    files["composition_plot"] = plots.composition_figure(groups, out / "composition.png").name
    if model is not None:
        summary["label_fidelity"] = summ.label_fidelity(real, synth, generators)
        fid_groups = {"real": real.fidelity}
        fid_groups.update(
            summ.generator_groups(synth, "fidelity_by_origin", "fidelity", generators)
        )
        files["label_fidelity_plot"] = plots.fidelity_figure(
            fid_groups, out / "label_fidelity.png"
        ).name
        summary["feature_fidelity"] = summ.feature_block(
            cfg, real, synth, generators, "features", "features_by_origin"
        )
        summary["feature_fidelity"]["encoder"] = {
            "checkpoint": model_info.get("checkpoint") if model_info else None,
            "model": (model_info or {}).get("model"),
            "dimension": int(real.features.mean.shape[0]) if real.features.n else None,  # type: ignore[union-attr]
        }
        summary["projections"] = summ.projections(cfg, real, synth, generators, out, files)
        files["per_sample_real"] = PER_SAMPLE_REAL
    else:
        reason = "skipped: no segmenter (--model) given"
        summary["label_fidelity"] = summary["feature_fidelity"] = reason
        summary["projections"] = reason
    if inception is not None:
        summary["inception_fid"] = summ.feature_block(
            cfg, real, synth, generators, "inception", "inception_by_origin"
        )
        summary["inception_fid"]["weights"] = cfg.inception_weights
        files["per_sample_real"] = PER_SAMPLE_REAL
    else:
        summary["inception_fid"] = SKIPPED_INCEPTION
    summary["captions"] = captions_summary
    images = synth.images + real.images
    summary["throughput"] = {
        "synthetic_seconds": round(t1 - t0, 3),
        "real_seconds": round(t2 - t1, 3),
        "images_through_models": images,
        "images_per_second": round(images / (t2 - t0), 3) if images else None,
        "device": None if device is None else cfg.device if on_ray else str(device),
    }
    summary["files"] = files
    notes = list(NOTES)
    if model is not None and "train" in (cfg.real_splits or ()):
        notes.append(
            "the real reference includes the 'train' split, which may be the segmenter's training "
            "data: its label fidelity is then optimistic; use real_splits=('test',)"
        )
    summary["notes"] = notes
    return summ.clean(summary), execution.describe()


def evaluate_split_captions(
    reader: DatasetReader, splits: tuple[str, ...], out: Path
) -> tuple[Any, CaptionScores | None]:
    """Run :func:`~groundsynth.evaluate.captions.evaluate_captions` on the caption table of each
    of ``splits`` (outputs in ``out/captions/<split>/``); return (summaries per split, or a
    "skipped: ..." string, and the per-image consistency aggregates).

    A table holding several splits (as ARAS400k's) has its split's rows extracted first, in
    chunks. Compositions come from ``metadata.parquet`` when the dataset has one, else from
    the table's own percentage columns.
    """
    found = {s: reader.captions_path(s) for s in splits}
    found = {s: f for s, f in found.items() if f is not None}
    if not found:
        return "skipped: the synthetic dataset has no caption tables (captions/<split>.csv)", None
    from groundsynth.evaluate.captions import SCORES_PARQUET, evaluate_captions

    comps = reader.root if reader.layout == "groundsynth" else None
    summaries: dict[str, Any] = {}
    score_files = []
    for split, (path, filter_split) in found.items():
        dest = out / "captions" / split
        if filter_split:  # a table of several splits: evaluate this split's rows only
            path = dest / f"{split}.csv"
            copy_table_rows(found[split][0], path, split=split)
        summaries[split] = evaluate_captions(path, dest, compositions=comps)
        score_files.append(dest / SCORES_PARQUET)
    return summaries, CaptionScores.read(score_files)
