"""The declared dependency versions of the caption extra cover the APIs the back ends use."""

from __future__ import annotations

import inspect
from pathlib import Path

import pytest
from packaging.requirements import Requirement

from groundsynth.caption import transformers_backend

PYPROJECT = Path(__file__).resolve().parents[2] / "pyproject.toml"


def _caption_requirement(name: str) -> Requirement:
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    extras = tomllib.loads(PYPROJECT.read_text(encoding="utf-8"))["project"]
    reqs = [Requirement(r) for r in extras["optional-dependencies"]["caption"]]
    return next(r for r in reqs if r.name == name)


def test_transformers_minimum_supports_the_dtype_keyword() -> None:
    """``from_pretrained(dtype=...)`` exists from transformers 4.56 (before: ``torch_dtype``)."""
    source = inspect.getsource(transformers_backend.TransformersCaptioner)
    assert "dtype=dtype" in source and "torch_dtype" not in source
    spec = _caption_requirement("transformers").specifier
    assert "4.56.0" in spec and "5.24.0" in spec
    assert not any(v in spec for v in ("4.45.0", "4.55.4")), str(spec)
