"""Experiment and report commands."""

from __future__ import annotations

from pathlib import Path

import typer

from groundsynth.cli._common import console, friendly

__all__ = ["register"]


@friendly
def report_cmd(
    run_dirs: list[Path] = typer.Argument(
        ..., help="Run directories: datasets, caption evaluations, benchmarks, experiments."
    ),
    out: Path = typer.Option(Path("report.html"), "--out", "-o", help="HTML file to write."),
    title: str = typer.Option("groundsynth report", help="Page title."),
) -> None:
    """Write one self-contained HTML report (figures embedded, no JavaScript) of run directories.

    Each directory becomes a section chosen by what it holds: a dataset gets its composition
    plots and sample grid, a caption evaluation its redundancy and consistency tables, a
    benchmark or experiment its results table.

    Example: `groundsynth report demo_out/dataset demo_out/captions_eval --out report.html`
    """
    from groundsynth.report import make_report

    path = make_report(run_dirs, out, title=title)
    console.print(f"report written to {path}")


def register(app: typer.Typer) -> None:
    app.command("report")(report_cmd)
