"""Data commands: sample-world, build, validate, fetch."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer
from rich.table import Table

from groundsynth.cli._common import console, friendly, progress_bar

__all__ = ["register"]

fetch_app = typer.Typer(help="Download public datasets.", no_args_is_help=True)


# ----------------------------------------------------------------------------- sample-world
@friendly
def sample_world_cmd(
    out: Path = typer.Argument(..., help="Folder to write landcover.tif and sentinel2.tif into."),
    size: int = typer.Option(4096, help="Land-cover map size in pixels (square)."),
    seed: int = typer.Option(0, help="Random seed: same seed, same world."),
    region: str = typer.Option("temperate", help="Class balance and spectra: temperate or arid."),
) -> None:
    """Write a synthetic WorldCover-like map and a Sentinel-2-like image of it.

    The map is EPSG:4326 at ~10 m with WorldCover codes and a nodata border; the image is a
    4-band (R, G, B, NIR) uint16 reflectance raster on a UTM grid, so building from it
    exercises reprojection.

    Example: `groundsynth sample-world world/ --size 2048 --seed 1`
    """
    from groundsynth.data.sample_world import SampleWorldConfig, make_sample_world

    try:
        cfg = SampleWorldConfig(size=size, seed=seed, region=region)  # type: ignore[arg-type]
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from None
    world = make_sample_world(out, cfg)
    console.print(f"land cover: {world.landcover}\nimagery:    {world.imagery}")


# ----------------------------------------------------------------------------- build
def _parse_assign(values: list[str]) -> tuple[tuple[str, str], ...]:
    out = []
    for v in values:
        if "=" not in v:
            raise typer.BadParameter(f"--assign expects SOURCE=SPLIT, got {v!r}")
        a, b = v.split("=", 1)
        out.append((a.strip(), b.strip()))
    return tuple(out)


def _floats(text: str, n: int, name: str) -> tuple[float, ...]:
    try:
        vals = tuple(float(x) for x in text.split(","))
    except ValueError:
        raise typer.BadParameter(
            f"{name} expects {n} comma-separated numbers, got {text!r}"
        ) from None
    if len(vals) != n:
        raise typer.BadParameter(f"{name} expects {n} comma-separated numbers, got {text!r}")
    return vals


@friendly
def build_cmd(
    imagery: list[Path] = typer.Option(
        [],
        "--imagery",
        "-i",
        help="Imagery GeoTIFF/COG files, folders, or one-file-per-band products. Repeatable.",
    ),
    landcover: list[Path] = typer.Option(
        [], "--landcover", "-l", help="WorldCover tiles or folders of them. Repeatable."
    ),
    out: Path = typer.Option(..., "--out", "-o", help="Dataset directory to write (or resume)."),
    bbox: str | None = typer.Option(
        None,
        "--bbox",
        help="Instead of -i/-l: an area W,S,E,N (degrees). Its WorldCover map and Sentinel-2 "
        "RGBNIR composite are acquired into OUT/source/ first (see `groundsynth acquire "
        "worldcover --help` for what that fetches).",
    ),
    geojson: Path | None = typer.Option(
        None, "--geojson", help="Instead of -i/-l: the bounding box of a GeoJSON's geometries."
    ),
    year: int = typer.Option(
        2021, "--year", help="With --bbox/--geojson: WorldCover 2020 or 2021."
    ),
    base_url: str | None = typer.Option(
        None, "--base-url", help="With --bbox/--geojson: a mirror of the WorldCover map bucket."
    ),
    s2_base_url: str | None = typer.Option(
        None, "--s2-base-url", help="With --bbox/--geojson: a mirror of the composite bucket."
    ),
    size: int = typer.Option(256, help="Patch size in pixels."),
    stride: int | None = typer.Option(
        None, help="Step between patches (default: --size, no overlap)."
    ),
    bands: str | None = typer.Option(
        None,
        help="Red,green,blue[,nir]: band names (B04,B03,B02,B08) for per-band products, 1-based indices or descriptions for multi-band files.",
    ),
    scaling: str = typer.Option(
        "reflectance",
        help="8-bit scaling: reflectance (fixed range), percentile (per source 2-98 %), patch-max (ARAS scripts).",
    ),
    reflectance_max: float = typer.Option(
        0.3, help="Reflectance mapped to 255 with --scaling reflectance."
    ),
    percentiles: str = typer.Option("2,98", help="Low,high percentiles for --scaling percentile."),
    quantification: float | None = typer.Option(
        None, help="DN per unit reflectance when the files do not say (default 10000 for integers)."
    ),
    keep_nir: bool = typer.Option(
        False, help="Also write 4-band reflectance GeoTIFF patches (images_nir/)."
    ),
    max_water: float = typer.Option(0.9, help="Skip patches with a larger water fraction."),
    max_label_nodata: float = typer.Option(
        0.0, help="Skip patches with a larger fraction of nodata labels (0: any)."
    ),
    max_image_nodata: float = typer.Option(
        1.0,
        help="Skip patches with a larger fraction of nodata imagery (all-zero patches are always skipped).",
    ),
    split_by: str = typer.Option(
        "block", help="block (spatial blocks of patches) or source (whole sources/regions)."
    ),
    split: str = typer.Option("0.8,0.1,0.1", help="Train,val,test fractions."),
    block_size: int = typer.Option(8, help="Side of a split block, in patches."),
    buffer: int = typer.Option(
        1,
        min=0,
        help="Patches dropped between blocks of different splits (from the lower-ranked side: "
        "train, then val), so no test patch touches a training patch. 0 keeps every patch.",
    ),
    assign: list[str] = typer.Option([], help="With --split-by source: SOURCE=SPLIT, repeatable."),
    seed: int = typer.Option(0, help="Seed of the split assignment."),
    workers: int = typer.Option(
        1, "--workers", "-j", help="Worker processes (this one and N-1 children)."
    ),
    png_encoder: str = typer.Option(
        "auto", help="RGB PNG encoder: fpng (fast), pil, or auto (fpng if installed)."
    ),
    png_level: int = typer.Option(
        1, help="PNG zlib level 0-9 for the pil encoder (lossless at every level)."
    ),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="Show a progress bar."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Print the resolved config and exit."),
) -> None:
    """Cut imagery + land cover into a patch dataset (images, palette masks, tables).

    Land cover is read for each patch on the imagery grid (nearest, mosaicked across tiles);
    files are paired by spatial overlap, never by name. Rerun the same command to resume.

    From an area instead of files: `--bbox W,S,E,N --year 2021` first acquires the area's
    ESA WorldCover map and Sentinel-2 RGBNIR composite from the public buckets (windows
    only, no credentials) into OUT/source/, then builds; rerunning resumes both steps.

    Example: `groundsynth build -i world/sentinel2.tif -l world/landcover.tif -o data/ -j 2`

    Example: `groundsynth build --bbox 6.6,0.3,6.7,0.4 --year 2021 -o data/saotome`
    """
    import yaml

    from groundsynth.data.build import BuildConfig, build_dataset
    from groundsynth.runs import to_plain

    area = bbox is not None or geojson is not None
    if area and (imagery or landcover):
        raise typer.BadParameter("give --bbox/--geojson or --imagery/--landcover, not both")
    if not area and not (imagery and landcover):
        raise typer.BadParameter(
            "give --imagery and --landcover, or an area with --bbox W,S,E,N / --geojson FILE"
        )
    options = dict(
        size=size,
        stride=stride,
        bands=tuple(b.strip() for b in bands.split(",")) if bands else None,
        quantification=quantification,
        scaling=scaling,  # type: ignore[arg-type]
        reflectance_max=reflectance_max,
        percentiles=_floats(percentiles, 2, "--percentiles"),  # type: ignore[arg-type]
        keep_nir=keep_nir,
        max_water=max_water,
        max_label_nodata=max_label_nodata,
        max_image_nodata=max_image_nodata,
        split_by=split_by,  # type: ignore[arg-type]
        split_fractions=_floats(split, 3, "--split"),
        block_size=block_size,
        buffer=buffer,
        assign=_parse_assign(assign),
        seed=seed,
        workers=workers,
        png_compress_level=png_level,
        png_encoder=png_encoder,
    )
    if area:
        from groundsynth.acquire.area_dataset import area_build_config

        cfg = area_build_config(out, year, **options).resolved()
    else:
        cfg = BuildConfig(
            imagery=tuple(map(str, imagery)),
            landcover=tuple(map(str, landcover)),
            out=str(out),
            **options,  # type: ignore[arg-type]
        ).resolved()
    if dry_run:
        console.print(yaml.safe_dump(to_plain(cfg), sort_keys=False))
        return
    with progress_bar(progress) as bar:
        task = bar.add_task("build", total=None, info="")

        def report(done: int, total: int, written: int) -> None:
            bar.update(task, completed=done, total=total, info=f"{written} patches")

        if area:
            result = _build_area(
                bar, report, out, bbox, geojson, year, base_url, s2_base_url, options
            )
        else:
            result = build_dataset(cfg, progress=report)
    _print_build(result)


def _build_area(bar, report, out, bbox, geojson, year, base_url, s2_base_url, options):
    """``build --bbox``: the area's map and composite into OUT/source, then the build."""
    from groundsynth.acquire.area_dataset import build_from_area
    from groundsynth.acquire.worldcover import DEFAULT_MAP_BASE_URL, DEFAULT_S2_BASE_URL

    task = bar.add_task("acquire", total=None, info="")

    def fetched(done: int, total: int, nbytes: int) -> None:
        bar.update(task, completed=done, total=total, info=f"{nbytes / 1e6:.1f} MB")

    acquired, result = build_from_area(
        out,
        bbox=bbox,
        geojson=geojson,
        year=year,
        base_url=base_url or DEFAULT_MAP_BASE_URL,
        s2_base_url=s2_base_url or DEFAULT_S2_BASE_URL,
        build=options,
        acquire_progress=fetched,
        build_progress=report,
    )
    console.print(
        f"acquired {', '.join(f'{k}: {len(v)} tile(s)' for k, v in acquired.tiles.items())}; "
        f"{acquired.bytes_fetched / 1e6:.1f} MB fetched of {acquired.bytes_remote / 1e6:.0f} MB "
        f"in the remote files, into {acquired.out}"
    )
    return result


