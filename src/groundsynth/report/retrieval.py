"""The report's subsections of an experiment's multimodal tasks (``experiment.json``
``tasks``): image–text retrieval and image captioning."""

from __future__ import annotations

from typing import Any

from groundsynth.report import plots
from groundsynth.report.html import Page

__all__ = ["captioning_section", "retrieval_section"]


def _ci(mean: float, lo: float, hi: float) -> str:
    """``mean [lo, hi]`` of percentages (bounds kept within 0–100)."""
    if mean != mean:
        return "n/a"
    if lo != lo:
        return f"{mean:.1f}"
    return f"{mean:.1f} [{max(lo, 0.0):.1f}, {min(hi, 100.0):.1f}]"


def _diff(d: dict[str, Any]) -> str:
    mean, lo, hi = d["mean"], d["ci95_low"], d["ci95_high"]
    if mean != mean:
        return "n/a"
    return f"{mean:+.2f}" + ("" if lo != lo else f" [{lo:+.2f}, {hi:+.2f}]")


def retrieval_section(page: Page, block: dict[str, Any]) -> None:
    """Tables and plot of the retrieval task: recalls per regime and domain, grounded −
    ungrounded paired by seed, and the floors every run was checked against."""
    page.heading("Image–text retrieval (CLIP-style dual encoder)", level=3)
    learning = block.get("learning") or {}
    if not learning.get("passed", True):
        missed = learning.get("not_learned") or []
        page.paragraph(
            f"⚠ {len(missed)} retrieval run(s) did not beat chance and their untrained model ("
            + "; ".join(missed[:8]) + ("; …" if len(missed) > 8 else "")
            + "): their comparison says little about the data.",
            cls="note",
        )  # fmt: skip
    caps = block.get("captions") or {}
    page.paragraph(
        "Captions: real images from " + str(caps.get("real", "their maps")) + "; grounded "
        "synthetic images from " + str(caps.get("grounded", "their maps")) + "; ungrounded "
        "synthetic images from " + str(caps.get("ungrounded", "pseudo-labels")) + ". Each "
        "regime trains a dual encoder with the symmetric contrastive loss per seed and is "
        "tested on A's test pairs (in-domain) and B's (cross-region).",
        cls="muted",
    )
    table = block.get("table") or []
    domains = list(dict.fromkeys(r["domain"] for r in table))
    cell = {(r["regime"], r["domain"]): r for r in table}
    rows = []
    for regime in dict.fromkeys(r["regime"] for r in table):
        row = [regime]
        for d in domains:
            r = cell.get((regime, d))
            for m in ("mean_recall", "i2t_r10", "t2i_r10"):
                row.append(
                    _ci(r[f"{m}_mean"], r[f"{m}_ci95_low"], r[f"{m}_ci95_high"]) if r else "–"
                )
        rows.append(row)
    header = ["training regime"] + [
        f"{d} {m}" for d in domains for m in ("mR", "i2t R@10", "t2i R@10")
    ]
    page.table(rows, header, left=len(header))
    chance = block.get("chance_mean_recall") or {}
    page.paragraph(
        "Recalls in percent, mean over seeds with a 95 % t-interval. mR is the mean of R@1, R@5 "
        "and R@10 in both directions; a random ranking scores "
        + ", ".join(f"mR {v:.1f} on {k}" for k, v in chance.items()) + ".",
        cls="muted",
    )  # fmt: skip
    diffs = [d for d in block.get("differences") or [] if d.get("metric") == "mean_recall"]
    if diffs:
        page.table(
            [[d["comparison"], d["domain"], _diff(d), f"{d.get('wins', '–')} of {d.get('n', '–')}",
              f"{d['p_sign_flip']:.2f}" if "p_sign_flip" in d else "–"] for d in diffs],
            ["comparison", "domain", "mR difference [95 % CI]", "grounded better in (seeds)",
             "sign-flip p"],
            left=2,
        )  # fmt: skip
        page.figure(
            plots.difference_bars(diffs, "mean_recall", scale=1.0,
                                  label="grounded − ungrounded, retrieval mR (points)"),
            "Grounded minus ungrounded, retrieval mean recall, with the 95 % CIs of the table.",
        )  # fmt: skip


def captioning_section(page: Page, block: dict[str, Any]) -> None:
    """Tables of the captioning task: CIDEr-D, BLEU-4 and caption↔map consistency per regime
    and domain, grounded − ungrounded paired by seed, and the floors."""
    page.heading("Image captioning (ViT + GPT-2 captioner)", level=3)
    learning = block.get("learning") or {}
    if not learning.get("passed", True):
        missed = learning.get("not_learned") or []
        page.paragraph(
            f"⚠ {len(missed)} captioning run(s) did not beat the most frequent training caption "
            "(in CIDEr-D and in consistency with the maps) and their untrained model (" + "; ".join(missed[:8]) + ("; …" if len(missed) > 8 else "")
            + "): their comparison says little about the data.",
            cls="note",
        )  # fmt: skip
    table = block.get("table") or []
    domains = list(dict.fromkeys(r["domain"] for r in table))
    cell = {(r["regime"], r["domain"]): r for r in table}
    metrics = ("cider", "bleu_4", "consistent_rate")
    rows = []
    for regime in dict.fromkeys(r["regime"] for r in table):
        row = [regime]
        for d in domains:
            r = cell.get((regime, d))
            for m in metrics:
                row.append(
                    _ci(100 * r[f"{m}_mean"], 100 * r[f"{m}_ci95_low"], 100 * r[f"{m}_ci95_high"])
                    if r else "–"
                )  # fmt: skip
        rows.append(row)
    header = ["training regime"] + [
        f"{d} {m}" for d in domains for m in ("CIDEr-D ×100", "BLEU-4 %", "consistent %")
    ]
    page.table(rows, header, left=len(header))
    floors = block.get("floors") or {}
    page.paragraph(
        "Mean over seeds with a 95 % t-interval. consistent: the share of generated captions "
        "that tell the truth about their image's map. Floors: "
        + "; ".join(
            f"{k}: most frequent training caption CIDEr-D ×100 {100 * v['frequent_caption_cider']:.1f}"
            + _consistent_text(v.get("frequent_caption_consistent_rate")) + ", "
            f"reference captions consistent {100 * (v.get('reference_consistent_rate') or 0):.0f} %"
            for k, v in floors.items()
        ) + ".",
        cls="muted",
    )  # fmt: skip
    diffs = [d for d in block.get("differences") or [] if d.get("metric") == "cider"]
    if diffs:
        page.table(
            [[d["comparison"], d["domain"], _diff({k: 100 * d[k] for k in ("mean", "ci95_low", "ci95_high")}),
              f"{d.get('wins', '–')} of {d.get('n', '–')}",
              f"{d['p_sign_flip']:.2f}" if "p_sign_flip" in d else "–"] for d in diffs],
            ["comparison", "domain", "CIDEr-D ×100 difference [95 % CI]",
             "grounded better in (seeds)", "sign-flip p"],
            left=2,
        )  # fmt: skip


def _consistent_text(rate: float | None) -> str:
    """`` (consistent N %)`` for a known rate, else nothing."""
    if rate is None or rate != rate:  # None or NaN (no maps to check against)
        return ""
    return f" (consistent {100 * rate:.0f} %)"
