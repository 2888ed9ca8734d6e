"""The groundsynth command line: one subcommand per stage, thin over the Python API.

Each command parses its options, calls one library function and prints the outcome. Library
errors (:class:`groundsynth.errors.GroundsynthError`) become one red line and exit code 2.
Commands live in one module per stage; each module's ``register(app)`` adds them here.
"""

from __future__ import annotations

import typer

from groundsynth import __version__
from groundsynth.cli import (
    acquire,
    benchmark_captioning,
    benchmark_retrieval,
    caption,
    data,
    demo,
    evaluate,
    experiment,
    generate,
    synthetic,
)
from groundsynth.cli._common import console, setup_logging
from groundsynth.cli._groups import benchmark_app, evaluate_app

__all__ = ["app", "main"]

app = typer.Typer(
    name="groundsynth",
    help=(
        "Grounded synthetic data for remote sensing: build a segmentation + caption dataset "
        "from Sentinel-2 and WorldCover, generate, caption and evaluate synthetic data.\n\n"
        "Start with: groundsynth demo"
    ),
    no_args_is_help=True,
    add_completion=False,
    rich_markup_mode="markdown",
)


def _version(value: bool) -> None:
    if value:
        console.print(f"groundsynth {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(
        False, "--version", callback=_version, is_eager=True, help="Print the version."
    ),
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Log progress details to stderr."),
) -> None:
    setup_logging(verbose)


for _module in (
    data,
    demo,
    acquire,
    caption,
    generate,
    evaluate,
    benchmark_retrieval,
    benchmark_captioning,
    synthetic,
    experiment,
):
    _module.register(app)
for _name, _group in (("evaluate", evaluate_app), ("benchmark", benchmark_app)):
    if _group.registered_commands:
        app.add_typer(_group, name=_name)


def main() -> None:
    app()
