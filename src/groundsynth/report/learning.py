"""The report's learning checks of an experiment: did every compared model learn?"""

from __future__ import annotations

from typing import Any

from groundsynth.report.html import Page

__all__ = ["learning_section"]


def learning_section(page: Page, learning: dict[str, Any]) -> None:
    """The learning checks: a warning box first when one failed, then the table."""
    checks = learning.get("checks") or []
    if not checks:
        return
    failed = [c for c in checks if not c.get("passed")]
    if failed:
        page.paragraph(
            f"⚠ Conclusion withheld: {len(failed)} of {len(checks)} learning checks failed ("
            + "; ".join(c["model"] for c in failed)
            + "). A model that has not learned more than its floor makes the comparison below "
            "one of undertrained models, not of grounded and ungrounded data; the numbers stay "
            "visible but say nothing about the question. Train longer (more steps or epochs, "
            "a larger preset on a GPU) and rerun.",
            cls="note warning",
        )
    page.heading("Did the models learn?", level=3)
    page.table(
        [[c["model"], "–" if c.get("figure") is None else f"{c['figure']:.3f}",
          "–" if c.get("floor") is None else f"{c['floor']:.3f}",
          "✓ passed" if c.get("passed") else "✗ failed", c.get("rule", "")] for c in checks],
        ["model", "figure", "floor / bound", "check", "rule"],
        left=1,
    )  # fmt: skip
    page.paragraph(
        "Segmenters: macro IoU on A's test split against a per-pixel linear classifier (RGB and "
        "3×3 mean RGB) fitted on the same real training images, measured in this run. Grounded "
        "generator: its samples read back as their maps by that classifier, against what it "
        "reaches on real test images (the ceiling). Feature fidelity: Fréchet distance on the "
        "real-trained segmenter's encoder features against that between two halves of the real "
        "set.",
        cls="muted",
    )
