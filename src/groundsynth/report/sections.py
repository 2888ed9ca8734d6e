"""Report sections: one renderer per kind of run directory, chosen by what the folder holds.

Kinds (see :func:`detect_kind`): ``dataset`` (a dataset directory: ours or ARAS400k),
``captions`` (an ``evaluate captions`` output), ``table`` (any run with a ``results.csv``,
e.g. a segmentation benchmark or an experiment), ``run`` (any other run directory with a
``manifest.json``). Renderers stream what they read: tables are read column-wise and image
samples one at a time.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from groundsynth.classes import CLASS_NAMES
from groundsynth.data.masks import colourise
from groundsynth.report import plots
from groundsynth.report.html import Page
from groundsynth.report.learning import learning_section

__all__ = ["SECTIONS", "detect_kind", "render"]

log = logging.getLogger(__name__)

#: At most this many rows of per-image fractions feed the distribution plots.
MAX_PLOT_ROWS = 20_000


def _manifest(path: Path) -> dict[str, Any]:
    try:
        return json.loads((path / "manifest.json").read_text())
    except (OSError, ValueError):
        return {}


def detect_kind(path: Path) -> str:
    """What a run directory is, from the files it holds."""
    if (path / "experiment.json").is_file():
        return "experiment"
    if (path / "caption_metrics.json").is_file():
        return "captions"
    if (path / "summary.json").is_file() and _manifest(path).get("stage") == "evaluate_synthetic":
        return "synthetic"
    if (path / "results.csv").is_file():
        return "table"
    if (path / "metadata.parquet").is_file() or any(
        (path / s / "images").is_dir() for s in ("train", "val", "test", "synth")
    ):
        return "dataset"
    if (path / "manifest.json").is_file():
        return "run"
    return "unknown"


# ----------------------------------------------------------------------------- dataset
def _fractions(reader: Any, split: str) -> np.ndarray | None:
    """(N, 7) per-image class fractions of a split, from metadata or percentage tables."""
    md = (
        reader.metadata(split, columns=[f"frac_{n}" for n in CLASS_NAMES])
        if reader.layout == "groundsynth"
        else None
    )
    if md is not None and len(md):
        return md.to_numpy(dtype=np.float64)
    pct = reader.percentages(split)
    if pct is not None and len(pct):
        return pct[list(CLASS_NAMES)].to_numpy(dtype=np.float64) / 100.0
    return None


def dataset_section(page: Page, path: Path) -> None:
    from groundsynth.data.reader import open_dataset

    reader = open_dataset(path)
    page.heading(f"Dataset: {path.name}")
    manifest = _manifest(path)
    splits = reader.splits()
    counts = {s: reader.len(s) for s in splits}
    page.paragraph(
        f"{path} ({reader.layout} layout): "
        + ", ".join(f"{s} {n}" for s, n in counts.items())
        + " images."
    )
    outputs = manifest.get("outputs", {})
    if outputs.get("skipped"):
        page.paragraph(
            "Patches skipped while building: "
            + ", ".join(f"{k} {v}" for k, v in sorted(outputs["skipped"].items()))
            + "."
        )
    leak = outputs.get("leakage")
    if leak:
        page.paragraph(
            f"Spatial split leakage: {leak['test_patches_touching_train']} of {leak['test_patches']} test patches "
            "touch a training patch."
        )
    fractions = {s: f for s in splits if (f := _fractions(reader, s)) is not None}
    if fractions:
        shares = {s: f.mean(axis=0) for s, f in fractions.items()}
        page.table(
            [[s, counts[s], *(100 * v for v in shares[s])] for s in fractions],
            ["split", "images", *(f"{c} %" for c in CLASS_NAMES)], digits=1,
        )  # fmt: skip
        page.figure(
            plots.composition_bars(shares),
            "Mean class share per split (mean of per-image fractions).",
        )
        sampled = {s: f[:: max(1, len(f) // MAX_PLOT_ROWS)] for s, f in fractions.items()}
        page.figure(
            plots.composition_boxes(sampled),
            "Per-image class fractions (boxes: quartiles, whiskers: 1.5 IQR).",
        )
    _samples(page, reader, splits)


def _samples(page: Page, reader: Any, splits: list[str], k: int = 4, label: str = "image") -> None:
    split = next((s for s in splits if reader.len(s)), None)
    if split is None:
        return
    captions = reader.captions(split)
    texts: dict[str, str] = {}
    if captions is not None and len(captions):
        stream_cols = [
            c for c in captions.columns if c not in ("id", "filename", "split", *CLASS_NAMES)
        ]
        if stream_cols:
            texts = {str(r["id"]): str(r[stream_cols[0]]) for _, r in captions.head(200).iterrows()}
    rows, notes = [], []
    ids = reader.ids(split)
    for sid in ids[:: max(1, len(ids) // k)][:k]:
        image = reader.read_image(split, sid)
        try:
            mask = colourise(reader.read_mask(split, sid))
        except Exception as exc:  # noqa: BLE001 - a missing mask must not break the report
            log.warning("no mask for %s/%s in the report: %s", split, sid, exc)
            mask = np.full_like(image, 255)
        rows.append([image, mask])
        notes.append(f"{sid}: {texts.get(sid, '')}")
    page.figure(
        plots.sample_grid(rows, [label, "land-cover map"], notes),
        f"Samples of the {split} split.",
    )


# ----------------------------------------------------------------------------- captions
def captions_section(page: Page, path: Path) -> None:
    summary = json.loads((path / "caption_metrics.json").read_text())
    page.heading(f"Captions: {Path(summary.get('source', path)).name}")
    div = summary["diversity"]
    rows = []
    for name, d in [("pooled", div["pooled"]), *sorted(div.get("per_stream", {}).items())]:
        rows.append(
            [
                name,
                d["captions"],
                100 * d["redundancy"],
                d["distinct_1"],
                d["distinct_2"],
                d["distinct_4"],
                d["vocabulary"],
                d["mean_length"],
            ]
        )
    page.table(
        rows,
        [
            "stream",
            "captions",
            "redundancy %",
            "distinct-1",
            "distinct-2",
            "distinct-4",
            "vocabulary",
            "mean words",
        ],
        digits=3,
    )
    page.paragraph(
        "Redundancy = 1 − distinct/total exact caption strings. Published figures: UCM 80.88 %, "
        "RSICD 67.02 %, NWPU 72.65 %, ARAS400k 12.85 %.", cls="muted",
    )  # fmt: skip
    cons = summary.get("consistency")
    if cons:
        keys = [
            "mention_precision",
            "mention_recall",
            "hallucination_rate",
            "dominant_agreement",
            "quantity_agreement",
            "consistent_rate",
        ]
        rows = [[name, c["captions"], *((100 * c[k]) if c.get(k) is not None else float("nan") for k in keys)]
                for name, c in [("pooled", cons["pooled"]), *sorted(cons["per_stream"].items())]]  # fmt: skip
        page.heading("Caption ↔ map consistency", level=3)
        page.table(
            rows, ["stream", "captions", *(k.replace("_", " ") + " %" for k in keys)], digits=1
        )
    clip = summary.get("clipscore")
    if clip:
        page.paragraph(f"CLIPScore: {json.dumps(clip)[:400]}", cls="muted")


# ----------------------------------------------------------------------------- tables
def table_section(page: Page, path: Path, max_rows: int = 60) -> None:
    import pandas as pd

    manifest = _manifest(path)
    page.heading(f"{manifest.get('stage', 'Results').replace('-', ' ').capitalize()}: {path.name}")
    summary = path / "summary.csv"
    df = pd.read_csv(summary if summary.is_file() else path / "results.csv")
    if len(df) > max_rows:
        page.paragraph(
            f"First {max_rows} of {len(df)} rows; all rows are in {path / 'results.csv'}.",
            cls="muted",
        )
        df = df.head(max_rows)
    page.table(
        df.itertuples(index=False),
        [str(c) for c in df.columns],
        digits=3,
        left=max(1, sum(not pd.api.types.is_numeric_dtype(t) for t in df.dtypes)),
    )
    notes = path / "notes.txt"
    if notes.is_file():
        page.paragraph(notes.read_text()[:2000], cls="muted")


def run_section(page: Page, path: Path) -> None:
    manifest = _manifest(path)
    page.heading(f"Run: {path.name} ({manifest.get('stage', 'unknown stage')})")
    outputs = manifest.get("outputs", {})
    page.bullets(f"{k}: {json.dumps(v)[:300]}" for k, v in outputs.items() if k != "files")


# ----------------------------------------------------------------------------- synthetic
def synthetic_section(page: Page, path: Path) -> None:
    res = json.loads((path / "summary.json").read_text())
    syn = res.get("synthetic", {})
    page.heading(f"Synthetic data: {Path(syn.get('root', path)).name} ({path.name})")
    page.paragraph(
        f"{syn.get('samples', '?')} synthetic samples ({', '.join(f'{k} {v}' for k, v in syn.get('origins', {}).items())}) "
        f"against {res.get('real', {}).get('samples', '?')} real samples of {res.get('real', {}).get('root', '?')}."
    )
    rows = []
    comp = res.get("composition") or {}
    if "jsd_pixel_share" in comp:
        rows.append(["composition: JSD of class pixel shares (0 = same)", comp["jsd_pixel_share"]])
    lf = res.get("label_fidelity") or {}
    if isinstance(lf, dict) and "synthetic" in lf:
        rows.append(
            [
                "label fidelity: mean per-sample mIoU, synthetic",
                lf["synthetic"]["sample_miou"]["mean"],
            ]
        )
        ref = lf.get("real_reference")
        if ref:
            rows.append(
                [
                    "label fidelity: mean per-sample mIoU, real (the segmenter's ceiling)",
                    ref["sample_miou"]["mean"],
                ]
            )
    ff = res.get("feature_fidelity") or {}
    if isinstance(ff, dict) and isinstance(ff.get("synthetic"), dict):
        f = ff["synthetic"]
        rows.append(
            ["Fréchet distance on segmenter features", f.get("frechet_distance", float("nan"))]
        )
        if isinstance(ff.get("real_halves"), dict):
            rows.append(
                [
                    "… between two halves of the real set (reference)",
                    ff["real_halves"].get("frechet_distance", float("nan")),
                ]
            )
        for k, v in (f.get("prdc") or {}).items():
            if k != "k":
                rows.append([f"{k} (k-NN, Naeem et al.)", v])
    sil = (res.get("projections") or {}).get("silhouette") or {}
    if "overall" in sil:
        rows.append(["silhouette real vs synthetic (≈0: mixed, 1: separate)", sil["overall"]])
    if rows:
        page.table(rows, ["measure", "value"], digits=3)
    root = Path(syn.get("root", ""))
    if root.is_dir():
        from groundsynth.data.reader import open_dataset

        try:
            reader = open_dataset(root)
            _samples(page, reader, reader.splits(), label="synthetic image")
        except Exception as exc:  # noqa: BLE001 - the grid is an illustration; never fail the report
            log.warning("no sample grid for %s: %s", root, exc)
    for name, caption in (
        ("composition.png", "Class composition, real vs synthetic."),
        ("label_fidelity.png", "Per-sample label fidelity (segmenter mIoU against each map)."),
        ("projection_tsne.png", "t-SNE of segmenter encoder features."),
        ("projection_umap.png", "UMAP of segmenter encoder features."),
    ):
        if (path / name).is_file():
            page.image((path / name).read_bytes(), caption)


# ----------------------------------------------------------------------------- experiment
def _ci(mean: float, lo: float, hi: float, clip: bool = False) -> str:
    """``mean [lo, hi]`` in percent; ``clip``: bounds kept within 0-100 (scores, not
    differences: a t-interval over two seeds can reach far outside)."""
    if mean != mean:
        return "n/a"
    if lo != lo:
        return f"{100 * mean:.2f}"
    if clip:
        lo, hi = max(lo, 0.0), min(hi, 1.0)
    return f"{100 * mean:.2f} [{100 * lo:.2f}, {100 * hi:.2f}]"


#: A synthetic set whose Fréchet distance exceeds this multiple of the distance between two
#: halves of the real set is flagged: it is far from real images in the segmenter's features.
FAR_FROM_REAL = 10.0


def _fidelity_rows(fidelity: dict[str, Any]) -> tuple[list[list[Any]], list[str]]:
    """Headline fidelity per synthetic set, and warnings for sets far from the real images."""
    rows, warnings = [], []
    for name, brief in fidelity.items():
        lf = (brief or {}).get("label_fidelity") or {}
        ff = (brief or {}).get("feature_fidelity") or {}
        comp = (brief or {}).get("composition") or {}
        syn_lf = ((lf.get("synthetic") or {}).get("sample_miou") or {}).get("mean")
        ceiling = ((lf.get("real_reference") or {}).get("sample_miou") or {}).get("mean")
        fd = (ff.get("synthetic") or {}).get("frechet_distance")
        fd_ref = (ff.get("real_halves") or {}).get("frechet_distance")
        prdc = (ff.get("synthetic") or {}).get("prdc") or {}
        n = (lf.get("synthetic") or {}).get("samples") or (ff.get("synthetic") or {}).get("samples")
        rows.append([
            name, n if n is not None else "–",
            "–" if syn_lf is None else f"{syn_lf:.3f}" + ("*" if name == "ungrounded" else ""),
            "–" if ceiling is None else f"{ceiling:.3f}",
            "–" if fd is None else f"{fd:.1f}", "–" if fd_ref is None else f"{fd_ref:.1f}",
            "–" if not prdc else f"{prdc.get('precision', float('nan')):.2f} / {prdc.get('recall', float('nan')):.2f}",
            "–" if comp.get("jsd_pixel_share") is None else f"{comp['jsd_pixel_share']:.3f}",
        ])  # fmt: skip
        if fd is not None and fd_ref and fd > FAR_FROM_REAL * fd_ref:
            warnings.append(
                f"⚠ The {name} set is far from the real images: Fréchet distance {fd:.0f} against "
                f"{fd_ref:.1f} between two halves of the real set (recall "
                f"{prdc.get('recall', float('nan')):.2f}). Its generator is undertrained; "
                f"comparisons with it say little about {name} data in general."
            )
    return rows, warnings


def experiment_section(page: Page, path: Path) -> None:
    res = json.loads((path / "experiment.json").read_text())
    page.heading(f"Experiment: grounded vs ungrounded augmentation ({path.name})")
    gens = res.get("generators") or {}
    if gens:
        page.paragraph(
            f"Generators: grounded = {gens.get('grounded')}, ungrounded = {gens.get('ungrounded')}"
            f" (family {res.get('family')})."
            + (" Both are the same diffusion U-Net; only the map input differs."
               if res.get("family") == "diffusion" else
               " Different model families: grounding is confounded with the family.")
        )  # fmt: skip
    learning_section(page, res.get("learning") or {})
    page.paragraph(
        f"Source region A: {res['source']} ({res['n_real_train']} real training images); "
        f"target region B: {res['target']}. Synthetic sets: "
        + ", ".join(f"{k} {v}" for k, v in res["synthetic_sizes"].items())
        + f". Budgets (fractions of A's real training set): {res['budgets']}; seeds: {res['seeds']}."
    )
    fidelity_rows, warnings = _fidelity_rows(res.get("fidelity") or {})
    for w in warnings:
        page.paragraph(w, cls="note")
    table = res["table"]
    domains = list(dict.fromkeys(r["domain"] for r in table))
    regimes = list(dict.fromkeys(r["regime"] for r in table))
    cell = {(r["regime"], r["domain"]): r for r in table}
    rows = []
    for regime in regimes:
        row = [regime]
        for d in domains:
            r = cell.get((regime, d))
            row += [_ci(r["f1_mean"], r["f1_ci95_low"], r["f1_ci95_high"], clip=True) if r else "–",
                    _ci(r["iou_mean"], r["iou_ci95_low"], r["iou_ci95_high"], clip=True) if r else "–"]  # fmt: skip
        rows.append(row)
    header = ["training regime"] + [f"{d} {m} %" for d in domains for m in ("F1", "IoU")]
    page.table(rows, header, left=len(header))
    seeds = len(res.get("seeds") or [])
    page.paragraph(
        "Macro F1 / IoU over the 7 classes; mean over seeds with a 95 % t-interval (bounds kept "
        "within 0–100)."
        + (f" With {seeds} seeds the t-intervals are wide by necessity; more seeds narrow them."
           if 1 < seeds < 5 else ""),
        cls="muted",
    )  # fmt: skip
    diffs = res.get("differences", [])
    if diffs:
        page.heading("Grounded − ungrounded (paired by seed)", level=3)
        page.table(
            [[d["comparison"], d["domain"], d["metric"], _ci(d["mean"], d["ci95_low"], d["ci95_high"]),
              d.get("ci_method", "bootstrap"),
              _ci(d["mean"], d["boot95_low"], d["boot95_high"]).split(" ", 1)[-1] if "boot95_low" in d else "–",
              f"{d['wins']} of {d['n']}" if "wins" in d else d["n"],
              f"{d['p_sign_flip']:.2f}" if "p_sign_flip" in d else "–"] for d in diffs],
            ["comparison", "domain", "metric", "difference % [95 % CI]", "CI", "bootstrap 95 %",
             "grounded better in (seeds)", "sign-flip p"],
            left=3, digits=2,
        )  # fmt: skip
        page.paragraph(
            "The 95 % CI is a paired t-interval below 20 seeds and the paired percentile "
            "bootstrap from 20; the bootstrap interval is shown for reference, but over a few "
            "seeds it cannot leave the range of the observed differences and covers the true "
            "difference far less often than 95 % (about 50 % with 2 seeds, 75 % with 3). The "
            "sign-flip p-value is exact; with n seeds it cannot go below 2 / 2ⁿ.",
            cls="muted",
        )
        page.figure(
            plots.difference_bars(diffs),
            "Grounded minus ungrounded, macro F1, with the 95 % CIs of the table.",
        )
    if fidelity_rows:
        page.heading("The synthetic sets", level=3)
        page.table(
            fidelity_rows,
            ["set", "samples", "label fidelity (mean mIoU)", "segmenter on real (ceiling)",
             "FD", "FD between real halves", "precision / recall", "JSD of class shares"],
            left=1,
        )  # fmt: skip
        rule = res.get("grounding_filter") or {}
        text = (
            "Label fidelity: a segmenter trained on real A segments each synthetic image and is "
            "scored against the image's map. *Ungrounded labels are that segmenter's own "
            "predictions, so their label fidelity is 1 by construction, not a quality. FD and "
            "precision / recall are on the segmenter's encoder features."
        )
        if rule.get("rule") == "lowered":
            text += (
                f" Grounding filter: label fidelity ≥ {rule['threshold']:.3f}, lowered from "
                f"{rule['ratio']:g} × the real ceiling {rule['real_ceiling']:.3f} = "
                f"{rule['wanted']:.3f} to keep the {rule['needed']} samples the largest budget needs."
            )
        elif rule.get("threshold") is not None:
            text += f" Grounding filter: label fidelity ≥ {rule['threshold']:.3f} ({rule['rule']})."
        page.paragraph(text, cls="muted")
    for note in res.get("notes", []):
        page.paragraph(note, cls="muted")
    # the experiment's own synthetic-data evaluations (plots of composition, label fidelity,
    # projections), so that ``groundsynth report EXP`` shows them without listing each folder
    for sub in sorted((path / "evaluation").glob("*")):
        if sub.is_dir() and detect_kind(sub) == "synthetic":
            synthetic_section(page, sub)


SECTIONS: dict[str, Callable[[Page, Path], None]] = {
    "experiment": experiment_section,
    "synthetic": synthetic_section,
    "dataset": dataset_section,
    "captions": captions_section,
    "table": table_section,
    "run": run_section,
}


def render(page: Page, path: Path) -> str:
    """Add the section of ``path`` to ``page``; return its kind."""
    kind = detect_kind(path)
    if kind == "unknown":
        page.heading(f"Not recognised: {path.name}")
        page.paragraph(f"{path} holds no dataset, metrics or manifest that the report can read.")
        return kind
    SECTIONS[kind](page, path)
    return kind
