"""``groundsynth pseudo-label``: label images with a trained segmenter, as a new dataset.

This is how *ungrounded* synthetic data gets its maps (what ARAS400k did for its 300,000 GAN
images): a segmenter trained on real data (a checkpoint of
:func:`~groundsynth.benchmark.model.save_segmenter`, e.g. a benchmark run's ``segmenter.pt``)
predicts each image's classes. Input: a dataset directory (either layout; every split with
images, or ``splits``) or a plain folder of images (PNG/JPEG/TIFF, one split named
``folder_split``, ``synth`` by default). Output: a dataset in the data contract::

    OUT/<split>/images/<id>.png     the input image (hard link when possible, else a copy;
                                    re-encoded as RGB PNG when the input is not one)
    OUT/<split>/masks/<id>.png      palette mask of the predicted classes
    OUT/metadata.parquet            contract columns (origin = "pseudo-label:<model name>",
                                    class fractions of the prediction) + ``confidence`` (mean
                                    over pixels of the max softmax probability, 0..1) and
                                    ``image_origin`` (the input's origin, when it had one)
    OUT/class_percentages/<split>.csv
    OUT/config.yaml  manifest.json  pseudo-label.log

Streaming and resumable: images are read by DataLoader workers and predicted batch by batch;
every file is written atomically and each chunk of ``chunk_size`` images is recorded (under
``OUT/.pseudo-label/``) once all its files exist, so a rerun redoes only unrecorded chunks. The
tables are assembled from the records at the end. Unreadable images are skipped, counted and
named in the manifest.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
from PIL import Image

from groundsynth._optional import lazy_import
from groundsynth.classes import CLASS_NAMES, NUM_CLASSES
from groundsynth.data import contract
from groundsynth.data.composition import class_fractions, integer_percentages
from groundsynth.data.masks import encode_mask_png, encode_rgb_png
from groundsynth.data.reader import DECODE_ERRORS, list_pngs, open_dataset, read_rgb
from groundsynth.errors import InputError, OutputConflictError
from groundsynth.io import atomic_open, atomic_path, write_bytes, write_json
from groundsynth.runs import check_run_dir, file_digest, start_run, to_plain

if TYPE_CHECKING:
    from groundsynth.benchmark.model import Segmenter

__all__ = ["IMAGE_SUFFIXES", "PseudoLabelConfig", "PseudoLabelResult", "pseudo_label"]

log = logging.getLogger(__name__)

#: File suffixes read from a plain folder of images.
IMAGE_SUFFIXES: tuple[str, ...] = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp", ".webp")
#: Config fields that do not change the output (may differ when resuming).
_NOT_IDENTITY = ("out", "batch_size", "workers", "device", "images")
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

#: ``progress(images done, images total)``, called after each batch.
Progress = Callable[[int, int], None]


@dataclass(frozen=True)
class PseudoLabelConfig:
    """Options of :func:`pseudo_label` (saved as ``config.yaml``).

    Attributes:
        dataset: input dataset directory or folder of images.
        model: segmenter checkpoint (``.pt`` of ``save_segmenter``).
        out: output dataset directory (default: ``<dataset>.pseudo-<model name>`` beside it).
        splits: splits of a dataset input to label (default: every split with images).
        folder_split: split name given to a plain folder's images.
        batch_size: images per forward pass.
        workers: DataLoader processes reading images (0: in the main process).
        device: ``auto`` (CUDA, else MPS, else CPU), ``cpu``, ``cuda``, ``cuda:N``.
        chunk_size: images per resumable chunk.
        images: ``link`` (hard link, copy when impossible) or ``copy``.
    """

    dataset: str
    model: str
    out: str | None = None
    splits: tuple[str, ...] | None = None
    folder_split: str = "synth"
    batch_size: int = 16
    workers: int = 0
    device: str = "auto"
    chunk_size: int = 256
    images: Literal["link", "copy"] = "link"

    def __post_init__(self) -> None:
        if self.batch_size < 1 or self.chunk_size < 1 or self.workers < 0:
            raise InputError(
                f"batch size and chunk size must be >= 1 and workers >= 0, got "
                f"{self.batch_size}, {self.chunk_size}, {self.workers}"
            )
        if self.images not in ("link", "copy"):
            raise InputError(f"images must be 'link' or 'copy', got {self.images!r}")
        if not self.folder_split or "/" in self.folder_split:
            raise InputError(f"bad split name {self.folder_split!r}")


@dataclass
class PseudoLabelResult:
    """What :func:`pseudo_label` wrote."""

    out: Path
    counts: dict[str, int]
    skipped: dict[str, int]
    confidence: dict[str, dict[str, float]]
    chunks_total: int
    chunks_resumed: int
    seconds: float = 0.0
    manifest: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class _Item:
    split: str
    id: str
    path: Path


# ----------------------------------------------------------------------------- inputs
def _list_inputs(
    root: Path, cfg: PseudoLabelConfig
) -> tuple[str, dict[str, list[_Item]], dict[str, dict]]:
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
        return "folder", {split: [_Item(split, i, p) for i, p in files.items()]}, {}
    available = [s for s in reader.splits() if list_pngs(root / s / "images")]
    splits = list(cfg.splits) if cfg.splits else available
    unknown = [s for s in splits if s not in available]
    if unknown:
        raise InputError(
            f"{root}: no images in split(s) {unknown}; splits with images: {available}"
        )
    items = {
        s: [_Item(s, i, reader.image_path(s, i)) for i in list_pngs(root / s / "images")]
        for s in splits
    }
    meta: dict[str, dict] = {}
    if reader.layout == "groundsynth":
        cols = [c for c in ("id", *_CARRIED, "origin") if c in reader.metadata_columns()]
        for s in splits:
            df = reader.metadata(s, columns=cols)
            meta[s] = {} if df is None else {str(r["id"]): r for r in df.to_dict("records")}
    return reader.layout, items, meta


class _ImageFiles:
    """Map-style dataset of image files: ``(index, image or None, reusable, error)``."""

    def __init__(self, items: list[_Item]) -> None:
        self.items = items

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> tuple[int, np.ndarray | None, bool, str]:
        path = self.items[index].path
        try:
            with Image.open(path) as im:
                reusable = im.format == "PNG" and im.mode == "RGB"
            return index, read_rgb(path), reusable, ""
        except InputError as exc:
            return index, None, False, str(exc)
        except DECODE_ERRORS as exc:
            return index, None, False, f"{path}: cannot read image ({exc})"


def _as_list(batch: list) -> list:
    return batch


# ----------------------------------------------------------------------------- outputs
def _place_image(src: Path, dst: Path, image: np.ndarray, reusable: bool, mode: str) -> None:
    """Put the input image at ``dst``: hard link or copy of an RGB PNG, else re-encode."""
    if not reusable:
        write_bytes(dst, encode_rgb_png(image, encoder="auto"))
        return
    with atomic_path(dst, suffix=".png") as tmp:
        if mode == "link":
            try:
                tmp.unlink()
                os.link(src, tmp)
                return
            except OSError:
                pass  # another file system, or links unsupported: copy instead
        shutil.copyfile(src, tmp)


def _record_path(out: Path, split: str, chunk: int) -> Path:
    return out / _RECORDS / split / f"{chunk:06d}.json"


def _metadata_schema():
    import pyarrow as pa

    return contract.metadata_schema({"confidence": pa.float64(), "image_origin": pa.string()})


def _row(
    item: _Item,
    mask: np.ndarray,
    confidence: float,
    origin: str,
    source: str,
    meta: dict | None,
) -> dict[str, Any]:
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


def _finalise(out: Path, chunks: dict[str, int]) -> tuple[dict[str, int], Counter, dict]:
    """Assemble metadata.parquet and class_percentages/<split>.csv from chunk records."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    schema = _metadata_schema()
    counts: dict[str, int] = {}
    skipped: Counter[str] = Counter()
    conf: dict[str, dict[str, float]] = {}
    with ExitStack() as stack:
        # pragma: no mutate start (the temporary's suffix and the codec change no value read back)
        tmp = stack.enter_context(atomic_path(contract.metadata_path(out), suffix=".parquet"))
        writer = stack.enter_context(pq.ParquetWriter(tmp, schema, compression="zstd"))
        # pragma: no mutate end
        for split, n_chunks in chunks.items():
            fh = stack.enter_context(
                atomic_open(contract.percentages_csv(out, split), "w", encoding="utf-8", newline="")
            )
            fh.write(",".join(contract.PERCENT_COLUMNS) + "\n")
            counts[split] = 0
            c_sum, c_min, c_max = 0.0, float("inf"), float("-inf")
            for k in range(n_chunks):
                rec = json.loads(_record_path(out, split, k).read_text())
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


