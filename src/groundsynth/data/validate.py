"""Validating a dataset directory (groundsynth contract or ARAS400k layout), streaming.

:func:`validate_dataset` lists each split's image and mask folders, then visits the samples one
at a time: image headers are read (and their PNG checksums verified) without decoding pixels,
masks are decoded to check their values or colours and their composition against the tables.
Tables are read one split at a time. Every problem is counted; the first ``max_problems`` are
kept with the file they concern and a message.

>>> report = validate_dataset("DATASET")     # doctest: +SKIP
>>> report.ok, report.counts                  # doctest: +SKIP
(False, {'unpaired_image': 2})
"""

from __future__ import annotations

import logging
import os
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from groundsynth.classes import CLASS_NAMES
from groundsynth.data import contract
from groundsynth.data.composition import class_fractions, integer_percentages
from groundsynth.data.masks import read_mask
from groundsynth.data.reader import (
    DECODE_ERRORS,
    DatasetReader,
    list_pngs,
    open_dataset,
    order_splits,
    split_dirs,
)
from groundsynth.errors import InputError, MaskError

__all__ = ["PROBLEM_KINDS", "Problem", "ValidationReport", "validate_dataset"]

logger = logging.getLogger(__name__)

#: Every kind of problem reported, with what it means.
PROBLEM_KINDS: dict[str, str] = {
    "unpaired_image": "an image has no mask",
    "unpaired_mask": "a mask has no image",
    "size_mismatch": "an image and its mask differ in size",
    "unreadable": "an image or mask file is corrupt, truncated or not an image",
    "bad_image": "an image is not 8-bit RGB",
    "bad_mask": "a mask holds values or colours outside the class schema",
    "metadata_without_file": "a metadata.parquet row has neither image nor mask",
    "file_without_metadata": "a sample on disk has no metadata.parquet row",
    "table_row_without_file": "a table row names a sample with no image or mask",
    "file_without_table_row": "a sample on disk has no row in its split's table",
    "duplicate_row": "a sample has more than one row in a table or in metadata.parquet",
    "percent_sum": "a table row's class percentages do not sum to 100",
    "percent_mismatch": "a table or metadata row disagrees with the mask's composition",
    "bad_table": "a table or metadata.parquet cannot be read or lacks required columns",
}

#: ``progress(done, total)``, called after each sample.
Progress = Callable[[int, int], None]


@dataclass(frozen=True)
class Problem:
    """One problem: its kind (a key of :data:`PROBLEM_KINDS`), the file concerned, a message."""

    kind: str
    path: Path
    message: str

    def __str__(self) -> str:
        return f"{self.kind}: {self.path}: {self.message}"


@dataclass
class ValidationReport:
    """What :func:`validate_dataset` found: samples per split and problems (all counted)."""

    root: Path
    layout: str
    n_samples: dict[str, int] = field(default_factory=dict)
    problems: list[Problem] = field(default_factory=list)
    counts: Counter[str] = field(default_factory=Counter)
    max_problems: int = 1000

    def add(self, kind: str, path: Path, message: str) -> None:
        """Count a problem; keep it if fewer than ``max_problems`` are kept."""
        if kind not in PROBLEM_KINDS:
            raise ValueError(f"unknown problem kind {kind!r}; valid: {', '.join(PROBLEM_KINDS)}")
        self.counts[kind] += 1
        if len(self.problems) < self.max_problems:
            self.problems.append(Problem(kind, Path(path), message))

    @property
    def ok(self) -> bool:
        """True when no problem was found."""
        return not self.n_problems

    @property
    def n_problems(self) -> int:
        return sum(self.counts.values())

    @property
    def truncated(self) -> bool:
        """True when more problems were counted than kept."""
        return self.n_problems > len(self.problems)

    def summary(self, limit: int = 20) -> str:
        """A human-readable summary: samples, counts by kind, the first ``limit`` problems."""
        samples = ", ".join(f"{s} {n}" for s, n in self.n_samples.items()) or "none"
        lines = [f"{self.root} ({self.layout}): samples {samples}"]
        if self.ok:
            lines.append("no problems found")
            return "\n".join(lines)
        lines.append(f"{self.n_problems} problem(s):")
        lines += [f"  {k}: {n} ({PROBLEM_KINDS[k]})" for k, n in sorted(self.counts.items())]
        shown = self.problems[:limit]
        lines += [f"  {p}" for p in shown]
        if self.n_problems > len(shown):
            lines.append(f"  ... and {self.n_problems - len(shown)} more")
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable form of the report."""
        return {
            "root": str(self.root),
            "layout": self.layout,
            "ok": self.ok,
            "n_samples": dict(self.n_samples),
            "counts": dict(self.counts),
            "truncated": self.truncated,
            "problems": [
                {"kind": p.kind, "path": str(p.path), "message": p.message} for p in self.problems
            ],
        }


@dataclass
class _Table:
    """One table's rows for one split: ids, and class values (percent) when it has them."""

    path: Path
    index: dict[str, int]
    values: np.ndarray | None  # (n_rows, NUM_CLASSES) float64, percent
    exact: bool = False  # compare with exact percentages (metadata), not integer ones

    def row(self, sample_id: str) -> np.ndarray | None:
        i = self.index.get(sample_id)
        return None if i is None or self.values is None else self.values[i]


