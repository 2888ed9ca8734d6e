"""The report's section of a transfer experiment: grounded vs ungrounded augmentation."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from groundsynth.errors import GroundsynthError
from groundsynth.experiment.learning import FD_RATIO
from groundsynth.report import plots
from groundsynth.report.html import Page
from groundsynth.report.kinds import detect_kind
from groundsynth.report.learning import learning_section
from groundsynth.report.retrieval import captioning_section, retrieval_section
from groundsynth.report.samples import side_by_side
from groundsynth.report.synthetic import synthetic_section

__all__ = ["FAR_FROM_REAL", "ci_text", "experiment_section"]

log = logging.getLogger(__name__)


def ci_text(mean: float, lo: float, hi: float, clip: bool = False) -> str:
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
FAR_FROM_REAL = FD_RATIO


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


def _family_note(res: dict) -> str:
    """How the two generators differ, in a sentence."""
    if res.get("family") != "diffusion":
        return " Different model families: grounding is confounded with the family."
    size = ((res.get("generator_models") or {}).get("ungrounded") or {}).get("cascade_size")
    if not size:
        return " Both are the same diffusion U-Net; only the map input differs."
    return (
        " Both are diffusion U-Nets of the same widths and schedule. The grounded one diffuses "
        "the residual from its map's class colours; the ungrounded one, which has no map, is "
        f"the detail stage of a cascade: it diffuses the residual from a {size} px base "
        "model's sample, upsampled."
    )


def experiment_section(page: Page, path: Path) -> None:
    res = json.loads((path / "experiment.json").read_text())
    page.heading(f"Experiment: grounded vs ungrounded augmentation ({path.name})")
    gens = res.get("generators") or {}
    if gens:
        page.paragraph(
            f"Generators: grounded = {gens.get('grounded')}, ungrounded = {gens.get('ungrounded')}"
            f" (family {res.get('family')})." + _family_note(res)
        )
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
            row += [ci_text(r["f1_mean"], r["f1_ci95_low"], r["f1_ci95_high"], clip=True) if r else "–",
                    ci_text(r["iou_mean"], r["iou_ci95_low"], r["iou_ci95_high"], clip=True) if r else "–"]  # fmt: skip
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
            [[d["comparison"], d["domain"], d["metric"], ci_text(d["mean"], d["ci95_low"], d["ci95_high"]),
              d.get("ci_method", "bootstrap"),
              ci_text(d["mean"], d["boot95_low"], d["boot95_high"]).split(" ", 1)[-1] if "boot95_low" in d else "–",
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
    tasks = res.get("tasks") or {}
    if tasks.get("retrieval"):
        retrieval_section(page, tasks["retrieval"])
    if tasks.get("captioning"):
        captioning_section(page, tasks["captioning"])
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
    _samples_side_by_side(page, path)
    for note in res.get("notes", []):
        page.paragraph(note, cls="muted")
    # the experiment's own synthetic-data evaluations (plots of composition, label fidelity,
    # projections), so that ``groundsynth report EXP`` shows them without listing each folder
    for sub in sorted((path / "evaluation").glob("*")):
        if sub.is_dir() and detect_kind(sub) == "synthetic":
            synthetic_section(page, sub)


def _samples_side_by_side(page: Page, path: Path) -> None:
    """Grounded and ungrounded samples side by side, each with its map."""
    from groundsynth.data.reader import open_dataset

    readers = {}
    for name in ("grounded", "ungrounded"):
        root = path / "synthetic" / name
        if not root.is_dir():
            continue
        try:
            readers[name] = open_dataset(root)
        except GroundsynthError as exc:
            log.warning("report: no samples of %s: %s", root, exc)
    if readers:
        page.heading("Grounded and ungrounded samples", level=3)
        page.paragraph(
            "The same number of samples of each set, evenly spaced over its ids: image (left) "
            "and the map it is trained with (right; for ungrounded samples, the segmenter's "
            "pseudo-label).",
            cls="muted",
        )
        side_by_side(page, readers)
