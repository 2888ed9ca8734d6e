"""The pieces of ``pseudo-label`` that work on chunks: listing the input, placing each
image's files, the chunk records and the tables assembled from them.

A chunk is ``chunk_size`` consecutive images of a split; its record
``OUT/.pseudo-label/<split>/<chunk>.json`` (``{"rows": [...], "skipped": [...]}``, in image
order) is written by the driver, atomically, once every file of the chunk exists -- whether
the chunk was labelled in this process or by a worker (:mod:`groundsynth.distributed`).
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from collections import Counter
from collections.abc import Iterable
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from PIL import Image

from groundsynth.classes import CLASS_NAMES
from groundsynth.data import contract
from groundsynth.data.composition import class_fractions, integer_percentages
from groundsynth.data.masks import encode_rgb_png
from groundsynth.data.reader import DECODE_ERRORS, list_pngs, open_dataset, read_rgb
from groundsynth.errors import InputError
from groundsynth.io import atomic_open, atomic_path, write_bytes, write_json

if TYPE_CHECKING:
    from groundsynth.generate.pseudo_label import PseudoLabelConfig

__all__ = [
    "IMAGE_SUFFIXES",
    "ChunkRecorder",
    "ImageFiles",
    "Item",
    "chunk_label",
    "finalise",
    "list_inputs",
    "make_row",
    "place_image",
    "record_path",
    "write_record",
]

log = logging.getLogger(__name__)

#: File suffixes read from a plain folder of images.
IMAGE_SUFFIXES: tuple[str, ...] = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp", ".webp")
_RECORDS = ".pseudo-label"
#: Metadata columns carried over from a groundsynth input dataset.
_CARRIED = (
    "source",
    "landcover",
    "row",
    "col",
    "crs",
    "transform",
    "minx",
    "miny",
    "maxx",
    "maxy",
    "lon",
    "lat",
    "scaling",
)

#: ``("row", metadata row)`` or ``("skipped", {"id", "path", "reason", "message"})``.
Entry = tuple[str, dict[str, Any]]


@dataclass(frozen=True)
class Item:
    """One input image: its split, id and file."""

    split: str
    id: str
    path: Path


# ----------------------------------------------------------------------------- inputs
def list_inputs(
    root: Path, cfg: PseudoLabelConfig
) -> tuple[str, dict[str, list[Item]], dict[str, dict]]:
    """``(kind, items per split, metadata rows per split)`` of the input."""
    if not root.is_dir():
        raise InputError(f"{root}: input dataset or image folder does not exist")
    try:
        reader = open_dataset(root)
    except InputError:
        reader = None
    if reader is None:
        files: dict[str, Path] = {}
        for p in sorted(root.iterdir()):
            if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES:
                if p.stem in files:
                    raise InputError(
                        f"{root}: two images share the id {p.stem!r} ({files[p.stem].name}, {p.name})"
                    )
                files[p.stem] = p
        if not files:
            raise InputError(
                f"{root}: neither a dataset nor a folder of images ({', '.join(IMAGE_SUFFIXES)})"
            )
        split = cfg.folder_split
        return "folder", {split: [Item(split, i, p) for i, p in files.items()]}, {}
    available = [s for s in reader.splits() if list_pngs(root / s / "images")]
    splits = list(cfg.splits) if cfg.splits else available
    unknown = [s for s in splits if s not in available]
    if unknown:
        raise InputError(
            f"{root}: no images in split(s) {unknown}; splits with images: {available}"
        )
    items = {
        s: [Item(s, i, reader.image_path(s, i)) for i in list_pngs(root / s / "images")]
        for s in splits
    }
    meta: dict[str, dict] = {}
    if reader.layout == "groundsynth":
        # pragma: no mutate start (every column, or every split, gives the same rows: only
        # these columns are used, and an id has one row in metadata.parquet over all splits
        # (the data contract); a groundsynth layout always has metadata; to_dict takes its
        # orient in any case)
        cols = [c for c in ("id", *_CARRIED, "origin") if c in reader.metadata_columns()]
        for s in splits:
            df = reader.metadata(s, columns=cols)
            meta[s] = {str(r["id"]): r for r in df.to_dict("records")}
        # pragma: no mutate end
    return reader.layout, items, meta


class ImageFiles:
    """Map-style dataset of image files: ``(index, image or None, reusable, error)``."""

    def __init__(self, items: list[Item]) -> None:
        self.items = items

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> tuple[int, np.ndarray | None, bool, str]:
        path = self.items[index].path
        try:
            with Image.open(path) as im:
                reusable = im.format == "PNG" and im.mode == "RGB"
            return index, read_rgb(path), reusable, ""  # pragma: no mutate (no error: unread)
        # for an unreadable image only the message is used (reusable is never read)
        except InputError as exc:
            return index, None, False, str(exc)  # pragma: no mutate (message only)
        except DECODE_ERRORS as exc:
            return index, None, False, f"{path}: cannot read image ({exc})"  # pragma: no mutate


def chunk_label(split: str, index: int, items: list[Item] | tuple[Item, ...]) -> str:
    """How errors name a chunk: ``chunk val/000001 (4 images, a.png .. d.png)``.

    Words only, used on the Ray path (tests/test_distributed.py checks it, outside ``make
    mutate``)."""
    span = f"{items[0].path.name} .. {items[-1].path.name}" if items else "empty"
    return f"chunk {split}/{index:06d} ({len(items)} images, {span})"


# ----------------------------------------------------------------------------- outputs
def place_image(src: Path, dst: Path, image: np.ndarray, reusable: bool, mode: str) -> None:
    """Put the input image at ``dst``: hard link or copy of an RGB PNG, else re-encode."""
    if not reusable:
        # the encoder changes the PNG's bytes, never its pixels
        write_bytes(dst, encode_rgb_png(image, encoder="auto"))  # pragma: no mutate
        return
    if mode == "link" and dst.exists() and os.path.samefile(src, dst):
        # linked by a run stopped before recording the chunk; linking again would leave the
        # temporary behind (renaming a link onto another of the same file does nothing)
        return
    with atomic_path(dst) as tmp:
        if mode == "link":
            try:
                tmp.unlink()
                os.link(src, tmp)
                return
            except OSError:
                pass  # another file system, or links unsupported: copy instead
        shutil.copyfile(src, tmp)


def record_path(out: Path, split: str, chunk: int) -> Path:
    """Where the record of ``split``'s chunk ``chunk`` lives."""
    return out / _RECORDS / split / f"{chunk:06d}.json"


def write_record(out: Path, split: str, chunk: int, record: dict[str, Any]) -> None:
    """Record a chunk whose files all exist (atomically: the resume marker)."""
    write_json(record_path(out, split, chunk), record)


def metadata_schema():
    """The output's metadata.parquet schema: the contract's plus confidence, image_origin."""
    import pyarrow as pa

    return contract.metadata_schema({"confidence": pa.float64(), "image_origin": pa.string()})


def make_row(
    item: Item,
    mask: np.ndarray,
    confidence: float,
    origin: str,
    source: str,
    meta: dict | None,
) -> dict[str, Any]:
    """The metadata row of one labelled image."""
    meta = meta or {}
    row: dict[str, Any] = {c: None for c in contract.METADATA_COLUMNS}
    row.update({c: _plain(meta.get(c)) for c in _CARRIED})
    row.update(
        id=item.id,
        split=item.split,
        source=row["source"] or source,
        origin=origin,
        confidence=float(confidence),
        image_origin=_plain(meta.get("origin")),
    )
    row.update({f"frac_{n}": float(f) for n, f in zip(CLASS_NAMES, class_fractions(mask))})
    return row


def _plain(value: Any) -> Any:
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, float) and np.isnan(value):
        return None
    return value


def log_skipped(skipped: Iterable[dict[str, Any]]) -> None:
    """Warn about each unreadable image of a chunk (in the driver's run log)."""
    for s in skipped:
        log.warning("skipping unreadable image: %s", s["message"])


def finalise(out: Path, chunks: dict[str, int]) -> tuple[dict[str, int], Counter, dict]:
    """Assemble metadata.parquet and class_percentages/<split>.csv from chunk records."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    schema = metadata_schema()
    counts: dict[str, int] = {}
    skipped: Counter[str] = Counter()
    conf: dict[str, dict[str, float]] = {}
    with ExitStack() as stack:
        # pragma: no mutate start (the temporary's suffix and the codec change no value read back)
        tmp = stack.enter_context(atomic_path(contract.metadata_path(out), suffix=".parquet"))
        writer = stack.enter_context(pq.ParquetWriter(tmp, schema, compression="zstd"))
        # pragma: no mutate end
        for split, n_chunks in chunks.items():
            # pragma: no mutate start (ASCII lines ending in "\n", written by hand: the mode
            # is atomic_open's default and no encoding or newline setting changes a byte)
            fh = stack.enter_context(
                atomic_open(contract.percentages_csv(out, split), "w", encoding="utf-8", newline="")
            )
            # pragma: no mutate end
            fh.write(",".join(contract.PERCENT_COLUMNS) + "\n")
            counts[split] = 0
            c_sum, c_min, c_max = 0.0, float("inf"), float("-inf")  # pragma: no mutate (any case)
            for k in range(n_chunks):
                rec = json.loads(record_path(out, split, k).read_text())
                skipped.update(s["reason"] for s in rec["skipped"])
                rows = rec["rows"]
                if not rows:
                    continue
                writer.write_table(pa.Table.from_pylist(rows, schema=schema))
                pct = integer_percentages(
                    np.array([[r[f"frac_{n}"] for n in CLASS_NAMES] for r in rows])
                )
                for r, p in zip(rows, pct):
                    fh.write(f"{r['id']}.png,{split}," + ",".join(map(str, p.tolist())) + "\n")
                    c_sum += r["confidence"]
                    c_min, c_max = min(c_min, r["confidence"]), max(c_max, r["confidence"])
                counts[split] += len(rows)
            if counts[split]:
                conf[split] = {"mean": c_sum / counts[split], "min": c_min, "max": c_max}
        writer.close()
    return counts, skipped, conf


class ChunkRecorder:
    """Collects the entries of the chunks being labelled here, in order; records each
    complete chunk (after all its files were written) -- the resume marker."""

    def __init__(self, out: Path, todo: list[tuple[str, int, list[Item]]]) -> None:
        self.out = out
        self.pending = iter(todo)
        self.rows: list[dict[str, Any]] = []
        self.skipped: list[dict[str, Any]] = []
        self._next()

    def _next(self) -> None:
        # the sentinel's split and index are never read: left = 0 records nothing
        self.split, self.index, chunk = next(self.pending, ("", -1, []))  # pragma: no mutate
        self.left = len(chunk)

    def take(self, entry: Entry) -> None:
        """Add one image's entry; record the chunk when it was its last image."""
        kind, payload = entry
        if kind == "row":
            self.rows.append(payload)
        else:
            log_skipped([payload])
            self.skipped.append(payload)
        self.left -= 1
        if self.left == 0:
            write_record(
                self.out, self.split, self.index, {"rows": self.rows, "skipped": self.skipped}
            )
            self.rows, self.skipped = [], []
            self._next()
