"""Acquisition commands: ``groundsynth acquire worldcover`` (and ``sentinel2`` when present)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import typer

from groundsynth.cli._common import console, friendly, progress_bar

__all__ = ["acquire_app", "register"]

acquire_app = typer.Typer(
    help=(
        "Acquire imagery and land cover for an area from public cloud-optimized GeoTIFFs: "
        "only the windows the area needs are read, by HTTP range requests. The outputs are "
        "what `groundsynth build` takes."
    ),
    no_args_is_help=True,
)

_MIB = 2**20


def _mib(n: int) -> str:
    return f"{n / _MIB:.1f} MiB" if n >= _MIB / 10 else f"{n / 1024:.0f} KiB"


@friendly
def worldcover_cmd(
    out: Path = typer.Option(
        ..., "--out", "-o", help="Folder to write (or resume): the run directory."
    ),
    bbox: str | None = typer.Option(
        None, "--bbox", help="Area as W,S,E,N in degrees (longitude first), e.g. 6.5,0.2,6.75,0.4."
    ),
    geojson: Path | None = typer.Option(
        None, "--geojson", help="GeoJSON file (lon/lat); the bounding box of its geometries."
    ),
    year: int = typer.Option(2021, "--year", help="2020 (algorithm v100) or 2021 (v200)."),
    with_s2: bool = typer.Option(
        False,
        "--with-s2",
        help="Also acquire the Sentinel-2 RGBNIR yearly composite of the same year (imagery).",
    ),
    base_url: str | None = typer.Option(
        None, "--base-url", help="Map bucket or a mirror of its layout (default: ESA's on AWS)."
    ),
    s2_base_url: str | None = typer.Option(
        None,
        "--s2-base-url",
        help="Composite bucket or a mirror of its layout (default: ESA's on AWS).",
    ),
    on_change: str = typer.Option(
        "error",
        "--on-change",
        help="A remote file changed since earlier windows were read: error, or refetch them.",
    ),
    max_pixels: int = typer.Option(
        600_000_000, "--max-pixels", help="Refuse larger areas (1 square degree = 1.44e8 pixels)."
    ),
    retries: int = typer.Option(5, help="Retries of failed requests (with doubling back-off)."),
    backoff: float = typer.Option(1.0, help="First retry delay, seconds."),
    timeout: float = typer.Option(30.0, help="HTTP time-out, seconds."),
    dry_run: bool = typer.Option(
        False, "--dry-run", help="Print the tiles, URLs and output size; fetch nothing."
    ),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="Show a progress bar."),
) -> None:
    """Acquire an area of ESA WorldCover land cover (and its Sentinel-2 composite).

    Finds the WorldCover tiles under the area (3x3 degree map tiles, 1x1 degree composite
    tiles), reads only the windows the area needs from the public cloud-optimized GeoTIFFs
    by HTTP range requests, and mosaics them on the tiles' own grid (EPSG:4326, 1/12000
    degree, about 10 m; no resampling) into `OUT/landcover/` and, with --with-s2,
    `OUT/imagery/` (bands red, green, blue, nir; reflectance x 10000). The manifest
    records every remote file's URL, size, ETag, date, the windows read and the bytes
    fetched. Rerun the same command to resume an interrupted run.

    Cost: an area of W x H degrees is 12000 W x 12000 H pixels: 1 byte each for the map,
    8 for the composite (0.1 x 0.1 degree: 1200 x 1200 pixels, 1.4 MB + 11.5 MB before
    compression). Only the compressed internal tiles under the area are fetched, plus a
    few tens of KB of header per file, instead of whole tiles (a composite tile is about
    0.5 GB). Try --dry-run first.

    Example: `groundsynth acquire worldcover --bbox 6.45,0.0,6.8,0.45 --year 2021 --with-s2 --out data/saotome`

    then: `groundsynth build --imagery data/saotome/imagery --landcover data/saotome/landcover --out data/saotome-ds`
    """
    from groundsynth.acquire.area import resolve_area
    from groundsynth.acquire.tiles import DEFAULT_MAP_BASE_URL, DEFAULT_S2_BASE_URL, area_window
    from groundsynth.acquire.worldcover import WorldCoverConfig, plan_worldcover, run_worldcover

    config = WorldCoverConfig(
        out=str(out.resolve()),
        bbox=resolve_area(bbox, geojson),
        year=year,
        with_s2=with_s2,
        base_url=base_url or DEFAULT_MAP_BASE_URL,
        s2_base_url=s2_base_url or DEFAULT_S2_BASE_URL,
        on_change=on_change,  # type: ignore[arg-type]  # validated by the config
        max_pixels=max_pixels,
        retries=retries,
        backoff=backoff,
        timeout=timeout,
        geojson=str(geojson.resolve()) if geojson is not None else None,
    )
    if dry_run:
        area = area_window(config.bbox)
        per_pixel = 1 + (8 if with_s2 else 0)
        console.print(
            f"area {list(config.bbox)}: {area.width} x {area.height} pixels, "
            f"{_mib(area.pixels * per_pixel)} before compression"
        )
        for rt in plan_worldcover(config):
            w = rt.window.local
            console.print(
                f"  {rt.product.name:9s} {rt.window.tile}  window {w.width}x{w.height} at "
                f"col {w.col}, row {w.row}  {rt.url}",
                highlight=False,
                soft_wrap=True,
            )
        console.print("dry run: nothing fetched or written")
        return
    with progress_bar(progress) as bar:
        task = bar.add_task("windows", total=None, info="")

        def report(done: int, total: int, fetched: int) -> None:
            bar.update(task, completed=done, total=total, info=f"{_mib(fetched)} fetched")

        result = run_worldcover(config, progress=report)
    console.print(f"land cover: {result.landcover}", highlight=False, soft_wrap=True)
    if result.imagery is not None:
        console.print(f"imagery:    {result.imagery}", highlight=False, soft_wrap=True)
    for product, tiles in result.tiles.items():
        gone = result.missing.get(product) or []
        extra = f"; no tile on the server for {', '.join(gone)}" if gone else ""
        console.print(f"{product}: read {', '.join(tiles)}{extra}", highlight=False)
    console.print(
        f"fetched {_mib(result.bytes_fetched)} of {_mib(result.bytes_remote)} in the remote "
        f"files; {result.windows_resumed} of {result.windows_total} windows reused; "
        f"provenance in {result.out / 'manifest.json'}",
        highlight=False,
        soft_wrap=True,
    )
    if result.imagery is not None:
        console.print(
            f"next: groundsynth build --imagery {result.imagery.parent} "
            f"--landcover {result.landcover.parent} --out DATASET",
            highlight=False,
            soft_wrap=True,
        )


def register(app: typer.Typer) -> None:
    acquire_app.command("worldcover")(worldcover_cmd)
    # `groundsynth acquire sentinel2` lives in its own module; plug it in when it is there.
    if importlib.util.find_spec("groundsynth.cli.acquire_sentinel2") is not None:
        from groundsynth.cli import acquire_sentinel2

        acquire_sentinel2.register(acquire_app)
    app.add_typer(acquire_app, name="acquire")
