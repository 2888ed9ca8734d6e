"""``groundsynth acquire sentinel2``: Sentinel-2 L2A imagery for an area from a STAC API."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer
from rich.table import Table

from groundsynth.acquire.stac_search import EARTH_SEARCH_V1
from groundsynth.cli._common import console, friendly, progress_bar

__all__ = ["register", "sentinel2_cmd"]


@friendly
def sentinel2_cmd(
    bbox: str = typer.Option(
        ..., "--bbox", help="Area as W,S,E,N in degrees (EPSG:4326), at most 6 degrees a side."
    ),
    dates: str = typer.Option(
        ...,
        "--dates",
        help="START/END as ISO dates or date-times (UTC), e.g. 2021-06-01/2021-08-31.",
    ),
    out: Path = typer.Option(..., "--out", "-o", help="Run directory to write (or resume)."),
    max_cloud: float = typer.Option(
        20.0, "--max-cloud", help="Keep scenes whose eo:cloud_cover is below this percentage."
    ),
    stac_url: str = typer.Option(
        EARTH_SEARCH_V1, "--stac-url", help="STAC API root (Earth Search v1 by default)."
    ),
    collection: str = typer.Option(
        "sentinel-2-l2a",
        "--collection",
        help="Collection to search (Earth Search v0: sentinel-s2-l2a-cogs).",
    ),
    composite: str = typer.Option(
        "median",
        "--composite",
        help="median: one cloud-masked (SCL) median GeoTIFF; per-scene: one GeoTIFF per scene.",
    ),
    bands: str = typer.Option(
        "B04,B03,B02,B08",
        "--bands",
        help="Bands in output order; product names (B02, B8A...) or common names (red, nir...).",
    ),
    resolution: float = typer.Option(
        10.0, "--resolution", help="Output pixel size in metres (UTM zone of the area's centre)."
    ),
    max_items: int = typer.Option(
        10, "--max-items", min=0, help="Use at most N scenes, least cloudy first (0: all)."
    ),
    resampling: str = typer.Option(
        "nearest", "--resampling", help="Band resampling: nearest, bilinear or average."
    ),
    workers: int = typer.Option(4, "--workers", "-j", min=1, help="Parallel reads (threads)."),
    retries: int = typer.Option(5, "--retries", min=0, help="Retries per request (back-off)."),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="Show progress bars."),
    dry_run: bool = typer.Option(
        False, "--dry-run", help="Print the resolved config and output grid; fetch nothing."
    ),
) -> None:
    """Search a STAC API for Sentinel-2 L2A scenes and read only the area's pixels.

    Scenes over **--bbox** between **--dates** under **--max-cloud** are found with a STAC
    item search; from each scene's band COGs only the tiles covering the area are read (HTTP
    range requests) and reprojected onto one grid. Output: reflectance x 10000, uint16,
    0 = nodata, whatever the processing baseline (the -1000 offset of baseline 04.00+ is
    removed), ready for `groundsynth build`. Provenance (item ids, asset URLs, sizes, ETags,
    cloud cover, baseline, offset) is kept in the run directory. Rerun to resume.

    **What it costs**: no scene is downloaded whole (about 1 GB each). Each band costs a
    header (16 KB) and the COG tiles the area touches (tiles of 512-1024 pixels, 5-10 km
    at 10 m, about 0.3-1.5 MB each): a 5 km box typically costs 2-20 MB per scene for 4
    bands and SCL, so a 10-scene median 20-200 MB and a few minutes on a home connection.
    Earth Search data is public and free to read.

    **Example**:
    `groundsynth acquire sentinel2 --bbox 32.80,39.85,32.90,39.95 --dates 2021-06-01/2021-08-31
    --max-cloud 10 --out s2/`, then
    `groundsynth build -i s2/composite.tif -l worldcover/ -o dataset/`
    """
    import yaml

    from groundsynth.acquire.s2_grid import output_grid
    from groundsynth.acquire.sentinel2 import Sentinel2Config, run_sentinel2
    from groundsynth.runs import to_plain

    cfg = Sentinel2Config(
        bbox=bbox,  # type: ignore[arg-type]  # parsed and checked by the config
        dates=dates,
        out=str(out),
        max_cloud=max_cloud,
        stac_url=stac_url,
        collection=collection,
        composite=composite,  # type: ignore[arg-type]
        bands=tuple(b.strip() for b in bands.split(",") if b.strip()),
        resolution=resolution,
        max_items=max_items or None,
        resampling=resampling,  # type: ignore[arg-type]
        workers=workers,
        retries=retries,
    ).resolved()
    if dry_run:
        grid = output_grid(cfg.bbox, cfg.resolution)
        console.print(yaml.safe_dump(to_plain(cfg), sort_keys=False), end="")
        console.print(yaml.safe_dump({"grid": grid.as_dict()}, sort_keys=False), end="")
        return
    with progress_bar(progress) as bar:
        tasks: dict[str, Any] = {}

        def report(phase: str, done: int, total: int, info: str) -> None:
            if phase not in tasks:
                tasks[phase] = bar.add_task(phase, total=total, info="")
            bar.update(tasks[phase], completed=done, total=total, info=info)

        result = run_sentinel2(cfg, progress=report)
    _print(result)


def _print(result: Any) -> None:
    t = Table(title=f"Sentinel-2 scenes in {result.out}", show_edge=False)
    t.add_column("item", overflow="fold")  # ids are never cut
    for col in ("date", "cloud %", "baseline", "offset removed", "valid px"):
        t.add_column(col, justify="left" if col == "date" else "right")
    for r in result.manifest.get("scenes", []):
        cc = r.get("cloud_cover")
        t.add_row(
            str(r["item"]),
            str(r.get("datetime") or "")[:10],
            f"{cc:.1f}" if isinstance(cc, (int, float)) else "?",
            str(r.get("processing_baseline") or "?"),
            f"{r.get('offset_subtracted_dn', 0):g}",
            str(r.get("valid_pixels")),
        )
    console.print(t)
    g = result.grid
    console.print(
        f"grid: {g.crs}, {g.width} x {g.height} px at {g.transform[0]:g} m; "
        f"{result.scenes_fetched} scene(s) fetched, {result.scenes_reused} reused "
        f"({result.search.get('dropped_cloud', 0)} too cloudy, "
        f"{result.search.get('dropped_max_items', 0)} beyond --max-items)"
    )
    if result.stats is not None:
        s = result.stats
        console.print(
            f"composite: {result.composite} ({s.pixels_without_clear} of {s.pixels} pixels "
            "without a clear observation, written as nodata 0)"
        )
    imagery = result.composite or result.out / "scenes"
    console.print(f"next: groundsynth build -i {imagery} -l WORLDCOVER -o DATASET")


def register(acquire_app: typer.Typer) -> None:
    """Add ``sentinel2`` to the ``acquire`` command group."""
    acquire_app.command("sentinel2")(sentinel2_cmd)
