"""The build's tables, assembled from its chunk records at the end, streaming.

``metadata.parquet`` (the data contract's columns) and ``class_percentages/<split>.csv`` (ARAS
layout, integer percentages summing to 100), both written atomically, in chunk order, so
the tables do not depend on which worker processed which chunk or in what order.
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path

import numpy as np

from groundsynth.classes import CLASS_NAMES
from groundsynth.data.chunks import Chunk, load_record, record_path
from groundsynth.data.composition import integer_percentages
from groundsynth.data.contract import (
    PERCENT_COLUMNS,
    SPLITS,
    metadata_path,
    metadata_schema,
    percentages_csv,
)
from groundsynth.data.splits import leakage
from groundsynth.io import atomic_open, atomic_path

__all__ = ["preload_table_libraries", "write_tables"]


def preload_table_libraries() -> threading.Thread:
    """Import pyarrow on a background thread while the chunks are processed.

    pyarrow imports pandas when it makes its first array (~0.25 s here); done in the
    background, that no longer delays writing the tables at the end of the build.
    """

    def load() -> None:
        try:
            import pyarrow as pa
            import pyarrow.parquet  # noqa: F401

            pa.array([0])
        except Exception:  # noqa: BLE001 - write_tables imports again and reports any error
            pass

    thread = threading.Thread(target=load, name="groundsynth-preload", daemon=True)
    thread.start()
    return thread


def _iter_rows(out: Path, all_chunks: list[Chunk]) -> Iterator[tuple[list[dict], dict]]:
    for c in all_chunks:
        rec = load_record(record_path(out, c))
        yield rec["rows"], rec.get("skipped", {})


def write_tables(out: Path, all_chunks: list[Chunk]) -> tuple[dict, dict, dict, dict]:
    """Write ``metadata.parquet`` and ``class_percentages/<split>.csv`` from the chunk records,
    in chunk order, streaming; return (patches per split, skip counts, class shares per
    split, leakage)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    schema = metadata_schema()
    counts: Counter[str] = Counter()
    skipped: Counter[str] = Counter()
    share = {s: np.zeros(len(CLASS_NAMES)) for s in SPLITS}
    positions: list[tuple[str, int, int, str]] = []
    buffer: list[dict] = []
    with ExitStack() as stack:
        ptmp = stack.enter_context(atomic_path(metadata_path(out), suffix=".parquet"))
        writer = stack.enter_context(pq.ParquetWriter(ptmp, schema, compression="zstd"))
        csvs = {}
        for s in SPLITS:
            fh = stack.enter_context(
                atomic_open(percentages_csv(out, s), "w", encoding="utf-8", newline="")
            )
            fh.write(",".join(PERCENT_COLUMNS) + "\n")
            csvs[s] = fh

        def flush() -> None:
            if buffer:
                writer.write_table(pa.Table.from_pylist(buffer, schema=schema))
                buffer.clear()

        for rows, sk in _iter_rows(out, all_chunks):
            skipped.update(sk)
            if not rows:
                continue
            fr = np.array([[r[f"frac_{n}"] for n in CLASS_NAMES] for r in rows])
            pct = integer_percentages(fr)
            for r, p, f in zip(rows, pct, fr):
                s = r["split"]
                counts[s] += 1
                share[s] += f
                positions.append((r["source"], r["row"], r["col"], s))
                csvs[s].write(f"{r['id']}.png,{s}," + ",".join(map(str, p.tolist())) + "\n")
            buffer.extend(rows)
            if len(buffer) >= 8192:
                flush()
        flush()
        writer.close()
    class_share = {
        s: {n: round(float(v / counts[s]), 6) for n, v in zip(CLASS_NAMES, share[s])}
        for s in SPLITS
        if counts[s]
    }
    ordered = {s: counts[s] for s in SPLITS if counts[s]}
    return ordered, dict(sorted(skipped.items())), class_share, leakage(positions)
