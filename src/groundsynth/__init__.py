"""groundsynth: grounded synthetic data for remote sensing."""

from __future__ import annotations

from groundsynth.classes import CLASS_NAMES, COLOURS, NUM_CLASSES

__version__ = "0.1.0"
__all__ = ["CLASS_NAMES", "COLOURS", "NUM_CLASSES", "__version__"]
