"""Learning checks of the segmentation benchmark: does a segmenter beat the pixel floor?

The pixel floor (:mod:`groundsynth.evaluate.pixel_floor`, a per-pixel linear classifier of
colour) is fitted once per set of training data -- exactly the samples a regime's segmenters
train on -- and scored on every test set of the benchmark. Each run's ``metrics.json`` then
carries a ``learning`` block (:func:`learning_block`)::

    {"floor": {test_set: {"iou", "f1"}}, "model": {test_set: {"iou", "f1"}},
     "test_set": <the in-domain test set>, "margin": <model IoU - floor IoU there>,
     "passed": <margin > 0>, "floor_file": "floors/<key>.json"}

The in-domain test set is the first whose name starts with ``real``, else the first.

Floors live in ``OUT/floors/``. A regime without amounts trains every seed on the same
samples: one floor, ``<regime slug>.json``; a regime with amounts draws its subsets from the
seed: one floor per seed, ``<regime slug>-seed<k>.json``. With the basis ``real``
(``BenchmarkConfig.floor``) a regime with a real part is checked against the floor fitted on
that part alone -- one fit shared by ``real`` and every ``real,<synthetic>`` regime, and the
question it asks of a mixed run is whether adding synthetic data beat what a colour classifier
reads from the real data alone; regimes without a real part keep their own floor. Every block
names ``floor_fitted_on`` (the parts the floor was fitted on). Each file holds the floor, a
digest of the samples it was fitted on and its scores per test set (with a digest of that set); a
rerun reuses what still matches and refits / rescores what does not. Fitting streams the
samples (at most :data:`FIT` ``max_pixels`` pixels held), scoring streams the test sets.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from groundsynth.benchmark.data import Regime, SegmentationDataModule
from groundsynth.data.reader import DatasetReader

__all__ = [
    "FIT",
    "FLOOR_BASES",
    "FloorStore",
    "floor_key",
    "in_domain",
    "learning_block",
    "selection_digest",
    "warn_not_learned",
]

log = logging.getLogger(__name__)

#: Pixel sampling of a floor fit (fixed, so a floor depends on its training samples only).
FIT: dict[str, int] = {"pixels_per_image": 256, "max_pixels": 200_000, "seed": 0}
#: Scores of the floor and the model reported in the learning block.
_KEPT = ("iou", "f1")

Selection = Sequence[tuple[DatasetReader, str, Sequence[str]]]


def floor_key(regime: Regime, seed: int) -> str:
    """File stem of a regime's floor: its slug, plus the seed when amounts draw subsets."""
    seeded = any(p.amount is not None for p in regime.parts)
    return f"{regime.slug}-seed{seed}" if seeded else regime.slug


def selection_digest(selection: Selection) -> str:
    """SHA-256 of the (dataset root, split, id) of every sample of ``selection``."""
    h = hashlib.sha256()
    for reader, split, ids in selection:
        for sample_id in ids:
            h.update(f"{Path(reader.root).resolve()}\t{split}\t{sample_id}\n".encode())
    return h.hexdigest()


def _pairs(selection: Selection) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    for reader, split, ids in selection:
        for sample_id in ids:
            yield reader.read_image(split, sample_id), reader.read_mask(split, sample_id)


def in_domain(test_sets: Sequence[str]) -> str:
    """The test set the learning check is decided on: the first ``real...`` one, else the
    first."""
    return next((t for t in test_sets if t.startswith("real")), test_sets[0])


def _brief(scores: dict[str, Any]) -> dict[str, float | None]:
    out = {}
    for k in _KEPT:
        v = scores.get(k)
        out[k] = None if v is None or math.isnan(float(v)) else float(v)
    return out


def learning_block(
    floor: dict[str, dict[str, Any]], model: dict[str, dict[str, Any]], floor_file: str
) -> dict[str, Any]:
    """The ``learning`` entry of a run's metrics from the floor's and the model's scores per
    test set (metric dicts with at least ``iou`` and ``f1``). ``passed`` is whether the model's
    macro IoU is above the floor's on the in-domain test set (:func:`in_domain`); a missing or
    undefined score does not pass."""
    names = [t for t in model if t in floor]
    target = in_domain(names or list(model))
    block: dict[str, Any] = {
        "floor": {t: _brief(floor[t]) for t in names},
        "model": {t: _brief(model[t]) for t in names},
        "test_set": target,
        "margin": None,
        "passed": False,
        "floor_file": floor_file,
    }
    m = block["model"].get(target, {}).get("iou")
    f = block["floor"].get(target, {}).get("iou")
    if m is not None and f is not None:
        block["margin"] = m - f
        block["passed"] = bool(m > f)
    return block


#: What a run's floor is fitted on: its whole training set, or (with a real part) the real part.
FLOOR_BASES = ("regime", "real")


