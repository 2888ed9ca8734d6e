"""Caption corpora: stream (caption id, image id, stream, text, split) rows from files.

Formats (:func:`detect_format` tells them apart by content, not only by name):

``table``
    Our ``captions/<split>.csv`` tables and the ARAS400k captions CSVs (wide: an id column
    ``filename`` — or ``id`` / ``image_id`` —, optional ``split``, the class-percentage
    columns ``Tree ... Water``, then one column per caption stream). CSV is read in chunks
    (``chunksize`` rows) so ARAS scale (400k rows × 5 streams) streams in bounded memory;
    Parquet tables are read by record batches. A directory stands for the tables in its
    ``captions/`` folder; a dataset directory without one is an error (its
    ``metadata.parquet`` is no captions table), any other folder stands for the tables in
    it. Columns ``X_2``, ``X_3``, ... beside a column ``X`` hold further captions of stream
    ``X`` (how ``groundsynth caption --n`` writes several captions per image) and are read
    as stream ``X``.
``karpathy``
    Karpathy-style JSON (UCM-, Sydney-, RSICD-Captions, RSITMD): ``images[].sentences[].raw``
    (``tokens`` joined when ``raw`` is missing), ``images[].split`` optional,
    ``images[].filename`` or ``imgid``. NWPU-Captions' JSON (``{class: [{filename, split,
    raw, raw_1 ... raw_4}]}``) is read as the same format. The file is parsed whole (these
    are tens of MB).
``sydney``
    The Sydney-Captions text file ``descriptions_SIDNEY.txt``: lines ``<image number>
    <caption>``; splits come from ``filenames_{train,val,test}.txt`` beside it, if present.
"""

from __future__ import annotations

import json
import logging
import math
import os
import re
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import NamedTuple

from groundsynth.classes import CLASS_NAMES
from groundsynth.data.contract import SPLITS
from groundsynth.errors import InputError

__all__ = [
    "FORMATS",
    "CaptionRecord",
    "detect_format",
    "read_captions",
    "read_karpathy",
    "read_sydney",
    "read_table",
    "table_streams",
]

logger = logging.getLogger(__name__)

FORMATS: tuple[str, ...] = ("table", "karpathy", "sydney")
_ID_COLUMNS = ("filename", "id", "image_id")
_SYDNEY_LINE = re.compile(r"^\s*(\d+)\s+(.*\S)?\s*$")


class CaptionRecord(NamedTuple):
    """One caption. ``composition``: class shares of its image (any scale) when the source
    carries them (tables do), else None."""

    caption_id: str
    image_id: str
    stream: str
    text: str
    split: str | None
    composition: tuple[float, ...] | None = None


def _is_dataset(path: Path) -> bool:
    """Whether ``path`` is a dataset directory (data contract layout), not a folder of tables."""
    if (path / "metadata.parquet").is_file() or (path / "class_percentages").is_dir():
        return True
    return any((path / s / sub).is_dir() for s in SPLITS for sub in ("images", "masks"))


def _table_files(path: Path) -> list[Path]:
    """The caption tables ``path`` stands for: itself (a file), the tables in its
    ``captions/`` folder, or — for a plain folder that is not a dataset — its tables.

    A dataset directory is never read as a folder of tables: its ``metadata.parquet`` is
    no captions table."""
    if path.is_file():
        return [path]
    folder = path / "captions" if (path / "captions").is_dir() else path
    dataset = folder != path or _is_dataset(path)
    files = [] if folder == path and dataset else list(folder.iterdir())
    files = [p for p in files if p.suffix.lower() in (".csv", ".parquet")]
    order = {s: i for i, s in enumerate(SPLITS)}
    files.sort(key=lambda p: (order.get(p.stem, len(order)), p.name))
    if not files and dataset:
        raise InputError(
            f"{path}: no captions tables (captions/<split>.csv); "
            f"run `groundsynth caption {path}` first"
        )
    if not files:
        raise InputError(f"{path}: no caption tables (*.csv, *.parquet) found in {folder}")
    return files


def detect_format(path: str | os.PathLike[str]) -> str:
    """The corpus format of ``path``: one of :data:`FORMATS` (InputError if none fits)."""
    p = Path(path)
    if not p.exists():
        raise InputError(f"caption source not found: {p}")
    if p.is_dir():
        _table_files(p)
        return "table"
    suffix = p.suffix.lower()
    if suffix == ".parquet":
        return "table"
    with open(p, "rb") as fh:
        head = fh.read(4096).decode("utf-8", errors="replace").lstrip("\ufeff")
    if suffix == ".json" or (head.lstrip().startswith("{") and '"images"' in head):
        return "karpathy"
    first = next((ln for ln in head.splitlines() if ln.strip()), "")
    cols = [c.strip().strip('"') for c in first.split(",")]
    if any(c in _ID_COLUMNS for c in cols) and len(cols) >= 2:
        return "table"
    if _SYDNEY_LINE.match(first):
        return "sydney"
    raise InputError(
        f"{p}: unknown caption format; expected a captions table (CSV with a 'filename' "
        f"column), Karpathy-style JSON ('images' list) or Sydney-Captions text "
        f"('<image number> <caption>' lines); first line: {first[:80]!r}"
    )


