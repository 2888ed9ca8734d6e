"""The blocks of ``evaluate synthetic``'s summary, from the streaming statistics of a
:class:`~groundsynth.evaluate.set_pass.SetPass` over each set.

Each function turns :class:`~groundsynth.evaluate.set_pass.SetStats` into a JSON-able block:
composition (:func:`composition`), label fidelity (:func:`label_fidelity`), feature fidelity
(:func:`feature_block`: Fréchet distance, KID, PRDC), projections and silhouettes
(:func:`projections`). Undefined values are ``None`` (:func:`clean`); what could not be computed
is a string saying why ("skipped: ...").
"""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

from groundsynth.data.reader import DatasetReader
from groundsynth.evaluate.composition import compare
from groundsynth.evaluate.fidelity import FeatureStats, frechet_distance, kid, prdc
from groundsynth.evaluate.set_pass import SetStats
from groundsynth.io import atomic_path

if TYPE_CHECKING:
    from groundsynth.evaluate.synthetic import SyntheticEvalConfig

__all__ = [
    "clean",
    "composition",
    "feature_block",
    "generator_groups",
    "label_fidelity",
    "projections",
    "set_info",
]

logger = logging.getLogger(__name__)

_METHOD_NAMES = {"tsne": "t-SNE", "umap": "UMAP"}


def set_info(reader: DatasetReader, splits: Any, stats: SetStats) -> dict[str, Any]:
    """Where a set came from and what was counted of it."""
    return {
        "root": str(reader.root),
        "layout": reader.layout,
        "splits": list(splits),
        "samples": stats.composition.images,
        "samples_through_models": stats.images,
        "composition_source": dict(stats.composition_sources),
        "origins": dict(sorted(stats.origins.items())),
    }


def generator_groups(
    synth: SetStats, by_origin: str, overall: str, generators: list[str]
) -> dict[str, Any]:
    """``{name: stats}`` of the synthetic set: one group per generator, or ``synthetic``."""
    table = getattr(synth, by_origin)
    if len(generators) > 1:
        return {_group_name(g): table[g] for g in generators if g in table}
    return {"synthetic": getattr(synth, overall)}


def _group_name(origin: str) -> str:
    return f"synthetic/{origin}" if origin == "real" else origin


def composition(real: SetStats, synth: SetStats, generators: list[str]) -> dict[str, Any]:
    """Composition comparison (:func:`~groundsynth.evaluate.composition.compare`), the
    per-class histograms, and per-generator JSDs when the set mixes generators."""
    out = compare(real.composition, synth.composition)
    out["histograms"] = {
        "bins": int(real.composition.histogram.shape[1]),
        "real": real.composition.histogram.tolist(),
        "synthetic": synth.composition.histogram.tolist(),
    }
    if len(generators) > 1:
        out["per_generator"] = {}
        for g in generators:
            c = compare(real.composition, synth.composition_by_origin[g], ("real", g))
            out["per_generator"][g] = {
                "images": synth.composition_by_origin[g].images,
                "jsd_pixel_share": c["jsd_pixel_share"],
                "jsd_per_class": c["jsd_per_class"],
                "pixel_share": c["pixel_share"][g],
            }
    return out


def label_fidelity(real: SetStats, synth: SetStats, generators: list[str]) -> dict[str, Any]:
    """Label fidelity of the synthetic set, the real reference, their gap, per generator."""
    s = synth.fidelity.summary()  # type: ignore[union-attr]
    r = real.fidelity.summary()  # type: ignore[union-attr]
    out: dict[str, Any] = {
        "synthetic": s,
        "real_reference": r,
        "gap_mean_sample_miou": _gap(r["sample_miou"]["mean"], s["sample_miou"]["mean"]),
        "gap_pooled_miou": _gap(r["pooled"]["miou"], s["pooled"]["miou"]),
    }
    if len(generators) > 1:
        out["per_generator"] = {}
        for g in generators:
            gs = synth.fidelity_by_origin[g].summary()
            gs.pop("histogram")
            out["per_generator"][g] = gs
    return out


def feature_block(
    cfg: SyntheticEvalConfig,
    real: SetStats,
    synth: SetStats,
    generators: list[str],
    overall: str,
    by_origin: str,
) -> dict[str, Any]:
    """Feature fidelity of the synthetic set (and each generator) against the real sample,
    from ``overall``/``by_origin`` :class:`FeatureStats` (encoder or Inception features)."""
    ref: FeatureStats = getattr(real, overall)
    out: dict[str, Any] = {
        "real_samples": ref.n,
        "synthetic": _fidelity(cfg, ref, getattr(synth, overall)),
    }
    if overall == "features" and real.halves is not None:
        out["real_halves"] = _fidelity(cfg, *real.halves, prdc_too=False)
        if real.splits is not None and real.splits.frechet_distances():
            # the median over random splits: one split's value is a noisy yardstick
            fds = real.splits.frechet_distances()
            out["real_halves"]["frechet_distance"] = _round(real.splits.median())
            out["real_halves"]["frechet_distance_splits"] = [_round(v) for v in fds]
    if len(generators) > 1:
        table = getattr(synth, by_origin)
        out["per_generator"] = {g: _fidelity(cfg, ref, table[g]) for g in generators}
    return out


