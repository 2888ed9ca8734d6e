"""Streaming row selection of the dataset tables (CSV tables and ``metadata.parquet``).

Caption tables of ARAS size hold ~2 million captions; these helpers read them in chunks and
write the kept rows as they go (atomically), so a table is never held whole.
"""

from __future__ import annotations

import os
from collections.abc import Collection
from pathlib import Path

from groundsynth.data.reader import filename_to_id
from groundsynth.errors import InputError
from groundsynth.io import atomic_path

__all__ = ["copy_metadata_rows", "copy_table_rows"]

CHUNK_ROWS = 50_000


def copy_table_rows(
    src: str | os.PathLike[str],
    dest: str | os.PathLike[str],
    *,
    split: str | None = None,
    keep_ids: Collection[str] | None = None,
    columns: list[str] | None = None,
    chunk_rows: int = CHUNK_ROWS,
) -> int:
    """Copy the rows of CSV ``src`` whose ``split`` column is ``split`` (when given) and whose
    ``filename`` names an id in ``keep_ids`` (when given) to ``dest``; return the rows written.

    Every value is copied as text (nothing is parsed: ``000123`` and "NA" survive);
    ``columns`` keeps only those columns, in that order.
    """
    import pandas as pd

    src, dest = Path(src), Path(dest)
    try:
        header = [str(c) for c in pd.read_csv(src, nrows=0).columns]
    except (OSError, ValueError) as exc:
        raise InputError(f"{src}: cannot read table ({exc})") from exc
    need = ["filename", *(["split"] if split is not None else []), *(columns or [])]
    missing = [c for c in need if c not in header]
    if missing:
        raise InputError(f"{src}: missing column(s) {missing}; found {header}")
    written = 0
    with atomic_path(dest, suffix=".csv") as tmp:
        first = True
        try:
            chunks = pd.read_csv(src, dtype=str, keep_default_na=False, chunksize=chunk_rows)
            for chunk in chunks:
                if split is not None:
                    chunk = chunk[chunk["split"] == split]
                if keep_ids is not None:
                    mask = [filename_to_id(f) in keep_ids for f in chunk["filename"]]
                    chunk = chunk[mask]
                if columns is not None:
                    chunk = chunk[columns]
                chunk.to_csv(tmp, mode="w" if first else "a", header=first, index=False)
                first = False
                written += len(chunk)
        except (OSError, ValueError) as exc:
            raise InputError(f"{src}: cannot read table ({exc})") from exc
        if first:  # empty source: write the header alone
            pd.DataFrame(columns=columns or header).to_csv(tmp, index=False)
    return written


def copy_metadata_rows(
    src: str | os.PathLike[str],
    dest: str | os.PathLike[str],
    keep: Collection[tuple[str, str]],
    *,
    batch_rows: int = CHUNK_ROWS,
) -> int:
    """Copy the rows of a ``metadata.parquet`` whose ``(split, id)`` is in ``keep`` to
    ``dest`` (same schema), batch by batch; return the rows written."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    src = Path(src)
    try:
        source = pq.ParquetFile(src)
    except (OSError, ValueError) as exc:
        raise InputError(f"{src}: cannot read metadata ({exc})") from exc
    schema = source.schema_arrow
    written = 0
    with atomic_path(dest, suffix=".parquet") as tmp:
        writer = pq.ParquetWriter(tmp, schema)
        try:
            for batch in source.iter_batches(batch_size=batch_rows):
                ids = batch.column("id").to_pylist()
                splits = batch.column("split").to_pylist()
                mask = [(str(s), str(i)) in keep for s, i in zip(splits, ids)]
                if any(mask):
                    kept = pa.Table.from_batches([batch]).filter(pa.array(mask))
                    writer.write_table(kept.cast(schema))
                    written += kept.num_rows
        finally:
            writer.close()
    return written
