"""Dataset-build throughput: groundsynth vs a reference-scripts-style baseline vs the floor.

All on one sample world made in this run (default 6144² land-cover pixels):

- baseline: works like the ARAS400k reference scripts: re-opens the land-cover raster for
  every patch, writes RGB colour masks, computes class percentages with per-class colour
  loops, PIL's default PNG compression; one process;
- floor: only reads the windows (imagery + land cover onto the imagery grid) and encodes the
  output PNGs, nothing else, one process;
- groundsynth build with 1 and 2 worker processes.

Each is timed ``--repeats`` times into fresh folders, the jobs interleaved round by round
(median reported); peak RSS per process is measured in a child process. Also prints the CPU
time of each job, how many cores one worker keeps busy, and so the best 2-worker speed-up
this machine allows; and compares PNG encoders/levels (all lossless).
Usage: python benchmarks/bench_build.py [--size 6144] [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import rasterio
from _common import peak_rss_mib
from PIL import Image
from rasterio.enums import Resampling
from rasterio.warp import reproject
from rasterio.windows import Window

from groundsynth.classes import COLOURS, WORLDCOVER_TO_CLASS
from groundsynth.data.build import BuildConfig, build_dataset

PATCH = 256
#: Where outputs are written (set by --workdir); file creation speed differs between folders.
WORKDIR: Path | None = None


def _landcover(img, win: Window, lc, nodata_mask: bool = True) -> np.ndarray:
    """WorldCover codes on the imagery window's grid, from a padded window of the tile
    (``nodata_mask=False``: without GDAL's source-nodata masking, as groundsynth; with nearest
    resampling the result is the same)."""
    b = rasterio.windows.bounds(win, img.transform)
    tb = rasterio.warp.transform_bounds(img.crs, lc.crs, *b)
    fw = rasterio.windows.from_bounds(*tb, transform=lc.transform)
    c0, r0 = int(np.floor(fw.col_off)) - 2, int(np.floor(fw.row_off)) - 2
    c1, r1 = int(np.ceil(fw.col_off + fw.width)) + 2, int(np.ceil(fw.row_off + fw.height)) + 2
    lwin = Window(c0, r0, c1 - c0, r1 - r0).intersection(Window(0, 0, lc.width, lc.height))
    codes = np.zeros((int(win.height), int(win.width)), dtype=np.uint8)
    reproject(
        lc.read(1, window=lwin),
        codes,
        src_transform=lc.window_transform(lwin),
        src_crs=lc.crs,
        dst_transform=img.window_transform(win),
        dst_crs=img.crs,
        src_nodata=0 if nodata_mask else None,
        dst_nodata=0,
        resampling=Resampling.nearest,
    )
    return codes


# ----------------------------------------------------------------------------- baseline
def baseline(imagery: Path, landcover: Path, out: Path) -> int:
    """Reference-scripts style: per patch, re-open land cover, colour masks, per-class loops."""
    out.mkdir(parents=True)
    (out / "images").mkdir()
    (out / "masks").mkdir()
    rows = []
    n = 0
    with rasterio.open(imagery) as img:
        for r in range(img.height // PATCH):
            for c in range(img.width // PATCH):
                win = Window(c * PATCH, r * PATCH, PATCH, PATCH)
                data = img.read(window=win)
                if not data.any():
                    continue
                with rasterio.open(landcover) as lc:  # re-opened for every patch
                    codes = _landcover(img, win, lc)
                if (codes == 0).any():
                    continue
                rgb_mask = np.zeros((PATCH, PATCH, 3), dtype=np.uint8)
                for code, idx in WORLDCOVER_TO_CLASS.items():  # per-code loop
                    rgb_mask[codes == code] = COLOURS[idx]
                pct = [np.all(rgb_mask == col, axis=-1).mean() * 100 for col in COLOURS]
                if pct[6] > 90:
                    continue
                rgb = data[:3].astype(np.float32)
                image = (rgb / rgb.max() * 255).astype(np.uint8).transpose(1, 2, 0)
                name = f"{r:03d}_{c:03d}.png"
                Image.fromarray(image).save(out / "images" / name)
                Image.fromarray(rgb_mask).save(out / "masks" / name)
                rows.append([name, *pct])
                n += 1
    with open(out / "percentages.csv", "w") as fh:
        for row in rows:
            fh.write(",".join(map(str, row)) + "\n")
    return n


# ----------------------------------------------------------------------------- floor
def floor(imagery: Path, landcover: Path, level: int, encoder: str, out: Path | None = None) -> int:
    """Only the unavoidable work: read the windows (imagery, land cover) and encode PNGs;
    with ``out``, also write the PNG bytes to plain files (no atomic rename, no tables)."""
    from groundsynth.classes import remap_worldcover
    from groundsynth.data.masks import encode_mask_png, encode_rgb_png

    n = 0
    with rasterio.open(imagery) as img, rasterio.open(landcover) as lc:
        k = 16
        for r in range(img.height // PATCH):
            for c0 in range(0, img.width // PATCH, k):
                kk = min(k, img.width // PATCH - c0)
                win = Window(c0 * PATCH, r * PATCH, kk * PATCH, PATCH)
                data = img.read([1, 2, 3], window=win)
                labels = remap_worldcover(_landcover(img, win, lc, nodata_mask=False))
                for j in range(kk):
                    sl = slice(j * PATCH, (j + 1) * PATCH)
                    lab = labels[:, sl]
                    if (lab == 255).any() or (lab == 6).mean() > 0.9 or not data[:, :, sl].any():
                        continue  # the same patches as the build keeps
                    rgb = (data[:, :, sl] >> 4).astype(np.uint8)  # cheapest 8-bit conversion
                    a = encode_rgb_png(np.ascontiguousarray(rgb.transpose(1, 2, 0)), level, encoder)
                    b = encode_mask_png(lab)
                    if out is not None:
                        (out / f"{n}.png").write_bytes(a)
                        (out / f"{n}.mask.png").write_bytes(b)
                    n += 1
    return n


# ----------------------------------------------------------------------------- child runs
def child(args: argparse.Namespace) -> None:
    """Run one measured job in this (child) process and print JSON."""
    world = Path(args.world)
    img, lc = world / "sentinel2.tif", world / "landcover.tif"
    out = Path(args.out)
    t = time.perf_counter()
    cpu0 = _cpu_seconds()
    process = None
    if args.job == "baseline":
        n = baseline(img, lc, out)
    elif args.job == "floor":
        n = floor(img, lc, args.level, args.encoder)
    elif args.job == "floor-write":
        out.mkdir(parents=True)
        n = floor(img, lc, args.level, args.encoder, out)
    else:
        cfg = BuildConfig(
            imagery=(str(img),), landcover=(str(lc),), out=str(out), workers=args.workers,
            png_compress_level=args.level, png_encoder=args.encoder,
        )  # fmt: skip
        res = build_dataset(cfg)
        n = sum(res.counts.values())
        process = res.phases["process"]
    dt = time.perf_counter() - t
    print(
        json.dumps(
            {
                "seconds": dt,
                "cpu": _cpu_seconds() - cpu0,
                "patches": n,
                "process": process,
                "rss_self": vm_hwm_mib(),
                "rss_children": peak_rss_mib(True),
            }
        )
    )


def _cpu_seconds() -> float:
    """CPU time (user + system) of this process, all its threads, and its finished children."""
    own, kids = (
        resource.getrusage(resource.RUSAGE_SELF),
        resource.getrusage(resource.RUSAGE_CHILDREN),
    )
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def vm_hwm_mib() -> float:
    """Peak RSS of this process image (VmHWM; unlike ru_maxrss it is not inherited at exec)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return peak_rss_mib()


def run_once(
    world: Path, job: str, workers: int = 1, level: int = 1, encoder: str = "auto"
) -> dict:
    """One measured run of ``job`` in a child process, into a fresh folder."""
    tmp = Path(tempfile.mkdtemp(prefix=f"bench-{job}-", dir=WORKDIR))
    cmd = [sys.executable, __file__, "--child", job, "--world", str(world), "--out", str(tmp / "out"),
           "--workers", str(workers), "--level", str(level), "--encoder", encoder]  # fmt: skip
    try:
        res = subprocess.run(cmd, capture_output=True, text=True, check=True)
    finally:
        shutil.rmtree(tmp)
    return json.loads(res.stdout.strip().splitlines()[-1])


def summarise(runs: list[dict]) -> dict:
    sec = statistics.median(r["seconds"] for r in runs)
    proc = [r["process"] for r in runs if r.get("process")]
    return {
        "process": statistics.median(proc) if proc else None,
        "seconds": sec,
        "cpu": statistics.median(r["cpu"] for r in runs),
        "patches": runs[0]["patches"],
        "rate": runs[0]["patches"] / sec,
        "rss": max(max(r["rss_self"], r["rss_children"]) for r in runs),
    }


def measure_interleaved(world: Path, jobs: dict[str, tuple[str, int]], repeats: int) -> dict:
    """Run every job once per round, ``repeats`` rounds: a slow spell of a shared machine
    then slows all jobs alike instead of one job's runs, which keeps the ratios honest."""
    runs: dict[str, list[dict]] = {name: [] for name in jobs}
    for _ in range(repeats):
        for name, (job, workers) in jobs.items():
            runs[name].append(run_once(world, job, workers))
    return {name: summarise(r) for name, r in runs.items()}


