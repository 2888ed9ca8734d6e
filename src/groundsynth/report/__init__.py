"""The HTML report: one self-contained page (figures embedded, no JavaScript, no external
reference) summarising datasets, captions, benchmarks and experiments from run directories.

>>> make_report(["demo_out/dataset"], "demo_out/report.html")  # doctest: +SKIP
"""

from __future__ import annotations

import datetime as _dt
import logging
import os
from collections.abc import Sequence
from pathlib import Path

from groundsynth import __version__
from groundsynth.errors import InputError
from groundsynth.io import write_text
from groundsynth.report.html import Page
from groundsynth.report.sections import detect_kind, render

__all__ = ["WORLDCOVER_CAVEAT", "detect_kind", "make_report"]

log = logging.getLogger(__name__)

WORLDCOVER_CAVEAT = (
    "Land-cover labels come from ESA WorldCover, whose overall accuracy is about 77 %. Every "
    "score computed against these maps (segmentation F1/IoU, caption↔map consistency, label "
    "fidelity) measures agreement with WorldCover, not with the ground."
)


def make_report(
    run_dirs: Sequence[str | os.PathLike[str]],
    out: str | os.PathLike[str],
    *,
    title: str = "groundsynth report",
) -> Path:
    """Write one HTML page with a section per run directory; return its path."""
    if not run_dirs:
        raise InputError("no run directory given to report on")
    page = Page(title)
    stamp = _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    page.paragraph(
        f"Made by groundsynth {__version__} on {stamp}. Every number comes from the run directories listed below.",
        cls="muted",
    )
    page.note(WORLDCOVER_CAVEAT)
    kinds = []
    for d in run_dirs:
        path = Path(d)
        if not path.is_dir():
            raise InputError(f"{path}: no such run directory")
        kinds.append(render(page, path))
        log.info("report: %s rendered as %s", path, kinds[-1])
    out = Path(out)
    write_text(out, page.render())
    return out