class FloorStore:
    """Pixel floors of one benchmark, in ``directory`` (``OUT/floors``), fitted on demand.

    ``basis``: ``regime`` (a floor per training set) or ``real`` (regimes with a real part share
    the floor of that part; see the module docstring).

    :meth:`scores` gives a floor's scores on test sets, fitting and scoring only what no file
    holds yet; :meth:`check` gives a run's learning block. Files are written here: call them
    on the process that writes (global rank zero). Ray tasks of one sweep (:mod:`.sweep`) each
    keep a store on the same folder: two of them may fit the same floor at once, which is
    safe -- the fit is seeded and depends on the samples alone, and files are replaced
    atomically, so the file left is the same whichever write lands last.
    """

    def __init__(self, directory: str | Path, basis: str = "regime") -> None:
        if basis not in FLOOR_BASES:
            raise ValueError(f"floor basis must be one of {FLOOR_BASES}, got {basis!r}")
        self.directory = Path(directory)
        self.basis = basis
        self._docs: dict[str, dict[str, Any]] = {}

    def path(self, key: str) -> Path:
        return self.directory / f"{key}.json"

    def _load(self, key: str, digest: str) -> dict[str, Any] | None:
        if key in self._docs:
            doc = self._docs[key]
        else:
            try:
                doc = json.loads(self.path(key).read_text(encoding="utf-8"))
            except FileNotFoundError:
                return None
            except (OSError, ValueError) as exc:
                log.warning(
                    "%s: unreadable pixel floor (%s); fitting it again", self.path(key), exc
                )
                return None
        if (doc.get("training_data") or {}).get("digest") != digest:
            log.info("%s: fitted on other samples; fitting it again", self.path(key))
            return None
        return doc

    def scores(
        self,
        key: str,
        train: Selection,
        tests: dict[str, tuple[DatasetReader, str, Sequence[str]]],
        describe: list[dict[str, Any]] | None = None,
    ) -> dict[str, dict[str, Any]]:
        """``{test set: the floor's metrics}`` of the floor ``key`` fitted on ``train``.

        Args:
            key: the floor's file stem (:func:`floor_key`).
            train: ``(reader, split, ids)`` of every training part.
            tests: ``{name: (reader, split, ids)}`` of the test sets to score.
            describe: JSON-able description of the training parts, saved with the floor.
        """
        from groundsynth.benchmark.metrics import metrics_from_confusion
        from groundsynth.classes import CLASS_NAMES
        from groundsynth.evaluate.pixel_floor import PixelFloor, sample_pixels
        from groundsynth.io import write_json

        digest = selection_digest(train)
        doc = self._load(key, digest)
        changed = doc is None
        if doc is None:
            log.info("fitting the pixel floor %s", key)
            x, y = sample_pixels(_pairs(train), **FIT)
            fitted = PixelFloor.fit(x, y)
            fitted.info.update(FIT)
            doc = {
                **fitted.to_dict(),
                "training_data": {"digest": digest, "parts": describe or []},
                "test": {},
            }
        floor = PixelFloor.from_dict(doc)
        out: dict[str, dict[str, Any]] = {}
        for name, selection in tests.items():
            test_digest = selection_digest([selection])
            held = doc["test"].get(name) or {}
            if held.get("digest") != test_digest:
                cm = floor.confusion(_pairs([selection]))
                held = {"digest": test_digest, "scores": metrics_from_confusion(cm, CLASS_NAMES)}
                doc["test"][name] = held
                changed = True
            out[name] = held["scores"]
        if changed:
            from groundsynth.benchmark.results import json_safe

            write_json(self.path(key), json_safe(doc))
        self._docs[key] = doc
        return out

    def check(
        self, dm: SegmentationDataModule, seed: int, test_results: dict[str, dict[str, Any]]
    ) -> dict[str, Any]:
        """The learning block of a run of ``dm``'s regime and ``seed`` with ``test_results``
        (the model's metrics per test set): its floor is fitted on ``dm``'s training samples
        (with the basis ``real``, on their real part when there is one) and scored on ``dm``'s
        test sets (or read from its file)."""
        index = list(range(len(dm.regime.parts)))
        if self.basis == "real":
            real = [i for i in index if dm.regime.parts[i].source == "real"]
            index = real or index
        regime = Regime(tuple(dm.regime.parts[i] for i in index))
        key = floor_key(regime, seed)
        tests = dict(zip(dm.test_names, dm.test_selection))
        rows = dm.describe()["train"]
        scores = self.scores(
            key, [dm.train_selection[i] for i in index], tests, [rows[i] for i in index]
        )
        block = learning_block(scores, test_results, f"{self.directory.name}/{key}.json")
        block["floor_fitted_on"] = regime.name
        return block


def warn_not_learned(run: str, block: dict[str, Any]) -> None:
    """Log a warning naming ``run`` and its IoU against its floor's on the decisive test set."""
    target = block["test_set"]
    model = block["model"].get(target, {}).get("iou")
    floor = block["floor"].get(target, {}).get("iou")
    log.warning(
        "run %s did not beat its pixel floor on %s: macro IoU %s, floor %s "
        "(it learned no more than a per-pixel colour classifier)",
        run, target, "n/a" if model is None else f"{model:.4f}",
        "n/a" if floor is None else f"{floor:.4f}",
    )  # fmt: skip