def _fidelity(
    cfg: SyntheticEvalConfig, a: FeatureStats, b: FeatureStats, *, prdc_too: bool = True
) -> dict[str, Any]:
    """Fréchet distance, KID and PRDC of ``b`` against reference ``a`` (skips named)."""
    res: dict[str, Any] = {"samples": b.n}
    if a.n >= 2 and b.n >= 2:
        res["frechet_distance"] = _round(frechet_distance(a.mean, a.cov, b.mean, b.cov))
    else:
        res["frechet_distance"] = "skipped: needs at least 2 samples per set"
    xa, xb = a.sample(), b.sample()
    if len(xa) >= 2 and len(xb) >= 2:
        mean, std = kid(
            xa, xb, subsets=cfg.kid_subsets, subset_size=cfg.kid_subset_size, seed=cfg.seed
        )
        res["kid"] = {"mean": _round(mean), "std": _round(std)}
    else:
        res["kid"] = "skipped: needs at least 2 samples per set"
    if prdc_too:
        if len(xa) > cfg.prdc_k and len(xb) > cfg.prdc_k:
            res["prdc"] = {k: _round(v) for k, v in prdc(xa, xb, k=cfg.prdc_k).items()}
        else:
            res["prdc"] = f"skipped: needs more than k={cfg.prdc_k} samples per set"
    return res


def projections(
    cfg: SyntheticEvalConfig,
    real: SetStats,
    synth: SetStats,
    generators: list[str],
    out: Path,
    files: dict[str, str],
) -> dict[str, Any]:
    """Silhouette scores and the t-SNE / UMAP plots of the feature reservoirs; records the
    files written in ``files``."""
    from groundsynth.evaluate import synthetic_plots as plots
    from groundsynth.evaluate.projections import (
        balanced_sample,
        project,
        silhouettes,
        umap_available,
    )

    groups = {"real": real.features.sample()}  # type: ignore[union-attr]
    for name, stats in generator_groups(
        synth, "features_by_origin", "features", generators
    ).items():
        groups[name] = stats.sample()
    res: dict[str, Any] = {
        "silhouette": silhouettes(
            groups, max_per_group=cfg.projection_points, seed=cfg.seed, reference="real"
        )
    }
    if len(generators) > 1:
        pooled = silhouettes(
            {"real": groups["real"], "synthetic": synth.features.sample()},  # type: ignore[union-attr]
            max_per_group=cfg.projection_points,
            seed=cfg.seed,
        )
        res["silhouette"]["pairwise"].update(pooled["pairwise"])
    x, labels, names = balanced_sample(groups, cfg.projection_points, cfg.seed)
    methods = {"tsne": cfg.tsne, "umap": cfg.umap}
    table: dict[str, list[Any]] = {"method": [], "group": [], "x": [], "y": []}
    for method, wanted in methods.items():
        if not wanted:
            res[method] = "skipped: disabled"
            continue
        if method == "umap" and not umap_available():
            res[method] = "skipped: umap-learn is not installed (pip install umap-learn)"
            logger.warning("UMAP projection skipped: umap-learn is not installed")
            continue
        if len(x) < 4:
            res[method] = f"skipped: {len(x)} feature vectors, need at least 4"
            continue
        coords = project(x, method, seed=cfg.seed)  # type: ignore[arg-type]
        name = f"projection_{method}.png"
        title = f"{_METHOD_NAMES[method]} of segmenter-encoder features"
        plots.projection_figure(coords, labels, names, out / name, title)
        files[f"projection_{method}"] = name
        res[method] = name
        table["method"] += [method] * len(coords)
        table["group"] += [names[i] for i in labels]
        table["x"] += coords[:, 0].tolist()
        table["y"] += coords[:, 1].tolist()
    if table["method"]:
        import pandas as pd

        with atomic_path(out / "projections.parquet", suffix=".parquet") as tmp:
            pd.DataFrame(table).to_parquet(tmp, index=False)
        files["projection_points"] = "projections.parquet"
    return res


def _round(x: float) -> float | None:
    return None if x is None or x != x else round(float(x), 6)


def _gap(a: float | None, b: float | None) -> float | None:
    """``a - b`` (reference minus synthetic), None when either is undefined."""
    return None if a is None or b is None else _round(a - b)


def clean(obj: Any) -> Any:
    """Replace NaN/inf floats by None, recursively (strict JSON)."""
    if isinstance(obj, dict):
        return {k: clean(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [clean(v) for v in obj]
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj
