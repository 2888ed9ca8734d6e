"""``groundsynth import-samples``: images from any external generator -> a synthetic dataset.

Brings a folder of PNG/JPEG images (e.g. StyleGAN3 output) into the data contract: 8-bit RGB
PNGs in ``<split>/images``, ``metadata.parquet`` with ``origin`` = ``--name`` and the source file
of each sample, no masks yet (see :mod:`groundsynth.generate.writer`; pseudo-label them next).

* Ids come from the file paths relative to the folder (``a/b/0001.png`` -> ``a__b__0001``),
  so they are stable when files are added; two files mapping to one id are refused.
* ``--image-size S`` brings every image to S x S: ``center-crop`` (the central square, then
  resized; keeps proportions) or ``resize`` (stretches). Without it sizes are kept.
* Resumable: an image already written is skipped; files are written atomically.
* Unreadable files are skipped, counted, and named in the log and the manifest.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

import numpy as np
from PIL import Image

from groundsynth.data.contract import image_path
from groundsynth.data.masks import encode_rgb_png, resolve_png_encoder
from groundsynth.data.reader import DECODE_ERRORS, list_pngs
from groundsynth.errors import InputError
from groundsynth.generate.writer import base_row, write_tables
from groundsynth.io import write_bytes
from groundsynth.runs import check_run_dir, start_run, to_plain

__all__ = ["IMAGE_SUFFIXES", "ImportConfig", "ImportResult", "import_samples", "list_images"]

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]")
#: ``progress(done, total)`` in files
Progress = Callable[[int, int], None]


@dataclass(frozen=True)
class ImportConfig:
    """Options of ``groundsynth import-samples``.

    Attributes:
        source: folder of images (searched recursively; hidden files and folders skipped).
        out: dataset directory to write (or resume).
        name: generator name, the samples' ``origin`` (e.g. ``stylegan3``).
        split: split name of the samples.
        image_size: bring images to this square size (``None``: keep their size).
        fit: ``center-crop`` (central square, then resize) or ``resize`` (stretch).
        png_encoder: ``auto`` (fpng when installed), ``fpng`` or ``pil``.
    """

    source: str
    out: str
    name: str = "external"
    split: str = "synth"
    image_size: int | None = None
    fit: Literal["center-crop", "resize"] = "center-crop"
    png_encoder: str = "auto"

    def __post_init__(self) -> None:
        if not self.name.strip():
            raise InputError("--name must not be empty (it becomes the samples' origin)")
        if not self.split or "/" in self.split:
            raise InputError(f"--split must be a plain folder name, got {self.split!r}")
        if self.image_size is not None and self.image_size < 1:
            raise InputError(f"--image-size must be >= 1, got {self.image_size}")
        if self.fit not in ("center-crop", "resize"):
            raise InputError(f"--fit must be center-crop or resize, got {self.fit!r}")
        try:
            resolve_png_encoder(self.png_encoder)
        except ValueError as exc:
            raise InputError(str(exc)) from None

    def resolved(self) -> ImportConfig:
        return replace(
            self,
            source=str(Path(self.source).resolve()),
            out=str(Path(self.out).resolve()),
            png_encoder=resolve_png_encoder(self.png_encoder),
        )


@dataclass
class ImportResult:
    """What :func:`import_samples` did."""

    out: Path
    imported: int
    resumed: int
    skipped: dict[str, str]
    seconds: float
    manifest: dict[str, Any] = field(default_factory=dict)


def _id_of(rel: Path) -> str:
    return _UNSAFE.sub("_", "__".join(rel.with_suffix("").parts))


def list_images(source: Path, exclude: Path | None = None) -> list[tuple[str, Path]]:
    """``(id, path)`` of the images under ``source``, sorted by relative path."""
    if not source.is_dir():
        raise InputError(f"{source}: not a folder of images")
    found: dict[str, Path] = {}
    for path in sorted(source.rglob("*")):
        rel = path.relative_to(source)
        if any(part.startswith(".") for part in rel.parts):
            continue
        if exclude is not None and (path == exclude or exclude in path.parents):
            continue
        if path.suffix.lower() not in IMAGE_SUFFIXES or not path.is_file():
            continue
        sid = _id_of(rel)
        if sid in found:
            raise InputError(
                f"{found[sid]} and {path} both map to sample id {sid!r}; rename one of them"
            )
        found[sid] = path
    if not found:
        raise InputError(f"{source}: no {', '.join(IMAGE_SUFFIXES)} images found")
    return sorted(found.items(), key=lambda kv: kv[1].relative_to(source).as_posix())


def _fit(im: Image.Image, size: int | None, fit: str) -> Image.Image:
    if size is None or im.size == (size, size):
        return im
    if fit == "center-crop":
        w, h = im.size
        s = min(w, h)
        left, top = (w - s) // 2, (h - s) // 2
        im = im.crop((left, top, left + s, top + s))
    return im.resize((size, size), Image.Resampling.LANCZOS)


def _read_rgb(path: Path) -> Image.Image:
    with Image.open(path) as im:
        im.load()
        if im.mode in ("I;16", "I;16B", "I", "F"):
            raise InputError(
                f"{path}: image mode {im.mode!r} is not 8-bit; convert it to 8-bit first"
            )
        return im.convert("RGB") if im.mode != "RGB" else im.copy()


def _check_output(out: Path, config) -> None:
    check_run_dir(out, to_plain(config), what="import")


def import_samples(config: ImportConfig, *, progress: Progress | None = None) -> ImportResult:
    """Import (or resume importing) the images of ``config.source`` into ``config.out``."""
    t0 = time.perf_counter()
    config = config.resolved()
    source, out = Path(config.source), Path(config.out)
    files = list_images(source, exclude=out)
    _check_output(out, config)
    run = start_run(out, "import-samples", config)
    try:
        rows: list[dict[str, Any]] = []
        skipped: dict[str, str] = {}
        imported = resumed = 0
        for n, (sid, path) in enumerate(files, 1):
            dest = image_path(out, config.split, sid)
            try:
                if dest.is_file():
                    with Image.open(path) as im:
                        size = im.size
                    resumed += 1
                else:
                    im = _read_rgb(path)
                    size = im.size
                    image = np.asarray(_fit(im, config.image_size, config.fit), dtype=np.uint8)
                    write_bytes(dest, encode_rgb_png(image, encoder=config.png_encoder))
                    imported += 1
            except (InputError, *DECODE_ERRORS) as exc:
                reason = str(exc)
                skipped[str(path.relative_to(source))] = reason
                log.warning("skipping %s: %s", path, reason)
                continue
            finally:
                if progress is not None:
                    progress(n, len(files))
            row = base_row(sid, config.split, config.name, None)
            row.update(
                {
                    "source_file": path.relative_to(source).as_posix(),
                    "source_width": size[0],
                    "source_height": size[1],
                }
            )
            rows.append(row)
        orphans = sorted(
            set(list_pngs(out / config.split / "images")).difference(r["id"] for r in rows)
        )
        if orphans:
            log.warning(
                "%d image(s) in %s no longer have a source file (e.g. %s); they have no metadata row",
                len(orphans),
                out / config.split / "images",
                orphans[0],
            )
        tables = write_tables(out, config.split, rows)
        manifest = run.finish(
            inputs=[config.source],
            outputs={
                "samples": tables["samples"],
                "imported_now": imported,
                "resumed": resumed,
                "skipped": len(skipped),
                "skipped_files": dict(list(skipped.items())[:100]),
                "orphans": len(orphans),
            },
            digest=[out / "metadata.parquet"],
        )
    except BaseException:
        run.close()
        raise
    return ImportResult(
        out=out,
        imported=imported,
        resumed=resumed,
        skipped=skipped,
        seconds=time.perf_counter() - t0,
        manifest=manifest,
    )
