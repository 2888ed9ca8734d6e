"""From an area to a dataset in one call: acquire WorldCover and its Sentinel-2 composite,
then build the patch dataset from them.

``OUT/source/`` holds the acquisition run (``landcover/``, ``imagery/``, its manifest and
journal) and ``OUT`` itself the dataset, so a dataset built from an area carries the rasters
it was cut from. Both steps resume: rerunning the same call fetches only what is missing
(nothing, once the mosaics are complete) and builds only the chunks not yet recorded.

Example::

    from groundsynth.acquire.area_dataset import build_from_area

    acquired, built = build_from_area("data/saotome", bbox=(6.6, 0.3, 6.7, 0.4), year=2021)
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from groundsynth.acquire.worldcover import (
    DEFAULT_MAP_BASE_URL,
    DEFAULT_S2_BASE_URL,
    WorldCoverResult,
    acquire_worldcover,
    output_paths,
)
from groundsynth.data.build import (
    SOURCE_DIR,
    BuildConfig,
    BuildResult,
    build_dataset,
)
from groundsynth.data.build import (
    ProgressCallback as BuildProgress,
)
from groundsynth.errors import InputError

__all__ = ["SOURCE_DIR", "area_build_config", "build_from_area"]


def area_build_config(out: str | os.PathLike[str], year: int, **build: Any) -> BuildConfig:
    """The build of an area's dataset: ``OUT/source``'s composite and map into ``OUT``."""
    for key in ("imagery", "landcover", "out"):
        if key in build:
            raise InputError(f"a build from an area sets {key} itself; do not pass it")
    paths = output_paths(Path(out) / SOURCE_DIR, year)
    return BuildConfig(
        imagery=(str(paths["s2rgbnir"]),), landcover=(str(paths["map"]),), out=str(out), **build
    )


def build_from_area(
    out: str | os.PathLike[str],
    *,
    bbox: str | Sequence[float] | None = None,
    geojson: str | os.PathLike[str] | None = None,
    year: int = 2021,
    base_url: str = DEFAULT_MAP_BASE_URL,
    s2_base_url: str = DEFAULT_S2_BASE_URL,
    acquire: Mapping[str, Any] | None = None,
    build: Mapping[str, Any] | None = None,
    acquire_progress: Any = None,
    build_progress: BuildProgress | None = None,
) -> tuple[WorldCoverResult, BuildResult]:
    """Acquire the area's WorldCover map and S2 RGBNIR composite into ``OUT/source`` and
    build the dataset into ``OUT``; ``acquire`` and ``build`` pass further options to
    :func:`~groundsynth.acquire.worldcover.acquire_worldcover` and
    :class:`~groundsynth.data.build.BuildConfig`. Returns both results."""
    cfg = area_build_config(out, year, **dict(build or {}))  # checks the options first
    acquired = acquire_worldcover(
        Path(out) / SOURCE_DIR,
        bbox=bbox,
        geojson=geojson,
        year=year,
        with_s2=True,
        base_url=base_url,
        s2_base_url=s2_base_url,
        progress=acquire_progress,
        **dict(acquire or {}),
    )
    return acquired, build_dataset(cfg, progress=build_progress)
