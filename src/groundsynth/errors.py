"""Domain exceptions. The CLI turns each into one clear message and a non-zero exit."""

from __future__ import annotations

__all__ = [
    "GroundsynthError",
    "InputError",
    "MaskError",
    "OutputConflictError",
    "FetchError",
    "MissingDependencyError",
    "ExternalToolError",
]


class GroundsynthError(Exception):
    """Base class of every error groundsynth raises on purpose."""


class InputError(GroundsynthError, ValueError):
    """A user-supplied file or value is unusable (the message names it and says why)."""


class MaskError(InputError):
    """A mask file holds values or colours outside the class schema."""


class OutputConflictError(GroundsynthError):
    """The output location holds data that this run must not overwrite."""


class FetchError(GroundsynthError):
    """A download failed, was truncated, or did not match its published checksum."""


class MissingDependencyError(GroundsynthError, ImportError):
    """An optional dependency is not installed; the message names the extra to install."""


class ExternalToolError(GroundsynthError):
    """An external program groundsynth runs (the caption toolkit's Java tools) failed; the
    message carries its own error output."""