class _ChunkRecorder:
    """Collects the rows of the chunks being labelled, in order; records each complete chunk
    (atomically, after all its files were written) -- the resume marker."""

    def __init__(self, out: Path, todo: list[tuple[str, int, list[_Item]]]) -> None:
        self.out = out
        self.pending = iter(todo)
        self.rows: list[dict[str, Any]] = []
        self.skipped: list[dict[str, str]] = []
        self._next()

    def _next(self) -> None:
        self.split, self.index, chunk = next(self.pending, ("", -1, []))
        self.left = len(chunk)

    def _done_one(self) -> None:
        self.left -= 1
        if self.left == 0:
            record = {"rows": self.rows, "skipped": self.skipped}
            write_json(_record_path(self.out, self.split, self.index), record)
            self.rows, self.skipped = [], []
            self._next()

    def add(self, row: dict[str, Any]) -> None:
        self.rows.append(row)
        self._done_one()

    def skip(self, item: _Item, reason: str, message: str) -> None:
        self.skipped.append(
            {"id": item.id, "path": str(item.path), "reason": reason, "message": message}
        )
        self._done_one()


# ----------------------------------------------------------------------------- entry point
def _chunks(items: list[_Item], size: int) -> list[list[_Item]]:
    return [items[i : i + size] for i in range(0, len(items), size)]


def _batches(
    loader: Any, items: list[_Item]
) -> Iterator[list[tuple[_Item, np.ndarray | None, bool, str]]]:
    for batch in loader:
        yield [(items[i], img, reusable, err) for i, img, reusable, err in batch]


def pseudo_label(
    config: PseudoLabelConfig, *, progress: Progress | None = None
) -> PseudoLabelResult:
    """Label ``config.dataset``'s images with ``config.model`` into a new dataset.

    Raises:
        InputError: unreadable checkpoint, missing input, unknown split, bad option.
        OutputConflictError: ``out`` is the input or holds other data.
    """
    torch = lazy_import("torch")
    from groundsynth.benchmark.model import load_segmenter, resolve_device

    t0 = time.time()
    root = Path(config.dataset).resolve()
    model_path = Path(config.model).resolve()
    device = resolve_device(config.device)
    model, info = load_segmenter(model_path, map_location=device)
    if model.spec.classes != NUM_CLASSES:
        raise InputError(
            f"{model_path}: predicts {model.spec.classes} classes, the schema has {NUM_CLASSES}"
        )
    model_name = str(info.get("name") or model_path.stem).replace(os.sep, "_")
    out = (
        Path(config.out).resolve()
        if config.out
        else root.parent / f"{root.name}.pseudo-{model_name}"
    )
    if out == root:
        raise OutputConflictError(f"{out}: --out must differ from the input dataset")
    cfg = replace(config, dataset=str(root), model=str(model_path), out=str(out))
    kind, items, meta = _list_inputs(root, cfg)
    plain = {k: v for k, v in to_plain(cfg).items() if k not in _NOT_IDENTITY}
    identity = {**plain, "model_sha256": file_digest(model_path)}
    resuming = check_run_dir(out, identity, what="pseudo-labelling", ignore=_NOT_IDENTITY)
    run = start_run(
        out, "pseudo-label", {**to_plain(cfg), "model_sha256": identity["model_sha256"]}
    )
    origin = f"pseudo-label:{model_name}"
    try:
        chunks = {s: _chunks(v, cfg.chunk_size) for s, v in items.items()}
        todo = [
            (s, k, c)
            for s, cs in chunks.items()
            for k, c in enumerate(cs)
            if not _record_path(out, s, k).exists()
        ]
        n_total = sum(len(v) for v in items.values())
        n_resumed = sum(len(cs) for cs in chunks.values()) - len(todo)
        if resuming:
            log.info("resuming: %d chunk(s) already done", n_resumed)
        flat = [it for _, _, c in todo for it in c]
        done = n_total - len(flat)
        if progress is not None:
            progress(done, n_total)
        loader = torch.utils.data.DataLoader(
            _ImageFiles(flat),
            batch_size=cfg.batch_size,
            num_workers=cfg.workers,
            collate_fn=_as_list,
            shuffle=False,
        )
        recorder = _ChunkRecorder(out, todo)
        model.eval()
        for batch in _batches(loader, flat):
            for (item, image, reusable, err), pred in zip(batch, _predict(model, batch, device)):
                if pred is None:
                    log.warning("skipping unreadable image: %s", err)
                    recorder.skip(item, "unreadable", err)
                    continue
                mask, confidence = pred
                write_bytes(contract.mask_path(out, item.split, item.id), encode_mask_png(mask))
                dst = contract.image_path(out, item.split, item.id)
                _place_image(item.path, dst, image, reusable, cfg.images)
                source_meta = meta.get(item.split, {}).get(item.id)
                recorder.add(_row(item, mask, confidence, origin, root.name, source_meta))
            done += len(batch)
            if progress is not None:
                progress(done, n_total)
        counts, skip_counts, confidence = _finalise(out, {s: len(cs) for s, cs in chunks.items()})
        manifest = run.finish(
            inputs=[root, model_path],
            outputs={
                "samples": counts,
                "skipped": dict(skip_counts),
                "confidence": confidence,
                "origin": origin,
                "input_kind": kind,
            },
            digest=[contract.metadata_path(out)]
            + [contract.percentages_csv(out, s) for s in counts],
            extra={
                "chunks": {"total": sum(len(cs) for cs in chunks.values()), "resumed": n_resumed}
            },
        )
    except BaseException:
        run.close()
        raise
    log.info("pseudo-labelled %d images into %s", sum(counts.values()), out)
    return PseudoLabelResult(
        out=out,
        counts=counts,
        skipped=dict(skip_counts),
        confidence=confidence,
        chunks_total=sum(len(cs) for cs in chunks.values()),
        chunks_resumed=n_resumed,
        seconds=round(time.time() - t0, 3),
        manifest=manifest,
    )


def _predict(
    model: Segmenter, batch: list[tuple[_Item, np.ndarray | None, bool, str]], device: Any
) -> list[tuple[np.ndarray, float] | None]:
    """Masks (uint8) and mean max-probabilities of a batch; ``None`` for unreadable images.

    Images of equal size go through the model together.
    """
    torch = lazy_import("torch")
    results: list[tuple[np.ndarray, float] | None] = [None] * len(batch)
    by_shape: dict[tuple[int, ...], list[int]] = {}
    for i, (_, image, _, _) in enumerate(batch):
        if image is not None:
            by_shape.setdefault(image.shape, []).append(i)
    with torch.inference_mode():
        for idx in by_shape.values():
            x = torch.from_numpy(np.stack([batch[i][1] for i in idx])).to(device)
            x = x.permute(0, 3, 1, 2).float().div_(255.0)
            prob = torch.softmax(model(x).float(), dim=1)
            conf, pred = prob.max(dim=1)
            conf = conf.mean(dim=(1, 2)).cpu().numpy()
            pred = pred.to(torch.uint8).cpu().numpy()
            for j, i in enumerate(idx):
                results[i] = (pred[j], float(conf[j]))
    return results
