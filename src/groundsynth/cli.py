"""The groundsynth command line: one subcommand per stage, thin over the Python API."""

from __future__ import annotations

import typer

app = typer.Typer(
    name="groundsynth",
    help="Grounded synthetic data for remote sensing: build, generate, caption, evaluate.",
    no_args_is_help=True,
    add_completion=False,
)


def main() -> None:
    app()
