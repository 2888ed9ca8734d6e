"""The HTML report: one self-contained page (figures embedded, no JavaScript, no external
reference) summarising datasets, captions, benchmarks and experiments from run directories.

The page opens with the findings panel (:mod:`.panel`: the question, its answer, the checks
that qualify it, what to run next), then a table of contents and one section per run
directory. It stays bounded whatever the size of the runs: sample grids show a fixed number
of samples as small thumbnails, plots are aggregated, long tables are cut.

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
from groundsynth.report.findings import QUESTION, WORLDCOVER_CAVEAT, collect_findings
from groundsynth.report.html import Page
from groundsynth.report.kinds import detect_kind
from groundsynth.report.panel import FINDINGS_ID, findings_section
from groundsynth.report.sections import render

__all__ = ["FINDINGS_ID", "QUESTION", "WORLDCOVER_CAVEAT", "detect_kind", "make_report"]

log = logging.getLogger(__name__)


def make_report(
    run_dirs: Sequence[str | os.PathLike[str]],
    out: str | os.PathLike[str],
    *,
    title: str = "groundsynth report",
) -> Path:
    """Write one HTML page: the findings, then a section per run directory; return its path."""
    if not run_dirs:
        raise InputError("no run directory given to report on")
    paths = [Path(d) for d in run_dirs]
    for path in paths:
        if not path.is_dir():
            raise InputError(f"{path}: no such run directory")
    kinds = [detect_kind(p) for p in paths]
    page = Page(title)
    stamp = _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    page.paragraph(
        f"Made by groundsynth {__version__} on {stamp}. Every number comes from the run "
        f"directories: {', '.join(str(p) for p in paths)}.",
        cls="muted",
    )
    findings_section(page, collect_findings(paths, kinds))
    for path in paths:
        kind = render(page, path)
        log.info("report: %s rendered as %s", path, kind)
    out = Path(out)
    write_text(out, page.render())
    return out