def _message(exc: BaseException, path: Path) -> str:
    """The exception's message without a leading ``<path>: `` (the problem names the path)."""
    text = str(exc)
    prefix = f"{path}: "
    return text[len(prefix) :] if text.startswith(prefix) else text


def _index(ids: Iterable[str], path: Path, report: ValidationReport) -> dict[str, int]:
    """id -> row number; duplicated ids are reported (the first row is kept)."""
    index: dict[str, int] = {}
    for n, sample_id in enumerate(ids):
        if sample_id in index:
            report.add("duplicate_row", path, f"{sample_id!r} has more than one row")
        else:
            index[sample_id] = n
    return index


def _format_diff(row: np.ndarray, actual: np.ndarray, tolerance: float) -> str:
    parts = [
        f"{name} {r:g} vs {a:g}"
        for name, r, a in zip(CLASS_NAMES, row, actual, strict=True)
        if abs(r - a) > tolerance
    ]
    return ", ".join(parts)


def _load_tables(
    reader: DatasetReader,
    split: str,
    on_disk: set[str],
    report: ValidationReport,
    failed: set[Path],
    sum_tolerance: float,
) -> list[_Table]:
    """Read ``split``'s percentage and caption tables (each file once) and check their rows."""
    tables: list[_Table] = []
    seen: set[Path] = set()
    for locate, need_classes in ((reader.percentages_path, True), (reader.captions_path, False)):
        try:
            found = locate(split)
        except InputError as exc:
            report.add("bad_table", reader.root, str(exc))
            continue
        if found is None or found[0] in seen or found[0] in failed:
            continue
        path, filter_split = found
        seen.add(path)
        try:
            header = reader.table_columns(path)
            has_classes = need_classes or set(CLASS_NAMES) <= set(header)
            columns = ["filename", "split", *(CLASS_NAMES if has_classes else ())]
            df = reader.read_table(path, filter_split, split, columns=columns)
            values = df[list(CLASS_NAMES)].to_numpy(dtype=np.float64) if has_classes else None
        except (InputError, ValueError, TypeError) as exc:
            failed.add(path)
            report.add("bad_table", path, _message(exc, path))
            continue
        ids = df["id"].tolist()
        table = _Table(path, _index(ids, path, report), values)
        if values is not None:
            sums = values.sum(axis=1)
            for n in np.flatnonzero(~(np.abs(sums - 100.0) <= sum_tolerance)):
                report.add("percent_sum", path, f"{ids[n]!r}: class percentages sum to {sums[n]:g}")
        for sample_id in table.index:
            if sample_id not in on_disk:
                report.add("table_row_without_file", path, f"{sample_id!r} has no image or mask")
        for sample_id in sorted(on_disk.difference(table.index)):
            report.add("file_without_table_row", path, f"{split}/{sample_id!r} has no row")
        tables.append(table)
    return tables


def _load_metadata(
    reader: DatasetReader,
    split: str,
    on_disk: set[str],
    report: ValidationReport,
) -> _Table | None:
    """Read ``split``'s metadata rows (id and class fractions) and check them against files."""
    path = contract.metadata_path(reader.root)
    fracs = [f"frac_{n}" for n in CLASS_NAMES]
    has_fracs = set(fracs) <= set(reader.metadata_columns())
    df = reader.metadata(split, columns=["id", *(fracs if has_fracs else ())])
    if df is None:
        return None
    ids = [str(i) for i in df["id"]]
    values = df[fracs].to_numpy(dtype=np.float64) * 100.0 if has_fracs else None
    table = _Table(path, _index(ids, path, report), values, exact=True)
    for sample_id in table.index:
        if sample_id not in on_disk:
            report.add("metadata_without_file", path, f"{split}/{sample_id} has no image or mask")
    for sample_id in sorted(on_disk.difference(table.index)):
        report.add("file_without_metadata", path, f"{split}/{sample_id} has no metadata row")
    return table


def _check_image(path: Path, report: ValidationReport, decode: bool) -> tuple[int, int] | None:
    """Read an image's header and verify its data; return its size, None if unreadable."""
    try:
        with Image.open(path) as im:
            size, mode = im.size, im.mode
            if decode:
                im.load()
            else:
                im.verify()  # PNG: chunk checksums, without decompressing pixels
    except DECODE_ERRORS as exc:
        report.add("unreadable", path, f"cannot read image ({exc})")
        return None
    if mode != "RGB":
        report.add("bad_image", path, f"image mode {mode!r}, expected 8-bit RGB")
    return size