def _layout(columns: Sequence[str], source: Path) -> tuple[str, str | None, bool, list[str]]:
    """(id column, split column, has class columns, stream columns) of a caption table."""
    id_col = next((c for c in _ID_COLUMNS if c in columns), None)
    if id_col is None:
        raise InputError(f"{source}: no id column ({', '.join(_ID_COLUMNS)}); got {list(columns)}")
    split_col = "split" if "split" in columns else None
    has_classes = all(c in columns for c in CLASS_NAMES)
    fixed = {id_col, split_col, *CLASS_NAMES}
    streams = [c for c in columns if c not in fixed]
    if not streams:
        raise InputError(f"{source}: no caption columns after {', '.join(sorted(fixed - {None}))}")
    return id_col, split_col, has_classes, streams


_EXTRA = re.compile(r"^(.+)_(\d+)$")


def _group(columns: Sequence[str]) -> dict[str, list[str]]:
    """Stream -> its columns: ``X`` then ``X_2``, ``X_3``, ... when ``X`` is a column too."""
    present = set(columns)
    groups: dict[str, list[str]] = {}
    for c in columns:
        m = _EXTRA.match(c)
        if m and m.group(1) in present and int(m.group(2)) >= 2:
            continue
        groups[c] = [c]
    for c in columns:
        m = _EXTRA.match(c)
        if m and m.group(1) in groups and int(m.group(2)) >= 2:
            groups[m.group(1)].append(c)
    for cols in groups.values():
        cols[1:] = sorted(cols[1:], key=lambda c: int(c.rsplit("_", 1)[1]))
    return groups


def _columns(path: Path) -> list[str]:
    if path.suffix.lower() == ".parquet":
        import pyarrow.parquet as pq

        return list(pq.read_schema(path).names)
    import pandas as pd

    return [str(c) for c in pd.read_csv(path, nrows=0).columns]


def table_streams(path: str | os.PathLike[str]) -> list[str]:
    """Caption stream names of a captions table (or of the first table in a folder): its
    caption columns, ``X_2``, ``X_3``, ... folded into ``X``."""
    f = _table_files(Path(path))[0]
    return list(_group(_layout(_columns(f), f)[3]))


def _chunks(path: Path, columns: list[str], chunksize: int) -> Iterator:
    import pandas as pd

    if path.suffix.lower() == ".parquet":
        import pyarrow.parquet as pq

        for batch in pq.ParquetFile(path).iter_batches(batch_size=chunksize, columns=columns):
            yield batch.to_pandas()
        return
    dtype = {c: str for c in columns if c not in CLASS_NAMES}
    yield from pd.read_csv(
        path,
        usecols=columns,
        dtype=dtype,
        chunksize=chunksize,
        keep_default_na=False,  # a caption reading "NA" or "None" stays text
        na_values={c: [""] for c in CLASS_NAMES if c in columns},
    )


def read_table(
    path: str | os.PathLike[str],
    *,
    streams: Sequence[str] | None = None,
    chunksize: int = 50_000,
) -> Iterator[CaptionRecord]:
    """Stream the captions of one table (or of the tables of a folder), row by row."""
    for f in _table_files(Path(path)):
        id_col, split_col, has_classes, stream_cols = _layout(_columns(f), f)
        groups = _group(stream_cols)
        chosen = list(groups if streams is None else streams)
        unknown = [s for s in chosen if s not in groups]
        if unknown:
            raise InputError(f"{f}: no stream {unknown}; streams here: {', '.join(groups)}")
        parts = [(s, k, c) for s in chosen for k, c in enumerate(groups[s], start=1)]
        cols = [id_col, *([split_col] if split_col else []), *(c for _, _, c in parts)]
        cols += list(CLASS_NAMES) if has_classes else []
        n = 0
        for chunk in _chunks(f, cols, chunksize):
            ids = chunk[id_col].astype(str).tolist()
            splits = chunk[split_col].tolist() if split_col else [None] * len(ids)
            comps: list[tuple[float, ...] | None] = [None] * len(ids)
            if has_classes:
                values = chunk[list(CLASS_NAMES)].to_numpy(dtype=float).tolist()
                comps = [
                    tuple(v) if all(math.isfinite(x) for x in v) and sum(v) > 0 else None
                    for v in values
                ]
            texts = {c: chunk[c].tolist() for _, _, c in parts}
            for i, image_id in enumerate(ids):
                split = splits[i] or None
                for s, k, c in parts:
                    text = texts[c][i]
                    text = "" if text is None or text != text else str(text)  # NaN -> ""
                    cid = f"{image_id}#{s}" if k == 1 else f"{image_id}#{s}#{k}"
                    yield CaptionRecord(cid, image_id, s, text, split, comps[i])
            n += len(ids)
        logger.info("read %d rows x %d caption columns from %s", n, len(parts), f)


