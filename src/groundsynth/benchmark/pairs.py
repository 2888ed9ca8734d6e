"""Image–caption pairs for the multimodal benchmarks (retrieval, captioning).

A *pair source* stands for a dataset with captions, in one of two kinds:

- a dataset directory (groundsynth contract or ARAS400k layout) whose captions tables
  (``captions/<split>.csv``, written by ``groundsynth caption`` or shipped with ARAS400k) name
  its images;
- a Karpathy-style JSON (RSICD, UCM-, Sydney-Captions, RSITMD, NWPU-Captions) together with
  its image folder (``--images``): ``images[].filename`` under that folder (or one level
  below it, as the RSICD and UCM archives unpack).

:class:`PairSource` answers ``splits()``, ``ids(split)`` and ``root`` like
:class:`~groundsynth.data.reader.DatasetReader`, so the training regimes of
:mod:`groundsynth.benchmark.data` (``real,synthetic:0.5``, counts, ratios, seeds) select
pairs exactly as they select segmentation samples. :meth:`PairSource.pairs` returns the
:class:`PairSet` of chosen ids: image paths, their captions and which image each caption
belongs to.

Memory: a source keeps, per split, its image ids and paths and its captions as one Arrow
string array (about 120 bytes per caption, 250 MB for ARAS400k's 2,001,200); images are read
when a batch needs them.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa

from groundsynth.caption.corpora import detect_format, read_captions
from groundsynth.data.reader import filename_to_id, open_dataset, order_splits
from groundsynth.errors import InputError

if TYPE_CHECKING:
    from groundsynth.benchmark.data import Regime

__all__ = ["PairSet", "PairSource", "open_pairs", "open_sources", "regime_pairs"]

logger = logging.getLogger(__name__)

_IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp")


@dataclass(frozen=True)
class PairSet:
    """Images and their captions: caption ``j`` describes image ``image_of_text[j]``."""

    image_ids: tuple[str, ...]
    image_paths: tuple[Path, ...]
    texts: pa.Array
    image_of_text: np.ndarray

    def __post_init__(self) -> None:
        if len(self.texts) != len(self.image_of_text):
            raise ValueError("texts and image_of_text differ in length")

    @property
    def n_images(self) -> int:
        return len(self.image_paths)

    def text(self, j: int) -> str:
        return str(self.texts[int(j)].as_py())

    def captions_of(self) -> list[np.ndarray]:
        """Per image, the indices of its captions."""
        order = np.argsort(self.image_of_text, kind="stable")
        bounds = np.searchsorted(self.image_of_text[order], np.arange(self.n_images + 1))
        return [order[bounds[i] : bounds[i + 1]] for i in range(self.n_images)]

    @staticmethod
    def concat(sets: Sequence[PairSet]) -> PairSet:
        """One set holding every set's pairs, in order (image indices shifted)."""
        offsets = np.cumsum([0, *(s.n_images for s in sets)])
        return PairSet(
            tuple(i for s in sets for i in s.image_ids),
            tuple(p for s in sets for p in s.image_paths),
            pa.concat_arrays([s.texts for s in sets]) if sets else pa.array([], pa.string()),
            np.concatenate([s.image_of_text + o for s, o in zip(sets, offsets, strict=False)])
            if sets
            else np.zeros(0, np.int64),
        )


@dataclass
class _Split:
    ids: list[str]
    paths: list[Path]
    texts: pa.Array
    image_of_text: np.ndarray


