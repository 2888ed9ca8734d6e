"""Shared pieces of the CLI: consoles, error handling, progress bars."""

from __future__ import annotations

import functools
import logging
import sys
import warnings
from collections.abc import Callable
from typing import Any, TypeVar

import typer
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from groundsynth.errors import GroundsynthError

__all__ = ["console", "err", "friendly", "progress_bar", "setup_logging"]

console = Console(stderr=False)
err = Console(stderr=True)
F = TypeVar("F", bound=Callable[..., Any])


def friendly(fn: F) -> F:
    """Turn library errors into one clear message and exit code 2 (the CLI boundary)."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except GroundsynthError as exc:
            err.print(f"[bold red]error:[/] {exc}", highlight=False, soft_wrap=True)
            raise typer.Exit(2) from None
        except KeyboardInterrupt:
            err.print("[yellow]interrupted[/]: rerun the same command to resume")
            raise typer.Exit(130) from None

    return wrapper  # type: ignore[return-value]


def setup_logging(verbose: bool) -> None:
    """Library logs go to stderr: warnings always, progress details with --verbose."""
    logger = logging.getLogger("groundsynth")
    for h in list(logger.handlers):
        if getattr(h, "_groundsynth_cli", False):
            logger.removeHandler(h)
    handler = logging.StreamHandler(sys.stderr)
    handler._groundsynth_cli = True  # type: ignore[attr-defined]
    handler.setLevel(logging.INFO if verbose else logging.WARNING)
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    # Lightning announces the devices and a tip at INFO for every Trainer (the demo makes
    # dozens): shown with --verbose only; its warnings always.
    for name in ("lightning.pytorch.utilities.rank_zero", "lightning.fabric.utilities.rank_zero"):
        logging.getLogger(name).setLevel(logging.INFO if verbose else logging.WARNING)
    if not verbose:  # raised inside Lightning about its own use of torch; nothing a user can do
        warnings.filterwarnings(
            "ignore", message=r"`isinstance\(treespec, LeafSpec\)` is deprecated"
        )


def progress_bar(enabled: bool) -> Progress:
    """A rich progress bar on stderr; ``enabled=False`` (``--no-progress``) hides it."""
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[info]}"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=err,
        disable=not enabled,
        transient=False,
    )
