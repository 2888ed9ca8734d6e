"""Writing synthetic datasets in the data contract: sample files, chunk records, tables.

A synthetic dataset is a dataset directory like any other (see
:mod:`groundsynth.data.contract`), with these conventions:

* ids are zero-padded sample indices (``0000000``, ``0000001``, ...) or, for imported
  images, names derived from the source files;
* ``origin`` (and ``source``) name the generator: ``"<kind>:<run name>@step<k>"`` for our
  generators (e.g. ``conditional:run1@step50000``), the ``--name`` for imported samples;
* **grounded samples** (conditional generation) have their conditioning map as the mask,
  ``mask_origin = "conditioning-map"``, class fractions and ``class_percentages/<split>.csv``;
* **samples without a mask yet** (diffusion, imported images) have images only: no
  ``<split>/masks`` files, ``mask_origin`` null, ``frac_*`` NaN and no class-percentage table.
  ``groundsynth validate`` reports them as unpaired images until pseudo-labelling has written
  their masks, fractions and tables; run it after ``groundsynth pseudo-label``.

Extra metadata columns (:data:`SYNTH_COLUMNS`) record each sample's seed and layout
provenance. Work is recorded in ``.chunks/chunk_<k>.json`` files, written atomically after the
chunk's samples, so an interrupted run redoes only unrecorded chunks.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import numpy as np

from groundsynth.classes import CLASS_NAMES
from groundsynth.data.composition import integer_percentages
from groundsynth.data.contract import (
    METADATA_COLUMNS,
    PERCENT_COLUMNS,
    metadata_path,
    metadata_schema,
    percentages_csv,
)
from groundsynth.io import atomic_open, atomic_path, write_json

__all__ = [
    "MASK_FROM_MAP",
    "SYNTH_COLUMNS",
    "base_row",
    "read_record",
    "record_path",
    "sample_id",
    "synthetic_schema",
    "write_record",
    "write_tables",
]

#: ``mask_origin`` of grounded samples: the mask is the map the image was generated from
MASK_FROM_MAP = "conditioning-map"

#: metadata columns of synthetic datasets beyond :data:`METADATA_COLUMNS`
SYNTH_COLUMNS: tuple[str, ...] = (
    "sample_seed",  # seed of the sample's noise (derived from the run seed and the index)
    "mask_origin",  # "conditioning-map", a pseudo-label source, or null (no mask yet)
    "layout",  # layout strategy (train-masks, augmented, target)
    "layout_source",  # source masks, ';'-joined <split>/<id>
    "layout_transform",  # transform in words (flip/rotation, crop, tiling)
    "layout_satisfied",  # composition target met (target strategy)
    "source_file",  # imported samples: the file, relative to the imported folder
    "source_width",
    "source_height",  # imported samples: the file's size before any crop/resize
)


def synthetic_schema() -> Any:
    """The pyarrow schema of a synthetic dataset's ``metadata.parquet``: the contract's
    columns, then :data:`SYNTH_COLUMNS`."""
    import pyarrow as pa

    types = {
        "sample_seed": pa.int64(),
        "layout_satisfied": pa.bool_(),
        "source_width": pa.int32(),
        "source_height": pa.int32(),
    }
    return metadata_schema({c: types.get(c, pa.string()) for c in SYNTH_COLUMNS})


def sample_id(index: int, n: int) -> str:
    """Zero-padded id of sample ``index`` of ``n`` (7 digits at least, like 0000042)."""
    return f"{index:0{max(7, len(str(max(n - 1, 0))))}d}"


def base_row(sample: str, split: str, origin: str, fractions: np.ndarray | None) -> dict[str, Any]:
    """A metadata row with every column, null where unknown."""
    row: dict[str, Any] = dict.fromkeys((*METADATA_COLUMNS, *SYNTH_COLUMNS))
    row.update({"id": sample, "split": split, "source": origin, "origin": origin})
    for n, f in zip(CLASS_NAMES, fractions if fractions is not None else [None] * len(CLASS_NAMES)):
        row[f"frac_{n}"] = None if f is None else float(f)
    return row


def record_path(out: Path, chunk: int) -> Path:
    """Where chunk ``chunk``'s record lives."""
    return Path(out) / ".chunks" / f"chunk_{chunk:06d}.json"


def read_record(out: Path, chunk: int) -> dict[str, Any] | None:
    """Chunk ``chunk``'s record, or ``None`` when absent or unreadable (it is then redone)."""
    path = record_path(out, chunk)
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def write_record(out: Path, chunk: int, start: int, stop: int, rows: list[dict[str, Any]]) -> None:
    """Atomically record that samples ``start..stop-1`` are written, with their rows."""
    write_json(record_path(out, chunk), {"start": start, "stop": stop, "rows": rows})


def write_tables(out: Path, split: str, rows: Iterable[dict[str, Any]]) -> dict[str, Any]:
    """Write ``metadata.parquet`` (streaming) and, when the samples have masks,
    ``class_percentages/<split>.csv``; return counts and the mean class share."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    schema = synthetic_schema()
    fracs = [f"frac_{n}" for n in CLASS_NAMES]
    count, with_mask = 0, 0
    share = np.zeros(len(CLASS_NAMES))
    buffer: list[dict[str, Any]] = []
    pct_path = percentages_csv(out, split)
    with ExitStack() as stack:
        tmp = stack.enter_context(atomic_path(metadata_path(out), suffix=".parquet"))
        writer = stack.enter_context(pq.ParquetWriter(tmp, schema, compression="zstd"))
        csv = None

        def flush() -> None:
            if buffer:
                writer.write_table(pa.Table.from_pylist(buffer, schema=schema))
                buffer.clear()

        for row in rows:
            count += 1
            f = [row.get(c) for c in fracs]
            if all(v is not None and not math.isnan(v) for v in f):
                if csv is None:
                    csv = stack.enter_context(
                        atomic_open(pct_path, "w", encoding="utf-8", newline="")
                    )
                    csv.write(",".join(PERCENT_COLUMNS) + "\n")
                with_mask += 1
                arr = np.asarray(f, dtype=np.float64)
                share += arr
                pct = integer_percentages(arr)
                csv.write(f"{row['id']}.png,{split}," + ",".join(map(str, pct.tolist())) + "\n")
            buffer.append(row)
            if len(buffer) >= 8192:
                flush()
        flush()
        writer.close()
    return {
        "samples": count,
        "with_mask": with_mask,
        "class_share": {n: round(float(v / with_mask), 6) for n, v in zip(CLASS_NAMES, share)}
        if with_mask
        else {},
    }
