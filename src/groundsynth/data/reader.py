"""Reading datasets: the groundsynth data contract and the ARAS400k release layout.

:func:`open_dataset` detects the layout of a directory and returns a :class:`DatasetReader`:

* ``groundsynth`` -- a directory holding ``metadata.parquet`` (see :mod:`.contract`); sample ids
  come from the metadata table;
* ``aras400k`` -- ``<split>/images/*.png`` and ``<split>/masks/*.png`` (RGB colour masks) with
  no metadata; sample ids come from listing the image folders.

Reading is lazy: images and masks are read one file at a time, tables one split at a time, and
the reader holds no open file, so it pickles into DataLoader worker processes.

Class-percentage and caption tables are found per split (``class_percentages/<split>.csv``,
``captions/<split>.csv``) or, as released with ARAS400k, in one CSV holding a ``split`` column
(in ``class_percentages/``, ``captions/`` or at the root). Their ``filename`` column may name
files with or without ``.png``; the tables returned carry an extra first column ``id``.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path, PurePath
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import pandas as pd
from PIL import Image

from groundsynth.classes import CLASS_NAMES
from groundsynth.data import contract
from groundsynth.data.masks import read_mask as _read_mask_file
from groundsynth.errors import InputError

if TYPE_CHECKING:
    import pyarrow as pa

__all__ = [
    "ARAS_SPLITS",
    "DECODE_ERRORS",
    "DatasetReader",
    "Layout",
    "Sample",
    "filename_to_id",
    "list_pngs",
    "detect_layout",
    "open_dataset",
    "order_splits",
    "read_rgb",
    "split_dirs",
]

logger = logging.getLogger(__name__)

Layout = Literal["groundsynth", "aras400k"]
TableKind = Literal["class_percentages", "captions"]

#: Split names of the ARAS400k release, in its order.
ARAS_SPLITS: tuple[str, ...] = (*contract.SPLITS, "synth")

#: Exceptions PIL raises on corrupt or truncated image files.
DECODE_ERRORS: tuple[type[BaseException], ...] = (OSError, SyntaxError, ValueError, EOFError)

_CSV_CHUNK_ROWS = 100_000


@dataclass(frozen=True)
class Sample:
    """One sample: its image (H, W, 3 uint8), mask (H, W uint8 class indices) and metadata.

    ``image`` / ``mask`` are ``None`` when not loaded (see :meth:`DatasetReader.iter_samples`);
    ``meta`` is the sample's ``metadata.parquet`` row (empty for ARAS400k).
    """

    id: str
    split: str
    image: np.ndarray | None
    mask: np.ndarray | None
    meta: dict[str, Any] = field(default_factory=dict)


def filename_to_id(filename: object) -> str:
    """Sample id of a table's ``filename`` entry: base name without a ``.png`` suffix."""
    name = PurePath(str(filename).strip()).name
    return name[:-4] if name.lower().endswith(".png") else name


def list_pngs(folder: Path) -> list[str]:
    """Sorted ids (stems) of the ``*.png`` files in ``folder``; empty if it does not exist."""
    if not folder.is_dir():
        return []
    with os.scandir(folder) as entries:
        return sorted(e.name[:-4] for e in entries if e.name.endswith(".png") and e.is_file())


def read_rgb(path: str | os.PathLike[str]) -> np.ndarray:
    """Read an 8-bit image file as (H, W, 3) uint8 RGB; errors name the file."""
    path = Path(path)
    try:
        with Image.open(path) as im:
            if im.mode not in ("RGB", "RGBA", "L", "P", "LA"):
                raise InputError(
                    f"{path}: image mode {im.mode!r} is not 8-bit RGB; dataset images must be "
                    "8-bit RGB PNGs"
                )
            im.load()
            return np.asarray(im if im.mode == "RGB" else im.convert("RGB"), dtype=np.uint8)
    except InputError:
        raise
    except FileNotFoundError as exc:
        raise InputError(f"{path}: image file not found") from exc
    except DECODE_ERRORS as exc:
        raise InputError(f"{path}: cannot read image ({exc})") from exc


