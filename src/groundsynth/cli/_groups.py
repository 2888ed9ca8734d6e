"""Command groups shared by several stage modules (``groundsynth evaluate ...``,
``groundsynth benchmark ...``). Stage modules add their subcommands in ``register``."""

from __future__ import annotations

import typer

__all__ = ["benchmark_app", "evaluate_app"]

evaluate_app = typer.Typer(
    help="Evaluate captions and synthetic data interpretably.", no_args_is_help=True
)
benchmark_app = typer.Typer(
    help="Downstream benchmarks: segmentation, image–text retrieval, image captioning.",
    no_args_is_help=True,
)