def _check_mask(path: Path, report: ValidationReport) -> tuple[np.ndarray | None, Any]:
    """Decode a mask; return (class indices or None, size or None), reporting problems."""
    try:
        with Image.open(path) as im:
            size = im.size
    except DECODE_ERRORS as exc:
        report.add("unreadable", path, f"cannot read mask ({exc})")
        return None, None
    try:
        return read_mask(path), size
    except MaskError as exc:
        kind = "unreadable" if isinstance(exc.__cause__, DECODE_ERRORS) else "bad_mask"
        report.add(kind, path, _message(exc, path))
    except DECODE_ERRORS as exc:
        report.add("unreadable", path, f"cannot read mask ({exc})")
    return None, size


def _check_sample(
    reader: DatasetReader,
    split: str,
    sample_id: str,
    has_image: bool,
    has_mask: bool,
    report: ValidationReport,
    decode_images: bool,
) -> np.ndarray | None:
    """Check one sample's files and pairing; return its mask when readable."""
    image_path = reader.image_path(split, sample_id)
    mask_path = reader.mask_path(split, sample_id)
    image_size = _check_image(image_path, report, decode_images) if has_image else None
    mask, mask_size = _check_mask(mask_path, report) if has_mask else (None, None)
    if not has_mask:
        report.add("unpaired_image", image_path, f"no mask at {mask_path}")
    if not has_image:
        report.add("unpaired_mask", mask_path, f"no image at {image_path}")
    if image_size and mask_size and image_size != mask_size:
        report.add(
            "size_mismatch",
            mask_path,
            f"mask is {mask_size[0]}x{mask_size[1]}, image {image_path.name} is "
            f"{image_size[0]}x{image_size[1]} (width x height)",
        )
    return mask


def _check_composition(
    mask: np.ndarray,
    mask_path: Path,
    split: str,
    sample_id: str,
    tables: list[_Table],
    tolerance: float,
    report: ValidationReport,
) -> None:
    """Compare the mask's composition with each table's row for the sample."""
    fractions = class_fractions(mask)
    integer = integer_percentages(fractions)
    for table in tables:
        row = table.row(sample_id)
        if row is None:
            continue
        actual = fractions * 100.0 if table.exact else integer
        if (np.abs(row - actual) > tolerance).any():
            report.add(
                "percent_mismatch",
                table.path,
                f"{split}/{sample_id}: row vs mask {mask_path.name}, in percent: "
                f"{_format_diff(row, actual, tolerance)}",
            )


def validate_dataset(
    root: str | os.PathLike[str],
    *,
    tolerance: float = 1.0,
    sum_tolerance: float = 0.0,
    progress: Progress | None = None,
    max_problems: int = 1000,
    decode_images: bool = False,
) -> ValidationReport:
    """Check a dataset directory and return a :class:`ValidationReport`.

    Args:
        root: the dataset directory (groundsynth contract or ARAS400k layout).
        tolerance: largest allowed difference, in percentage points in any class, between a
            table's (or metadata's) composition and the mask's.
        sum_tolerance: largest allowed difference between a row's percentage sum and 100.
        progress: optional ``progress(done, total)`` called after each sample.
        max_problems: problems kept in the report (all are counted).
        decode_images: decode every image's pixels (slower) instead of checking its header
            and PNG checksums only.

    Raises:
        InputError: ``root`` is not a dataset directory.
    """
    reader = open_dataset(root)
    report = ValidationReport(reader.root, reader.layout, max_problems=max_problems)
    meta_ok = reader.layout == "groundsynth"
    try:
        splits = reader.splits()
    except InputError as exc:
        meta_path = contract.metadata_path(reader.root)
        report.add("bad_table", meta_path, _message(exc, meta_path))
        splits, meta_ok = order_splits(split_dirs(reader.root)), False
    listing = {
        s: (
            set(list_pngs(reader.root / s / "images")),
            set(list_pngs(reader.root / s / "masks")),
        )
        for s in splits
    }
    total = sum(len(images | masks) for images, masks in listing.values())
    done = 0
    failed_tables: set[Path] = set()
    for split in splits:
        images, masks = listing[split]
        on_disk = images | masks
        report.n_samples[split] = len(on_disk)
        tables = _load_tables(reader, split, on_disk, report, failed_tables, sum_tolerance)
        if meta_ok:
            try:
                meta = _load_metadata(reader, split, on_disk, report)
            except InputError as exc:
                meta_path = contract.metadata_path(reader.root)
                report.add("bad_table", meta_path, _message(exc, meta_path))
                meta, meta_ok = None, False
            if meta is not None:
                tables.append(meta)
        with_values = [t for t in tables if t.values is not None]
        for sample_id in sorted(on_disk):
            mask = _check_sample(
                reader,
                split,
                sample_id,
                sample_id in images,
                sample_id in masks,
                report,
                decode_images,
            )
            if mask is not None and with_values:
                _check_composition(
                    mask,
                    reader.mask_path(split, sample_id),
                    split,
                    sample_id,
                    with_values,
                    tolerance,
                    report,
                )
            done += 1
            if progress is not None:
                progress(done, total)
    logger.info(
        "validated %s: %d sample(s), %d problem(s)",
        reader.root,
        sum(report.n_samples.values()),
        report.n_problems,
    )
    return report
