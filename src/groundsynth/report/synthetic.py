"""The report's section of a synthetic-data evaluation (``evaluate synthetic`` output)."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from groundsynth.errors import GroundsynthError
from groundsynth.report.html import Page
from groundsynth.report.samples import sample_grid
from groundsynth.report.thumbs import plot_file

__all__ = ["PLOT_FILES", "synthetic_section"]

log = logging.getLogger(__name__)

#: Plot files an evaluation writes, with their captions, in the order shown.
PLOT_FILES: tuple[tuple[str, str], ...] = (
    ("composition.png", "Class composition, real vs synthetic."),
    ("label_fidelity.png", "Per-sample label fidelity (segmenter mIoU against each map)."),
    ("projection_tsne.png", "t-SNE of segmenter encoder features."),
    ("projection_umap.png", "UMAP of segmenter encoder features."),
)


def _measures(res: dict[str, Any]) -> list[list[Any]]:
    rows: list[list[Any]] = []
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
    return rows


def synthetic_section(page: Page, path: Path) -> None:
    res = json.loads((path / "summary.json").read_text())
    syn = res.get("synthetic", {})
    page.heading(f"Synthetic data: {Path(syn.get('root', path)).name} ({path.name})")
    page.paragraph(
        f"{syn.get('samples', '?')} synthetic samples ({', '.join(f'{k} {v}' for k, v in syn.get('origins', {}).items())}) "
        f"against {res.get('real', {}).get('samples', '?')} real samples of {res.get('real', {}).get('root', '?')}."
    )
    rows = _measures(res)
    if rows:
        page.table(rows, ["measure", "value"], digits=3)
    root = Path(syn.get("root", ""))
    if root.is_dir():
        from groundsynth.data.reader import open_dataset

        try:
            reader = open_dataset(root)
        except GroundsynthError as exc:
            log.warning("no sample grid for %s: %s", root, exc)
            page.paragraph(f"No sample grid: {exc}", cls="muted")
        else:
            sample_grid(page, reader, label="synthetic image")
    for name, caption in PLOT_FILES:
        if (path / name).is_file():
            mime, data = plot_file(path / name)
            page.image(data, caption, mime=mime)