def _print_build(result: Any) -> None:
    t = Table(title=f"dataset: {result.out}", show_edge=False)
    t.add_column("split")
    t.add_column("patches", justify="right")
    from groundsynth.classes import CLASS_NAMES

    for n in CLASS_NAMES:
        t.add_column(n, justify="right")
    for s, n in result.counts.items():
        share = result.class_share.get(s, {})
        t.add_row(s, str(n), *(f"{100 * share.get(c, 0):.1f}%" for c in CLASS_NAMES))
    console.print(t)
    skipped = ", ".join(f"{k}: {v}" for k, v in sorted(result.skipped.items())) or "none"
    console.print(f"skipped patches: {skipped}")
    lk = result.leakage
    console.print(
        f"split leakage: {lk['test_patches_touching_train']} of {lk['test_patches']} test patches touch a train patch"
    )
    if result.chunks_resumed:
        console.print(
            f"resumed: {result.chunks_resumed} of {result.chunks_total} chunks were already done"
        )


# ----------------------------------------------------------------------------- validate
@friendly
def validate_cmd(
    root: Path = typer.Argument(..., help="Dataset directory (groundsynth or ARAS400k layout)."),
    tolerance: float = typer.Option(
        1.0, help="Allowed disagreement, in percentage points, between tables and masks."
    ),
    sum_tolerance: float = typer.Option(
        0.0, help="Allowed deviation of a row's class percentages from 100."
    ),
    decode_images: bool = typer.Option(
        False, help="Decode every image's pixels, not only its header."
    ),
    limit: int = typer.Option(20, help="Problems to list (all are counted)."),
    json_out: Path | None = typer.Option(
        None, "--json", help="Also write the full report as JSON."
    ),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="Show a progress bar."),
) -> None:
    """Check a dataset: unpaired files, size mismatches, unknown mask colours, and tables
    that disagree with the masks. Exits with status 1 when a problem is found.

    Example: `groundsynth validate data/ --tolerance 1`
    """
    from groundsynth.io import write_json

    report = _validate(
        root,
        progress,
        tolerance=tolerance,
        sum_tolerance=sum_tolerance,
        decode_images=decode_images,
    )
    console.print(report.summary(limit=limit), highlight=False, soft_wrap=True)
    if json_out is not None:
        write_json(json_out, report.to_dict())
    if not report.ok:
        raise typer.Exit(1)