def split_dirs(root: Path) -> set[str]:
    """Names of the folders of ``root`` that hold an ``images`` or ``masks`` folder."""
    return {
        p.name
        for p in root.iterdir()
        if p.is_dir() and ((p / "images").is_dir() or (p / "masks").is_dir())
    }


def order_splits(names: set[str] | list[str]) -> list[str]:
    """Split names in canonical order: train, val, test, synth, then the others sorted."""
    names = set(names)
    known = [s for s in ARAS_SPLITS if s in names]
    return known + sorted(names.difference(ARAS_SPLITS))


def _scalar(value: Any) -> Any:
    return value.item() if isinstance(value, np.generic) else value


class DatasetReader:
    """Lazy reader of one dataset directory; build it with :func:`open_dataset`."""

    def __init__(self, root: str | os.PathLike[str], layout: Layout) -> None:
        self.root = Path(root)
        self.layout: Layout = layout
        self._ids: dict[str, list[str]] = {}
        self._splits: list[str] | None = None
        self._headers: dict[Path, list[str]] = {}

    def __repr__(self) -> str:
        return f"DatasetReader(root={str(self.root)!r}, layout={self.layout!r})"

    # ----------------------------------------------------------------- ids and splits
    def splits(self) -> list[str]:
        """Split names in canonical order (train, val, test, synth, then others sorted)."""
        if self._splits is None:
            names = split_dirs(self.root)
            if self.layout == "groundsynth":
                names.update(self._metadata_splits())
            self._splits = order_splits(names)
        return list(self._splits)

    def _metadata_splits(self) -> set[str]:
        import pyarrow.compute as pc

        table = self._read_metadata_table(columns=["split"])
        return {str(s) for s in pc.unique(table.column("split")).to_pylist() if s is not None}

    def ids(self, split: str) -> list[str]:
        """Sorted sample ids of ``split`` (from metadata.parquet, else from the image folder)."""
        return list(self._cached_ids(split))

    def _cached_ids(self, split: str) -> list[str]:
        if split not in self._ids:
            if self.layout == "groundsynth":
                table = self._read_metadata_table(columns=["id"], split=split)
                ids = sorted({str(i) for i in table.column("id").to_pylist()})
            else:
                ids = list_pngs(self.root / split / "images")
            self._ids[split] = ids
        return self._ids[split]

    def __len__(self) -> int:
        return sum(self.len(s) for s in self.splits())

    def len(self, split: str | None = None) -> int:
        """Number of samples in ``split`` (all splits when ``None``)."""
        return len(self) if split is None else len(self._cached_ids(split))

    # ----------------------------------------------------------------- samples
    def image_path(self, split: str, sample_id: str) -> Path:
        return contract.image_path(self.root, split, sample_id)

    def mask_path(self, split: str, sample_id: str) -> Path:
        return contract.mask_path(self.root, split, sample_id)

    def read_image(self, split: str, sample_id: str) -> np.ndarray:
        """The sample's image as (H, W, 3) uint8; :class:`InputError` naming the file."""
        return read_rgb(self.image_path(split, sample_id))

    def read_mask(self, split: str, sample_id: str) -> np.ndarray:
        """The sample's mask as (H, W) uint8 class indices (palette, index or RGB colour PNG)."""
        path = self.mask_path(split, sample_id)
        if not path.is_file():
            raise InputError(f"{path}: mask file not found")
        return _read_mask_file(path)

    def iter_samples(
        self, split: str | None = None, *, load_image: bool = True, load_mask: bool = True
    ) -> Iterator[Sample]:
        """Yield samples one at a time, in split order then id order.

        Files are read only when their sample is reached, so a bad file raises there, after
        the samples before it have been yielded.
        """
        for s in self.splits() if split is None else [split]:
            meta_rows = self._meta_rows(s)
            for sample_id in self._cached_ids(s):
                yield Sample(
                    id=sample_id,
                    split=s,
                    image=self.read_image(s, sample_id) if load_image else None,
                    mask=self.read_mask(s, sample_id) if load_mask else None,
                    meta=meta_rows(sample_id),
                )

    def _meta_rows(self, split: str) -> Callable[[str], dict[str, Any]]:
        """A function id -> metadata row dict for ``split`` (reads the split's rows once)."""
        if self.layout != "groundsynth":
            return lambda _id: {}
        df = self.metadata(split)
        if df is None:
            return lambda _id: {}
        columns = {c: df[c].to_numpy() for c in df.columns}
        index = {str(i): n for n, i in enumerate(columns["id"])}
        return lambda sid: {c: _scalar(v[index[sid]]) for c, v in columns.items()}

    # ----------------------------------------------------------------- tables
    def metadata(
        self, split: str | None = None, columns: list[str] | None = None
    ) -> pd.DataFrame | None:
        """Rows of ``metadata.parquet`` (of ``split`` if given; only ``columns`` if given).

        ``None`` for layouts without metadata (ARAS400k).
        """
        if self.layout != "groundsynth":
            return None
        return self._read_metadata_table(columns=columns, split=split).to_pandas()

    def metadata_columns(self) -> list[str]:
        """Column names of ``metadata.parquet`` (schema only); empty for ARAS400k."""
        if self.layout != "groundsynth":
            return []
        import pyarrow.parquet as pq

        path = contract.metadata_path(self.root)
        try:
            return list(pq.read_schema(path).names)
        except (OSError, ValueError) as exc:
            raise InputError(f"{path}: cannot read metadata ({exc})") from exc

    def _read_metadata_table(
        self, columns: list[str] | None = None, split: str | None = None
    ) -> pa.Table:
        import pyarrow.parquet as pq

        path = contract.metadata_path(self.root)
        try:
            schema = pq.read_schema(path)
            need = {"id", "split"}.difference(schema.names)
            if need:
                raise InputError(f"{path}: missing column(s) {sorted(need)}; found {schema.names}")
            if columns is not None:
                unknown = set(columns).difference(schema.names)
                if unknown:
                    raise InputError(f"{path}: no column(s) {sorted(unknown)}")
            filters = [("split", "==", split)] if split is not None else None
            return pq.read_table(path, columns=columns, filters=filters)
        except FileNotFoundError as exc:
            raise InputError(f"{path}: metadata file not found") from exc
        except (OSError, ValueError) as exc:
            if isinstance(exc, InputError):
                raise
            raise InputError(f"{path}: cannot read metadata ({exc})") from exc

    def percentages_path(self, split: str) -> tuple[Path, bool] | None:
        """Where ``split``'s class percentages are: (csv, whether to filter on ``split``)."""
        found = self._find_table("class_percentages", split)
        if found is None:  # ARAS keeps the composition in its caption table
            found = self._find_table("captions", split)
            if found is not None and not set(CLASS_NAMES) <= set(self.table_columns(found[0])):
                return None
        return found

    def captions_path(self, split: str) -> tuple[Path, bool] | None:
        """Where ``split``'s captions are: (csv, whether to filter on ``split``)."""
        return self._find_table("captions", split)

    def percentages(self, split: str) -> pd.DataFrame | None:
        """``split``'s class-percentage table (columns ``id`` then PERCENT_COLUMNS), or None."""
        found = self.percentages_path(split)
        if found is None:
            return None
        return self.read_table(*found, split, columns=list(contract.PERCENT_COLUMNS))

    def captions(self, split: str) -> pd.DataFrame | None:
        """``split``'s caption table (columns ``id`` then those of the file), or None."""
        found = self.captions_path(split)
        return None if found is None else self.read_table(*found, split, columns=None)

    def table_columns(self, path: Path) -> list[str]:
        """Column names of a CSV table (its header only is read; cached)."""
        if path not in self._headers:
            try:
                self._headers[path] = [str(c) for c in pd.read_csv(path, nrows=0).columns]
            except (OSError, ValueError) as exc:
                raise InputError(f"{path}: cannot read table header ({exc})") from exc
        return self._headers[path]

    def _find_table(self, kind: TableKind, split: str) -> tuple[Path, bool] | None:
        per_split = self.root / kind / f"{split}.csv"
        if per_split.is_file():
            return per_split, False
        candidates = [
            *sorted((self.root / kind).glob("*.csv")),
            *sorted(self.root.glob("*.csv")),
        ]
        split_names = set(ARAS_SPLITS) | split_dirs(self.root)
        for path in candidates:
            if path.stem in split_names:
                continue  # a split's own table
            try:
                cols = set(self.table_columns(path))
            except InputError as exc:
                logger.warning("skipping unreadable table candidate: %s", exc)
                continue
            if not {"filename", "split"} <= cols:
                continue
            if kind == "class_percentages" and set(CLASS_NAMES) <= cols:
                return path, True
            if kind == "captions" and cols.difference(contract.PERCENT_COLUMNS):
                return path, True
        return None

    def read_table(
        self, path: Path, filter_split: bool, split: str, columns: list[str] | None
    ) -> pd.DataFrame:
        """Read ``split``'s rows of a CSV table, with an ``id`` column first.

        ``filter_split`` keeps the rows whose ``split`` column is ``split`` (read in chunks, so
        a table of every split is never held whole); ``columns`` restricts the columns read
        (``filename`` and, when filtering, ``split`` are required then). ``filename``/``split``
        are read as strings, so integer names such as ``000123`` survive.
        """
        header = self.table_columns(path)
        if columns is not None:
            need = [c for c in columns if c != "split" or filter_split]
            missing = [c for c in need if c not in header]
            if missing:
                raise InputError(f"{path}: missing column(s) {missing}; found {header}")
            usecols: list[str] | None = [c for c in columns if c in header]
        else:
            if "filename" not in header:
                raise InputError(f"{path}: missing column 'filename'; found {header}")
            usecols = None
        dtype = {"filename": str, "split": str}
        try:
            if filter_split:
                chunks = pd.read_csv(path, usecols=usecols, dtype=dtype, chunksize=_CSV_CHUNK_ROWS)
                parts = [c[c["split"] == split] for c in chunks]
                df = pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(columns=header)
            else:
                df = pd.read_csv(path, usecols=usecols, dtype=dtype)
        except (OSError, ValueError) as exc:
            raise InputError(f"{path}: cannot read table ({exc})") from exc
        if "split" not in df.columns:
            df.insert(1, "split", split)
        if columns is not None:
            df = df[columns]
        df.insert(0, "id", [filename_to_id(f) for f in df["filename"]])
        return df.reset_index(drop=True)


def detect_layout(root: Path) -> Layout:
    """``groundsynth`` if ``metadata.parquet`` exists, ``aras400k`` if split folders do."""
    if not root.is_dir():
        raise InputError(f"{root}: dataset directory does not exist")
    if contract.metadata_path(root).is_file():
        return "groundsynth"
    if split_dirs(root):
        return "aras400k"
    raise InputError(
        f"{root}: not a dataset: found neither metadata.parquet nor <split>/images and "
        f"<split>/masks folders (expected e.g. {root / 'train' / 'images'})"
    )


def open_dataset(root: str | os.PathLike[str]) -> DatasetReader:
    """Open a dataset directory, detecting its layout (see the module docstring)."""
    root = Path(root)
    layout = detect_layout(root)
    logger.debug("opened %s as a %s dataset", root, layout)
    return DatasetReader(root, layout)