def png_table(world: Path) -> None:
    """Encode 32 real patches with each encoder/level: time and size (lossless only)."""
    import groundsynth.data.masks as masks

    with rasterio.open(world / "sentinel2.tif") as img:
        data = img.read(window=Window(0, img.height // 2, 8 * PATCH, PATCH))
    patches = [
        np.ascontiguousarray(
            np.clip(data[:3, :, j * PATCH : (j + 1) * PATCH] / 12, 0, 255)
            .astype(np.uint8)
            .transpose(1, 2, 0)
        )
        for j in range(8)
    ] * 4
    print("\nPNG encoding of 256x256 RGB patches (lossless):")
    print(f"{'encoder':<22}{'ms/patch':>10}{'KiB/patch':>11}")
    encoders = {
        f"PIL zlib level {lv}": (lambda a, lv=lv: masks.encode_rgb_png(a, lv))
        for lv in (0, 1, 3, 6, 9)
    }
    if masks._fpng() is not None:
        encoders["fpng"] = lambda a: masks.encode_rgb_png(a, encoder="fpng")
    try:
        import cv2

        for lv in (1, 3):
            encoders[f"OpenCV level {lv}"] = lambda a, lv=lv: cv2.imencode(
                ".png", a, [cv2.IMWRITE_PNG_COMPRESSION, lv]
            )[1]
    except ImportError:
        print("(OpenCV not installed: skipped)")
    for name, enc in encoders.items():
        enc(patches[0])
        t = time.perf_counter()
        sizes = [len(enc(p)) for p in patches]
        dt = (time.perf_counter() - t) / len(patches)
        print(f"{name:<22}{dt * 1e3:>10.2f}{np.mean(sizes) / 1024:>11.1f}")
    with rasterio.open(world / "landcover.tif") as lc:
        codes = lc.read(1, window=Window(lc.width // 2, lc.height // 2, 8 * PATCH, PATCH))
    from groundsynth.classes import remap_worldcover

    labels = np.minimum(remap_worldcover(codes), 6)
    mlist = [np.ascontiguousarray(labels[:, j * PATCH : (j + 1) * PATCH]) for j in range(8)] * 4
    print("\nPNG encoding of 256x256 palette masks (PIL):")
    for lv in (1, 6, 9):
        t = time.perf_counter()
        sizes = [len(masks.encode_mask_png(m, lv)) for m in mlist]
        dt = (time.perf_counter() - t) / len(mlist)
        print(f"{'PIL zlib level ' + str(lv):<22}{dt * 1e3:>10.2f}{np.mean(sizes) / 1024:>11.1f}")


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--size", type=int, default=6144, help="sample-world size (>= 4096)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument(
        "--workdir", default=".bench-tmp", help="folder for the outputs (default ./.bench-tmp)"
    )
    ap.add_argument("--child", help=argparse.SUPPRESS)
    ap.add_argument("--world", help=argparse.SUPPRESS)
    ap.add_argument("--out", help=argparse.SUPPRESS)
    ap.add_argument("--workers", type=int, default=1, help=argparse.SUPPRESS)
    ap.add_argument("--level", type=int, default=1, help=argparse.SUPPRESS)
    ap.add_argument("--encoder", default="auto", help="RGB PNG encoder of floor and groundsynth")
    args = ap.parse_args()
    if args.child:
        args.job = args.child
        return child(args)
    from groundsynth.data.sample_world import SampleWorldConfig, make_sample_world

    global WORKDIR
    WORKDIR = Path(args.workdir).resolve()
    WORKDIR.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="bench-build-", dir=WORKDIR))
    try:
        t = time.perf_counter()
        # in a child process, so its memory does not count in the measured children's peaks
        with multiprocessing.get_context("spawn").Pool(1) as pool:
            world = pool.apply(
                make_sample_world, (work / "world", SampleWorldConfig(size=args.size, seed=0))
            )
        print(f"sample world {args.size}² made in {time.perf_counter() - t:.1f} s")
        with rasterio.open(world.imagery) as ds:
            print(
                f"imagery {ds.width}x{ds.height} px ({ds.crs}), patches of {PATCH}²; median of {args.repeats} runs"
            )
        wd = world.imagery.parent
        jobs = {
            "baseline (reference style)": ("baseline", 1),
            "floor (read + encode only)": ("floor", 1),
            "floor + plain file writes": ("floor-write", 1),
            "groundsynth, 1 worker": ("ours", 1),
            "groundsynth, 2 workers": ("ours", 2),
        }
        res = measure_interleaved(wd, jobs, args.repeats)
        print(f"\n{'job':<30}{'patches':>8}{'seconds':>9}{'patches/s':>11}{'peak RSS MiB':>14}")
        for name, r in res.items():
            print(
                f"{name:<30}{r['patches']:>8}{r['seconds']:>9.2f}{r['rate']:>11.1f}{r['rss']:>14.0f}"
            )
        one, two = res["groundsynth, 1 worker"], res["groundsynth, 2 workers"]
        base, flo = res["baseline (reference style)"], res["floor (read + encode only)"]
        fw = res["floor + plain file writes"]
        print(
            f"\n1 worker vs baseline: {base['seconds'] / one['seconds']:.2f}x faster (target >= 4)"
        )
        print(
            f"1 worker vs floor:    {one['seconds'] / flo['seconds']:.2f}x the floor's time (target <= 1.5)"
        )
        print(
            f"1 worker vs floor + plain file writes: {one['seconds'] / fw['seconds']:.2f}x its time"
        )
        print(
            f"2 workers vs 1:       {two['rate'] / one['rate']:.2f}x faster, whole command incl. start-up (target >= 1.8)"
        )
        print(
            f"2 workers vs 1:       {one['process'] / two['process']:.2f}x faster in the processing phase "
            f"({one['process']:.2f} s -> {two['process']:.2f} s)"
        )
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
        busy = one["cpu"] / one["seconds"]
        print(
            f"  1 worker keeps {busy:.2f} cores busy ({one['cpu']:.2f} CPU s in {one['seconds']:.2f} s: "
            f"its file writes run on a second thread); with {cores} cores, 2 workers can be at most "
            f"{min(2, cores) / busy:.2f}x faster than 1 (2 workers: {two['cpu']:.2f} CPU s, "
            f"{two['cpu'] / two['seconds']:.2f} cores busy)"
        )
        print(f"peak RSS per process: {max(one['rss'], two['rss']):.0f} MiB (target < 1024)")
        png_table(wd)
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
