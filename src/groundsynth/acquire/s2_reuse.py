"""When a Sentinel-2 scene acquired by an earlier run may be reused: its provenance record
matches the options, and none of its remote files changed since (size or ETag)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from groundsynth.acquire.cog import RemoteFile, head, version_changes

if TYPE_CHECKING:
    from groundsynth.acquire.s2_grid import Grid
    from groundsynth.acquire.sentinel2 import Sentinel2Config, _Scene

__all__ = ["changed_assets", "record_matches"]


def record_matches(path: Path, scene: _Scene, cfg: Sentinel2Config, grid: Grid) -> bool:
    """Whether the record at ``path`` is this scene's, made with these options."""
    try:
        rec = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return (
        isinstance(rec, dict)
        and rec.get("item") == scene.item.get("id")
        and rec.get("grid") == grid.as_dict()
        and rec.get("bands") == list(cfg.bands)
        and rec.get("resampling") == cfg.resampling
        and bool(rec.get("scl")) == (scene.scl is not None)
    )


def changed_assets(rec: dict[str, Any], cfg: Sentinel2Config) -> list[str]:
    """The recorded scene's assets whose remote file changed since (size or ETag)."""
    changed = []
    for band, a in rec.get("assets", {}).items():
        old = RemoteFile(a["href"], a.get("bytes"), a.get("etag"), a.get("last_modified"))
        new = head(
            a["href"], what=f"{rec['item']} {band}", retries=cfg.retries, backoff=cfg.backoff,
            timeout=cfg.timeout, missing_ok=False, head_optional=True,
        )  # fmt: skip
        diff = version_changes(old, new) if new is not None else []
        if diff:
            changed.append(f"{band} ({', '.join(diff)})")
    return changed