class PairSource:
    """The captioned images of a dataset directory or of a Karpathy JSON + image folder.

    Args:
        path: a dataset directory, or a Karpathy JSON file.
        images: the image folder of a Karpathy JSON (required for one, refused otherwise).
        streams: caption columns (tables) to use; None: every stream.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        images: str | os.PathLike[str] | None = None,
        streams: Sequence[str] | None = None,
    ) -> None:
        self.root = Path(path)
        if not self.root.exists():
            raise InputError(f"{self.root}: no such dataset or caption file")
        self.streams = tuple(streams) if streams else None
        self._splits: dict[str, _Split] = {}
        if self.root.is_dir():
            if images is not None:
                raise InputError(
                    f"{self.root}: an image folder (--real-images / --synthetic-images) is for a "
                    "Karpathy JSON; a dataset directory has its images"
                )
            self._load_dataset()
        else:
            if detect_format(self.root) != "karpathy":
                raise InputError(
                    f"{self.root}: not a dataset directory nor a Karpathy JSON "
                    "(images[].sentences[] with filenames)"
                )
            if images is None:
                raise InputError(
                    f"{self.root}: a Karpathy JSON needs its image folder "
                    "(--real-images / --synthetic-images)"
                )
            self._load_karpathy(Path(images))
        if not self._splits:
            raise InputError(f"{self.root}: no captioned images found")

    def __repr__(self) -> str:
        return f"PairSource({str(self.root)!r})"

    # -- the reader-like interface of benchmark.data ------------------------------------------
    def splits(self) -> list[str]:
        return order_splits(set(self._splits))

    def ids(self, split: str) -> list[str]:
        return list(self._splits[split].ids) if split in self._splits else []

    def n_captions(self, split: str) -> int:
        return len(self._splits[split].texts) if split in self._splits else 0

    def pairs(self, split: str, ids: Sequence[str] | None = None) -> PairSet:
        """The pairs of ``ids`` (default: all) of ``split``, in the order of ``ids``."""
        if split not in self._splits:
            raise InputError(f"{self.root}: no captioned split {split!r}; splits: {self.splits()}")
        s = self._splits[split]
        if ids is None:
            return PairSet(tuple(s.ids), tuple(s.paths), s.texts, s.image_of_text)
        index = {k: i for i, k in enumerate(s.ids)}
        missing = [k for k in ids if k not in index]
        if missing:
            raise InputError(f"{self.root}/{split}: no captions for {missing[:5]}")
        rows = np.asarray([index[k] for k in ids], dtype=np.int64)
        new_of_old = np.full(len(s.ids), -1, dtype=np.int64)
        new_of_old[rows] = np.arange(len(rows))
        keep = np.flatnonzero(new_of_old[s.image_of_text] >= 0)
        order = keep[np.argsort(new_of_old[s.image_of_text[keep]], kind="stable")]
        return PairSet(
            tuple(ids),
            tuple(s.paths[i] for i in rows),
            s.texts.take(pa.array(order)),
            new_of_old[s.image_of_text[order]],
        )

    # -- loading ------------------------------------------------------------------------------
    def _add(self, split: str, rows: list[tuple[str, Path, list[str]]]) -> None:
        texts = [t for _, _, caps in rows for t in caps]
        owner = np.repeat(np.arange(len(rows)), [len(c) for _, _, c in rows])
        self._splits[split] = _Split(
            [r[0] for r in rows], [r[1] for r in rows], pa.array(texts, pa.string()), owner
        )

    def _load_dataset(self) -> None:
        reader = open_dataset(self.root)
        for split in reader.splits():
            found = reader.captions_path(split)
            if found is None:
                continue
            path, shared = found  # shared: one table of every split, filtered on its column
            on_disk = set(reader.ids(split))
            caps: dict[str, list[str]] = {}
            for rec in read_captions(path, format="table", streams=self.streams):
                if (shared and rec.split != split) or not rec.text:
                    continue
                caps.setdefault(filename_to_id(rec.image_id), []).append(rec.text)
            absent = [k for k in caps if k not in on_disk]
            if absent:
                logger.warning(
                    "%s: %d captioned images of split %s have no image file (e.g. %s); skipped",
                    self.root, len(absent), split, absent[0],
                )  # fmt: skip
            uncaptioned = len(on_disk) - (len(caps) - len(absent))
            if uncaptioned:
                logger.warning(
                    "%s/%s: %d images have no caption; skipped", self.root, split, uncaptioned
                )
            ids = sorted(k for k in caps if k in on_disk)
            if ids:
                self._add(split, [(k, reader.image_path(split, k), caps[k]) for k in ids])

    def _load_karpathy(self, images: Path) -> None:
        if not images.is_dir():
            raise InputError(f"{images}: no such image folder")
        by_split: dict[str, dict[str, list[str]]] = {}
        for rec in read_captions(self.root, format="karpathy", streams=self.streams):
            if rec.text:
                by_split.setdefault(rec.split or "train", {}).setdefault(rec.image_id, []).append(
                    rec.text
                )
        files = _image_files(images)
        missing: list[str] = []
        for split, caps in by_split.items():
            rows = []
            for name, texts in caps.items():
                path = files.get(name) or files.get(Path(name).stem)
                if path is None:
                    missing.append(name)
                else:
                    rows.append((Path(name).stem, path, texts))
            if rows:
                self._add(split, rows)
        if missing:
            raise InputError(
                f"{images}: {len(missing)} images named in {self.root} are missing "
                f"(e.g. {', '.join(missing[:3])})"
            )


def _image_files(folder: Path) -> dict[str, Path]:
    """Image files in ``folder`` and its subfolders one level down, by name and by stem."""
    found: dict[str, Path] = {}
    for base in (folder, *sorted(p for p in folder.iterdir() if p.is_dir())):
        with os.scandir(base) as entries:
            for e in entries:
                if e.is_file() and e.name.lower().endswith(_IMAGE_SUFFIXES):
                    path = base / e.name
                    found.setdefault(e.name, path)
                    found.setdefault(Path(e.name).stem, path)
    return found


def open_pairs(
    path: str | os.PathLike[str],
    images: str | os.PathLike[str] | None = None,
    streams: Sequence[str] | None = None,
) -> PairSource:
    """A :class:`PairSource` (see there)."""
    return PairSource(path, images=images, streams=streams)


def open_sources(cfg: Any) -> dict[str, PairSource]:
    """The ``real`` / ``synthetic`` pair sources of a multimodal benchmark config (its
    ``real``, ``real_images``, ``synthetic``, ``synthetic_images`` and ``streams``)."""
    given = {
        "real": (cfg.real, cfg.real_images),
        "synthetic": (cfg.synthetic, cfg.synthetic_images),
    }
    return {k: PairSource(p, images=i, streams=cfg.streams) for k, (p, i) in given.items() if p}


def regime_pairs(
    regime: Regime, sources: dict[str, PairSource], seed: int
) -> tuple[list[PairSet], list[dict[str, Any]]]:
    """The pair sets a regime trains on (one per part, chosen with ``seed`` like the
    segmentation benchmark's samples) and a description of each for the run's metrics."""
    from groundsynth.benchmark.data import resolve_regime

    chosen = resolve_regime(regime, sources, seed)  # type: ignore[arg-type]
    sets = [src.pairs(split, ids) for src, split, ids in chosen]  # type: ignore[attr-defined]
    described = [
        {"part": p.label, "root": str(src.root), "split": split, "images": len(ids),
         "captions": len(s.texts)}
        for p, (src, split, ids), s in zip(regime.parts, chosen, sets, strict=True)
    ]  # fmt: skip
    return sets, described
