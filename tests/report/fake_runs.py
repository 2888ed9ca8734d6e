"""Run directories for report tests, made in milliseconds: the real layout and file names,
tables of any length, but image files only for the samples a report shows.

Used by the report tests and by ``benchmarks/bench_report.py``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from PIL import Image

from groundsynth.classes import CLASS_NAMES, NUM_CLASSES
from groundsynth.data.contract import image_path, mask_path
from groundsynth.report.samples import MAX_SAMPLES, pick_ids

SPLIT_SHARES = {"train": 0.8, "val": 0.1, "test": 0.1}


def _write_sample(root: Path, split: str, sid: str, rng: np.random.Generator, size: int) -> None:
    yy, xx = np.mgrid[0:size, 0:size]
    mask = ((xx // max(1, size // 4) + yy // max(1, size // 3) + rng.integers(0, NUM_CLASSES))
            % NUM_CLASSES).astype(np.uint8)  # fmt: skip
    rgb = np.stack([mask * 30 + 20, 120 + (xx % 16) * 4, 200 - mask * 20], axis=-1)
    rgb = (rgb + rng.integers(0, 12, rgb.shape)).clip(0, 255).astype(np.uint8)
    image_path(root, split, sid).parent.mkdir(parents=True, exist_ok=True)
    mask_path(root, split, sid).parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(rgb).save(image_path(root, split, sid))
    Image.fromarray(mask).save(mask_path(root, split, sid))


def fake_dataset(
    root: Path,
    n: int = 200,
    *,
    splits: dict[str, float] | None = None,
    captions: bool = True,
    leakage: tuple[int, int] | None = (0, 20),
    size: int = 64,
    missing: int = 0,
    seed: int = 0,
) -> Path:
    """A groundsynth-layout dataset of ``n`` samples: metadata (ids, splits, class fractions),
    caption tables, a build manifest with leakage figures ``(touching, test patches)``; image
    and mask files only for the samples a report's grid picks in each split (``missing`` of
    them left out)."""
    rng = np.random.default_rng(seed)
    shares = splits or SPLIT_SHARES
    counts = {s: int(round(n * f)) for s, f in shares.items()}
    ids, split_col = [], []
    for s, k in counts.items():
        ids += [f"{s}_{i:07d}" for i in range(k)]
        split_col += [s] * k
    fracs = rng.dirichlet(np.ones(NUM_CLASSES), size=len(ids))
    meta = pd.DataFrame({"id": ids, "split": split_col})
    for c, name in enumerate(CLASS_NAMES):
        meta[f"frac_{name}"] = fracs[:, c]
    root.mkdir(parents=True, exist_ok=True)
    meta.to_parquet(root / "metadata.parquet", index=False)
    for s in counts:
        rows = meta[meta["split"] == s]
        if captions:
            (root / "captions").mkdir(exist_ok=True)
            table = pd.DataFrame({"filename": rows["id"] + ".png", "split": s})
            top = np.asarray(CLASS_NAMES)[
                rows[[f"frac_{c}" for c in CLASS_NAMES]].to_numpy().argmax(1)
            ]
            table["text_template"] = np.char.add("A landscape mostly of ", top.astype(str))
            table.to_csv(root / "captions" / f"{s}.csv", index=False)
        shown = pick_ids(sorted(rows["id"]), MAX_SAMPLES)
        for sid in shown[missing:] if s == next(iter(counts)) else shown:
            _write_sample(root, s, sid, rng, size)
    outputs: dict[str, Any] = {"patches": counts}
    if leakage is not None:
        outputs["leakage"] = {
            "test_patches_touching_train": leakage[0],
            "test_patches": leakage[1],
        }
    (root / "manifest.json").write_text(json.dumps({"stage": "build", "outputs": outputs}))
    (root / "config.yaml").write_text(
        f"imagery: [{root.parent / 'world' / 'sentinel2.tif'}]\n"
        f"landcover: [{root.parent / 'world' / 'landcover.tif'}]\nsize: {size}\n"
    )
    return root


def _diff(comparison: str, domain: str, metric: str, mean: float, half: float, wins: int) -> dict:
    return {
        "comparison": comparison, "domain": domain, "metric": metric, "mean": mean, "n": 3,
        "wins": wins, "ci95_low": mean - half, "ci95_high": mean + half, "ci_method": "t",
        "boot95_low": mean - half / 2, "boot95_high": mean + half / 2, "p_sign_flip": 0.25,
    }  # fmt: skip


def fake_experiment(
    root: Path, source: Path, target: Path, *, learned: bool = False, synthetic_n: int = 60
) -> Path:
    """An experiment directory as ``experiment transfer`` writes it (experiment.json,
    results.csv, its synthetic sets), with figures made up: in-domain no difference,
    cross-region grounded better; ``learned``: every learning check passes."""
    root.mkdir(parents=True, exist_ok=True)
    pair = "real,synthetic/grounded:1.0  −  real,synthetic/ungrounded:1.0"
    diffs = [
        _diff(pair, "in-domain (A test)", "f1", -0.0045, 0.028, 1),
        _diff(pair, "in-domain (A test)", "iou", -0.0065, 0.044, 1),
        _diff(pair, "cross-region (B)", "f1", 0.0863, 0.05, 3),
        _diff(pair, "cross-region (B)", "iou", 0.0543, 0.04, 3),
    ]
    table = [
        {"regime": r, "domain": d, "n_seeds": 3, "f1_mean": f, "f1_ci95_low": f - 0.02,
         "f1_ci95_high": f + 0.02, "iou_mean": f - 0.1, "iou_ci95_low": f - 0.12,
         "iou_ci95_high": f - 0.08}
        for r in ("real", "real,synthetic/ungrounded:1.0", "real,synthetic/grounded:1.0")
        for d, f in (("in-domain (A test)", 0.74), ("cross-region (B)", 0.25))
    ]  # fmt: skip
    checks = [
        {"model": f"segmenter unet {r} seed {s}", "figure": 0.69, "floor": 0.60 if learned else 0.80,
         "passed": learned, "rule": "in-domain macro IoU above the pixel floor's", "kind": "segmenter"}
        for r in ("real", "real,synthetic/grounded:1.0") for s in range(3)
    ] + [
        {"model": "grounded generator: label fidelity", "figure": 0.61, "floor": 0.56,
         "passed": True, "rule": "read back at least 0.7x the real ceiling", "kind": "generator"},
        {"model": "ungrounded generator: feature fidelity", "figure": 150.9, "floor": 91.8,
         "passed": learned, "rule": "FD at most 10x the real halves'", "kind": "generator"},
    ]  # fmt: skip
    fidelity = {
        name: {
            "label_fidelity": {"synthetic": {"samples": synthetic_n, "sample_miou": {"mean": lf}},
                               "real_reference": {"samples": 40, "sample_miou": {"mean": 0.545}}},
            "feature_fidelity": {"synthetic": {"frechet_distance": fd, "prdc": {"precision": 0.9, "recall": 0.5}},
                                 "real_halves": {"frechet_distance": 9.18}},
            "composition": {"jsd_pixel_share": 0.01},
        }
        for name, lf, fd in (("grounded", 0.41 if learned else 0.36, 46.0), ("ungrounded", 1.0, 151.0))
    }  # fmt: skip
    doc = {
        "source": str(source), "target": str(target), "n_real_train": 160,
        "synthetic_sizes": {"grounded": synthetic_n, "ungrounded": synthetic_n},
        "grounding_filter": {"threshold": 0.2, "rule": "given"}, "family": "diffusion",
        "generators": {"grounded": "conditional-diffusion", "ungrounded": "diffusion"},
        "learning": {"passed": learned, "failed": [c["model"] for c in checks if not c["passed"]],
                     "checks": checks},
        "budgets": [1.0], "seeds": [0, 1, 2], "table": table, "differences": diffs,
        "fidelity": fidelity, "notes": ["made up for the report tests"],
    }  # fmt: skip
    (root / "experiment.json").write_text(json.dumps(doc))
    (root / "config.yaml").write_text("preset: small\n")
    pd.DataFrame(table).to_csv(root / "results.csv", index=False)
    for name in ("grounded", "ungrounded"):
        fake_dataset(root / "synthetic" / name, synthetic_n, splits={"synth": 1.0},
                     captions=False, leakage=None, seed=len(name))  # fmt: skip
    return root


def fake_table(root: Path, rows: int = 100) -> Path:
    """A benchmark-like run: ``results.csv`` of ``rows`` rows."""
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    pd.DataFrame(
        {"arch": np.where(np.arange(rows) % 2, "unet", "fpn"), "seed": np.arange(rows) % 10,
         "f1": rng.random(rows), "iou": rng.random(rows)}
    ).to_csv(root / "results.csv", index=False)  # fmt: skip
    (root / "manifest.json").write_text(json.dumps({"stage": "benchmark-segmentation"}))
    return root


#: Metrics of :func:`fake_metric_utility`: one whose label needs escaping, one constant.
FAKE_UTILITY_METRICS = {
    "lf_floor": {"direction": 1, "label": "label fidelity (pixel floor)",
                 "description": "macro IoU of the pixel floor's reading against the maps"},
    "fd": {"direction": -1, "label": "FD (segmenter features)",
           "description": "Fréchet distance to real A on the segmenter's encoder features"},
    "prec": {"direction": 1, "label": "precision <k=5>", "description": "k-NN precision"},
    "size_px": {"direction": 1, "label": "patch size (px)", "description": "constant by design"},
}  # fmt: skip
FAKE_UTILITY_DOMAINS = ("in-domain (A test)", "cross-region (B)")


def _corr(domain: str, metric: str, rho: float | None, lo: float | None, hi: float | None,
          logo: float | None) -> dict:  # fmt: skip
    direction = FAKE_UTILITY_METRICS[metric]["direction"]
    tau = None if rho is None else rho * 0.8
    return {
        "domain": domain, "metric": metric, "direction": direction, "n_sets": 12,
        "spearman": rho, "spearman_p": None if rho is None else 0.03,
        "spearman_ci95_low": lo, "spearman_ci95_high": hi, "kendall": tau,
        "kendall_p": None if rho is None else 0.04,
        "kendall_ci95_low": None if lo is None else lo * 0.8,
        "kendall_ci95_high": None if hi is None else hi * 0.8,
        "oriented_spearman": None if rho is None else rho * direction,
        "oriented_kendall": None if tau is None else tau * direction,
        "logo_concordance": logo, "logo_generators": 3, "constant": rho is None,
    }  # fmt: skip


def fake_metric_utility(root: Path, *, resolved: bool = False) -> Path:
    """A ``metric-utility`` run directory (metric_utility.json, sets.csv, gains_long.csv,
    utility.csv, correlations.csv; no scatter plots) of 12 sets from 3 generators, with figures made up:
    in-domain, label fidelity predicts the gain (ρ = 0.71 [0.35, 0.90]); cross-region, the
    best predictor's CI includes 0 (FD, oriented ρ = 0.31 [-0.25, 0.72]) unless ``resolved``
    (0.61 [0.15, 0.85])."""
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    generators = ("conditional-diffusion", "pix2pix", "diffusion")
    sets = []
    for i in range(12):
        gen = generators[i % 3]
        sets.append({
            "set": f"{gen}@{100 * (i // 3 + 1)}", "generator": gen,
            "kind": "ungrounded" if gen == "diffusion" else "grounded", "step": 100 * (i // 3 + 1),
            "filtered": i % 4 == 1, "targeted": i % 4 == 2, "n": 90 + i,
            "lf_floor": 0.2 + 0.03 * i, "fd": 40.0 - 2 * i + rng.normal(),
            "prec": None if i == 5 else float(rng.random()), "size_px": 64,
        })  # fmt: skip
    utility = [
        {"set": s["set"], "domain": d, "gain_mean": g, "gain_std": 0.01,
         "gain_ci95_low": None if k == 0 else g - 0.02, "gain_ci95_high": None if k == 0 else g + 0.02,
         "n_seeds": 2}
        for k, s in enumerate(sets)
        for d, g in zip(FAKE_UTILITY_DOMAINS, (0.002 * k - 0.005, 0.0123 if k == 3 else 0.001 * k))
    ]  # fmt: skip
    cross = (0.61, 0.15, 0.85) if resolved else (0.31, -0.25, 0.72)
    ind, crd = FAKE_UTILITY_DOMAINS
    correlations = [
        _corr(ind, "lf_floor", 0.71, 0.35, 0.90, 0.78),
        _corr(ind, "fd", -0.52, -0.80, -0.05, 0.66),
        _corr(ind, "prec", 0.20, -0.30, 0.60, None),
        _corr(ind, "size_px", None, None, None, None),
        _corr(crd, "lf_floor", 0.12, -0.40, 0.60, 0.55),
        _corr(crd, "fd", -cross[0], -cross[2], -cross[1], 0.58),
        _corr(crd, "prec", -0.05, -0.50, 0.45, None),
        _corr(crd, "size_px", None, None, None, None),
    ]
    best = {
        ind: {"single": {"metric": "lf_floor", "oriented_spearman": 0.71, "ci95_low": 0.35,
                         "ci95_high": 0.90, "logo_concordance": 0.78,
                         "logo_concordance_reselected": 0.72},
              "combination": {"metrics": ["lf_floor", "fd"], "oriented_spearman": 0.80,
                              "ci95_low": 0.50, "ci95_high": 0.93, "logo_concordance": 0.81},
              "ranking": ["lf_floor", "fd", "prec"]},
        crd: {"single": {"metric": "fd", "oriented_spearman": cross[0], "ci95_low": cross[1],
                         "ci95_high": cross[2], "logo_concordance": None},
              "combination": {"metrics": ["fd", "lf_floor"], "oriented_spearman": 0.35,
                              "ci95_low": 0.05 if resolved else -0.20, "ci95_high": 0.75,
                              "logo_concordance": 0.60},
              "ranking": ["fd", "lf_floor", "prec"]},
    }  # fmt: skip
    doc = {
        "question": "Do the interpretable metrics predict what synthetic data adds?",
        "task": "segmentation", "utility_metric": "iou", "seeds": [0, 1],
        "domains": list(FAKE_UTILITY_DOMAINS),
        "baseline": {ind: {"iou_mean": 0.71, "n_seeds": 2}, crd: {"iou_mean": 0.25, "n_seeds": 2}},
        "metrics": FAKE_UTILITY_METRICS, "sets": sets, "utility": utility,
        "correlations": correlations, "best": best, "notes": ["made up for the report tests"],
    }  # fmt: skip
    (root / "metric_utility.json").write_text(json.dumps(doc))
    pd.DataFrame(sets).to_csv(root / "sets.csv", index=False)
    pd.DataFrame(utility).to_csv(root / "utility.csv", index=False)
    pd.DataFrame(
        [{"set": u["set"], "seed": seed, "domain": u["domain"], "gain": u["gain_mean"] + shift}
         for u in utility for seed, shift in ((0, -0.005), (1, 0.005))]
    ).to_csv(root / "gains_long.csv", index=False)  # fmt: skip
    pd.DataFrame(correlations).to_csv(root / "correlations.csv", index=False)
    return root