def read_karpathy(
    path: str | os.PathLike[str], *, stream: str | None = None
) -> Iterator[CaptionRecord]:
    """Stream a Karpathy-style JSON corpus; ``stream`` defaults to its ``dataset`` name."""
    p = Path(path)
    try:
        data = json.loads(p.read_text(encoding="utf-8-sig"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InputError(f"{p}: not valid UTF-8 JSON ({exc})") from None
    if isinstance(data, dict) and not isinstance(data.get("images"), list):
        data = _nwpu_as_karpathy(data, p)
    if not isinstance(data, dict) or not isinstance(data.get("images"), list):
        raise InputError(f"{p}: expected a Karpathy-style JSON object with an 'images' list")
    name = stream or str(data.get("dataset") or p.stem).lower()
    for k, img in enumerate(data["images"]):
        image_id = str(img.get("filename", img.get("imgid", k)))
        split = img.get("split")
        sentences = img.get("sentences")
        if not isinstance(sentences, list):
            raise InputError(f"{p}: image {image_id!r} (entry {k}) has no 'sentences' list")
        for j, sent in enumerate(sentences):
            text = sent.get("raw")
            if text is None:
                text = " ".join(sent.get("tokens", []))
            cid = str(sent["sentid"]) if "sentid" in sent else f"{image_id}#{j}"
            yield CaptionRecord(cid, image_id, name, str(text), split)


def _nwpu_as_karpathy(data: dict, path: Path) -> dict:
    """NWPU-Captions' JSON (``{class: [{filename, split, raw, raw_1 ... raw_4}, ...]}``) in the
    Karpathy layout; anything else is returned unchanged (and refused by the caller)."""
    groups = list(data.values())
    if not groups or not all(
        isinstance(g, list) and g and all(isinstance(e, dict) and "raw" in e for e in g)
        for g in groups
    ):
        return data
    images = []
    for entries in groups:
        for e in entries:
            keys = sorted((k for k in e if k == "raw" or k.startswith("raw_")), key=_raw_order)
            images.append({"filename": e.get("filename"), "split": e.get("split"),
                           "sentences": [{"raw": e[k]} for k in keys]})  # fmt: skip
    return {"dataset": path.stem.removeprefix("dataset_") or "nwpu", "images": images}


def _raw_order(key: str) -> int:
    """``raw`` first, then ``raw_1``, ``raw_2`` ... in number order."""
    number = key.partition("_")[2]
    return 0 if key == "raw" else int(number) + 1 if number.isdigit() else 10**6


def _sydney_splits(folder: Path) -> dict[str, tuple[str, str]]:
    """Image number -> (file name, split) from ``filenames_<split>.txt`` lists."""
    out: dict[str, tuple[str, str]] = {}
    for f in sorted(folder.glob("filenames_*.txt")):
        split = f.stem.removeprefix("filenames_")
        for line in f.read_text(encoding="utf-8", errors="replace").splitlines():
            name = line.strip()
            if name:
                out[Path(name).stem] = (name, split)
    return out


def read_sydney(path: str | os.PathLike[str], *, stream: str = "sydney") -> Iterator[CaptionRecord]:
    """Stream a Sydney-Captions text file (``<image number> <caption>`` per line)."""
    p = Path(path)
    splits = _sydney_splits(p.parent)
    counts: dict[str, int] = {}
    with open(p, encoding="utf-8", errors="replace", newline=None) as fh:
        for lineno, line in enumerate(fh, start=1):
            if not line.strip():
                continue
            m = _SYDNEY_LINE.match(line)
            if m is None:
                raise InputError(f"{p}:{lineno}: expected '<image number> <caption>', got {line!r}")
            number, text = m.group(1), m.group(2) or ""
            name, split = splits.get(number, (number, None))
            j = counts[number] = counts.get(number, -1) + 1
            yield CaptionRecord(f"{name}#{j}", name, stream, text, split)


def read_captions(
    path: str | os.PathLike[str],
    *,
    format: str | None = None,
    streams: Sequence[str] | None = None,
    chunksize: int = 50_000,
) -> Iterator[CaptionRecord]:
    """Stream the captions of ``path`` in its format (detected when ``format`` is None).

    ``streams`` keeps only those streams (table columns, or the corpus name of a
    single-stream corpus); unknown names raise InputError listing the valid ones.
    """
    fmt = format or detect_format(path)
    if fmt == "table":
        yield from read_table(path, streams=streams, chunksize=chunksize)
        return
    if fmt not in FORMATS:
        raise InputError(f"unknown caption format {fmt!r}; valid formats: {', '.join(FORMATS)}")
    reader = read_karpathy(path) if fmt == "karpathy" else read_sydney(path)
    if streams is None:
        yield from reader
        return
    first = next(reader, None)
    if first is None:
        return
    if first.stream not in streams:
        raise InputError(f"{path}: no stream {list(streams)}; the only stream is {first.stream!r}")
    yield first
    yield from reader