def _validate(root: Path, progress: bool, **kw: Any) -> Any:
    from groundsynth.data.validate import validate_dataset

    with progress_bar(progress) as bar:
        task = bar.add_task("validate", total=None, info="")
        return validate_dataset(
            root, progress=lambda d, t: bar.update(task, completed=d, total=t), **kw
        )


# ----------------------------------------------------------------------------- demo
# ----------------------------------------------------------------------------- fetch
@friendly
def fetch_aras400k_cmd(
    out: Path = typer.Option(..., "--out", "-o", help="Dataset root to download and unpack into."),
    splits: str = typer.Option("test", help="Comma-separated splits: train, val, test, synth."),
    base_url: str | None = typer.Option(
        None, help="Mirror serving SPLIT.zip (default: the Zenodo record)."
    ),
    keep_zip: bool = typer.Option(False, help="Keep the downloaded zips after unpacking."),
    no_extract: bool = typer.Option(
        False, "--no-extract", help="Only download and verify the zips."
    ),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="Show a progress bar."),
) -> None:
    """Download ARAS400k (Zenodo 18890661): resumable, MD5-verified, safely unpacked.

    An interrupted download resumes where it stopped when rerun; archives whose MD5 does
    not match the published one are rejected; members that would land outside OUT are refused.

    Example: `groundsynth fetch aras400k --out data/aras400k --splits test,val`
    """
    from groundsynth.data.fetch import ARAS400K_BASE_URL, fetch_aras400k

    wanted = [s.strip() for s in splits.split(",") if s.strip()]
    results = []
    with progress_bar(progress) as bar:
        for split in wanted:
            task = bar.add_task(f"{split}.zip", total=None, info="")

            def report(done: int, total: int | None, _task: Any = task) -> None:
                bar.update(_task, completed=done, total=total, info=f"{done / 2**20:.0f} MiB")

            results += fetch_aras400k(
                out,
                (split,),
                base_url=base_url or ARAS400K_BASE_URL,
                extract=not no_extract,
                keep_zip=keep_zip,
                progress=report,
            )
    for r in results:
        state = (
            "already present" if r.skipped else f"{r.bytes_downloaded / 2**20:.1f} MiB downloaded"
        )
        console.print(f"{r.split}: {state}; {r.files_total} files in {r.path}")


def register(app: typer.Typer) -> None:
    app.command("sample-world")(sample_world_cmd)
    app.command("build")(build_cmd)
    app.command("validate")(validate_cmd)
    fetch_app.command("aras400k")(fetch_aras400k_cmd)
    app.add_typer(fetch_app, name="fetch")
