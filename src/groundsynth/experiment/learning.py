"""Learning checks of an experiment: did every model it compares learn?

A model that runs is not a model that learns. Each check sets a model's figure against a
floor measured in the same run:

- **segmenters** (every run trained on real data): macro IoU on the in-domain test split
  above the pixel floor's (:mod:`groundsynth.evaluate.pixel_floor`, fitted on the same real
  training split) -- taken from each benchmark run's ``learning`` record, or computed here;
- **grounded generator**: its raw samples read back as their maps by the pixel floor (pooled
  macro IoU), at least ``LABEL_FIDELITY_RATIO`` x the floor's IoU on real test images (the
  ceiling a real image reaches); its Fréchet distance at most ``FD_RATIO`` x the distance
  between two halves of the real set (segmenter features; the median over random splits,
  :class:`~groundsynth.evaluate.fidelity.HalfSplits`, since one split's value varies up to
  3x with which images fall where);
- **ungrounded generator**: Fréchet distance at most ``FD_RATIO`` x the real halves'.

:func:`learning_block` returns ``{"checks": [...], "passed": bool}``; the experiment writes
it into ``experiment.json`` and the report withholds the comparison's conclusion when a check
fails (the numbers stay visible).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from groundsynth.evaluate.pixel_floor import PixelFloor, fit_floor, score_floor

__all__ = ["FD_RATIO", "LABEL_FIDELITY_RATIO", "floor_of", "learning_block"]

log = logging.getLogger(__name__)

#: grounded samples must be read back as their maps at least this share of the real ceiling
LABEL_FIDELITY_RATIO = 0.7
#: a synthetic set this many times further from real images than two real halves fails
FD_RATIO = 10.0


def floor_of(source: Path, out: Path, seed: int = 0, bench: Path | None = None) -> PixelFloor:
    """The pixel floor of ``source``'s train split: the one the benchmark fitted for its
    ``real`` regime (``bench/floors/real.json``, the real segmenters' floor) when there is one,
    else fitted here and cached as ``out/floor.json``."""
    if bench is not None and (bench / "floors" / "real.json").is_file():
        return PixelFloor.from_dict(json.loads((bench / "floors" / "real.json").read_text()))
    path = out / "floor.json"
    if path.is_file():
        return PixelFloor.load(path)
    floor = fit_floor(source, "train", seed=seed)
    floor.save(path)
    return floor


def _check(name: str, figure: float | None, floor: float | None, passed: bool, rule: str,
           **extra: Any) -> dict[str, Any]:  # fmt: skip
    return {
        "model": name,
        "figure": None if figure is None else round(float(figure), 6),
        "floor": None if floor is None else round(float(floor), 6),
        "passed": bool(passed),
        "rule": rule,
        **extra,
    }


def segmenter_checks(
    bench: Path, floor: PixelFloor, source: Path, in_domain: str = "real/test"
) -> list[dict[str, Any]]:
    """One check per benchmark run trained on real data (regime containing ``real``)."""
    floor_iou: float | None = None
    checks = []
    for metrics_path in sorted((bench / "runs").glob("*/*/seed*/metrics.json")):
        m = json.loads(metrics_path.read_text())
        regime = str(m.get("regime", ""))
        if "real" not in regime.split(","):
            continue
        model_iou = ((m.get("test") or {}).get(in_domain) or {}).get("iou")
        record = m.get("learning") or {}
        f = ((record.get("floor") or {}).get(in_domain) or {}).get("iou")
        if f is None:
            if floor_iou is None:
                floor_iou = float(score_floor(floor, source, "test")["iou"])
            f = floor_iou
        ok = model_iou is not None and model_iou == model_iou and model_iou > f
        checks.append(
            _check(
                f"segmenter {m.get('arch')} {regime} seed {m.get('seed')}", model_iou, f, ok,
                "in-domain macro IoU above the pixel floor's",
                kind="segmenter",
            )
        )  # fmt: skip
    return checks


def _fd(summary: dict[str, Any]) -> tuple[float | None, float | None]:
    ff = (summary or {}).get("feature_fidelity") or {}
    fd = (ff.get("synthetic") or {}).get("frechet_distance")
    ref = (ff.get("real_halves") or {}).get("frechet_distance")
    num = (float, int)
    return (fd if isinstance(fd, num) else None, ref if isinstance(ref, num) else None)


def fd_check(name: str, summary: dict[str, Any]) -> dict[str, Any]:
    fd, ref = _fd(summary)
    ok = fd is not None and ref is not None and fd <= FD_RATIO * ref
    return _check(
        f"{name} generator: feature fidelity", fd, None if ref is None else FD_RATIO * ref, ok,
        f"Fréchet distance at most {FD_RATIO:g}x the median one between the two halves of "
        "random splits of the real set",
        real_halves=ref, kind="generator",
    )  # fmt: skip


def label_fidelity_check(
    name: str, floor: PixelFloor, samples: Path, source: Path
) -> dict[str, Any]:
    """The floor reads ``samples`` (a one-split synthetic dataset) back as their maps."""
    from groundsynth.data.reader import open_dataset

    reader = open_dataset(samples)
    split = next(s for s in reader.splits() if reader.len(s))
    read_back = float(score_floor(floor, reader, split)["iou"])
    ceiling = float(score_floor(floor, source, "test")["iou"])
    ok = read_back >= LABEL_FIDELITY_RATIO * ceiling
    return _check(
        f"{name} generator: label fidelity", read_back, LABEL_FIDELITY_RATIO * ceiling, ok,
        f"samples read back as their maps by the pixel floor at least {LABEL_FIDELITY_RATIO:g}x "
        "its IoU on real test images",
        ceiling=round(ceiling, 6), ratio=round(read_back / ceiling, 6) if ceiling else None,
        kind="generator",
    )  # fmt: skip


def learning_block(
    *,
    out: Path,
    source: Path,
    bench: Path,
    grounded_raw: Path,
    fidelity: dict[str, dict[str, Any]],
    seed: int = 0,
) -> dict[str, Any]:
    """Every learning check of the experiment in ``out`` (see the module docstring)."""
    floor = floor_of(source, out, seed, bench)
    checks = segmenter_checks(bench, floor, source)
    checks.append(label_fidelity_check("grounded", floor, grounded_raw, source))
    checks.append(fd_check("grounded", fidelity.get("grounded_raw") or {}))
    checks.append(fd_check("ungrounded", fidelity.get("ungrounded") or {}))
    failed = [c["model"] for c in checks if not c["passed"]]
    for name in failed:
        log.warning("learning check failed: %s", name)
    return {
        "passed": not failed,
        "failed": failed,
        "checks": checks,
        "floor": {"features": floor.info.get("features"), "pixels": floor.info.get("pixels")},
    }
