"""Writing the grounding filter's outputs: the passing-id list and, in ``link``/``copy`` mode,
a dataset of the passing samples (files linked or copied atomically, tables filtered while
streamed)."""

from __future__ import annotations

import errno
import logging
import os
import shutil
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from groundsynth.data import contract
from groundsynth.data.reader import DatasetReader
from groundsynth.errors import InputError
from groundsynth.evaluate.tables import copy_metadata_rows, copy_table_rows
from groundsynth.io import atomic_path

if TYPE_CHECKING:
    from groundsynth.evaluate.filter_rules import FilterConfig

__all__ = ["materialise", "write_passed", "write_subset"]

logger = logging.getLogger(__name__)

#: ``progress(stage, done, total)``.
Progress = Callable[[str, int, int], None]


def write_passed(path: Path, passing: dict[str, list[str]]) -> None:
    """Write the passing samples as a ``split,id`` CSV (atomically)."""
    with atomic_path(path, suffix=".csv") as tmp, open(tmp, "w", encoding="utf-8") as fh:
        fh.write("split,id\n")
        for s, ids in passing.items():
            for i in ids:
                fh.write(f"{s},{i}\n")


def materialise(
    cfg: FilterConfig,
    reader: DatasetReader,
    passing: dict[str, list[str]],
    progress: Progress | None,
) -> dict[str, Any]:
    """Write the passing samples' files and tables into ``cfg.out`` (a dataset)."""
    return write_subset(reader, Path(cfg.out), passing, cfg.mode, progress)


def write_subset(
    reader: DatasetReader,
    out: Path,
    passing: dict[str, list[str]],
    mode: str = "link",
    progress: Progress | None = None,
) -> dict[str, Any]:
    """Write the samples ``passing`` (split -> ids) of ``reader``'s dataset as a dataset in
    ``out``: files hard-linked (``link``; copied where the file system cannot link) or
    copied (``copy``), tables (metadata, class percentages, captions) cut to those rows.
    Idempotent: files already there are kept. Returns what was placed."""
    out = Path(out)
    counts: Counter[str] = Counter()
    total = sum(len(v) for v in passing.values())
    done = 0
    for split, ids in passing.items():
        for sample_id in ids:
            for src, dst in _sample_files(reader.root, out, split, sample_id):
                counts[_place(src, dst, mode)] += 1
            done += 1
            if progress is not None:
                progress(mode, done, total)
    if counts["copied_not_linked"]:
        logger.warning(
            "%d file(s) copied: the file system cannot hard-link them into %s",
            counts["copied_not_linked"],
            out,
        )
    keep_pairs = {(s, i) for s, ids in passing.items() for i in ids}
    tables: dict[str, int] = {}
    if reader.layout == "groundsynth":
        tables["metadata.parquet"] = copy_metadata_rows(
            contract.metadata_path(reader.root), contract.metadata_path(out), keep_pairs
        )
    for split, ids in passing.items():
        if not ids:
            continue
        keep = set(ids)
        for kind, locate in (
            ("class_percentages", reader.percentages_path),
            ("captions", reader.captions_path),
        ):
            found = locate(split)
            if found is None:
                continue
            src, combined = found
            columns = None
            if kind == "class_percentages" and combined:  # e.g. ARAS's captions table
                columns = list(contract.PERCENT_COLUMNS)
            dest = out / kind / f"{split}.csv"
            tables[f"{kind}/{split}.csv"] = copy_table_rows(
                src, dest, split=split if combined else None, keep_ids=keep, columns=columns
            )
    return {"files": dict(counts), "table_rows": tables}


def _sample_files(root: Path, out: Path, split: str, sample_id: str) -> list[tuple[Path, Path]]:
    pairs = [
        (contract.image_path(root, split, sample_id), contract.image_path(out, split, sample_id)),
        (contract.mask_path(root, split, sample_id), contract.mask_path(out, split, sample_id)),
    ]
    nir = contract.nir_path(root, split, sample_id)
    if nir.is_file():
        pairs.append((nir, contract.nir_path(out, split, sample_id)))
    return pairs


def _place(src: Path, dst: Path, mode: str) -> str:
    """Link or copy ``src`` to ``dst`` atomically; skip when already there. Returns what
    was done: ``linked``, ``copied``, ``copied_not_linked`` or ``already_present``."""
    if not src.is_file():
        raise InputError(f"{src}: file of a passing sample not found; validate the dataset")
    if dst.exists():
        same = os.path.samefile(src, dst) if mode == "link" else False
        if same or (mode != "link" and dst.stat().st_size == src.stat().st_size):
            return "already_present"
    dst.parent.mkdir(parents=True, exist_ok=True)
    if mode == "link":
        tmp = dst.with_name(f".{dst.name}.link")
        tmp.unlink(missing_ok=True)
        try:
            os.link(src, tmp)
            os.replace(tmp, dst)
            return "linked"
        except OSError as exc:
            if exc.errno not in (errno.EXDEV, errno.EPERM, errno.EMLINK, errno.ENOTSUP):
                raise
            tmp.unlink(missing_ok=True)
            result = "copied_not_linked"
    else:
        result = "copied"
    with atomic_path(dst, suffix=dst.suffix) as tmp_path:
        shutil.copyfile(src, tmp_path)
    return result
