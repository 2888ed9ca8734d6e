"""Rules and configuration of the grounding filter (:mod:`groundsynth.evaluate.filter`)."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, NamedTuple

import numpy as np

from groundsynth.classes import CLASS_NAMES, class_index
from groundsynth.errors import InputError

__all__ = ["MODES", "ON_MISSING", "Check", "FilterConfig", "Mode", "OnMissing", "ShareRule"]

Mode = Literal["manifest", "link", "copy"]
OnMissing = Literal["fail", "pass"]
MODES: tuple[str, ...] = ("manifest", "link", "copy")
ON_MISSING: tuple[str, ...] = ("fail", "pass")

_OPS: dict[str, Callable[[np.ndarray, float], np.ndarray]] = {
    "<=": np.less_equal,
    "<": np.less,
    ">=": np.greater_equal,
    ">": np.greater,
}
_NEGATION = {"<=": ">", "<": ">=", ">=": "<", ">": "<="}
_RULE = re.compile(r"^\s*([A-Za-z][A-Za-z _-]*?)\s*(<=|>=|<|>)\s*([0-9]*\.?[0-9]+)\s*(%?)\s*$")


@dataclass(frozen=True)
class ShareRule:
    """A rule on one class's fraction of a sample, e.g. ``Water<=0.9`` (``90%`` also read)."""

    cls: str
    op: Literal["<=", "<", ">=", ">"]
    value: float

    def __post_init__(self) -> None:
        if self.op not in _OPS:
            raise InputError(f"unknown comparison {self.op!r}; use one of {', '.join(_OPS)}")
        if not 0.0 <= self.value <= 1.0:
            raise InputError(f"class share rule {self}: the share must be in 0..1 (or 0..100 %)")
        object.__setattr__(self, "cls", CLASS_NAMES[class_index(self.cls)])

    @classmethod
    def parse(cls, text: str) -> ShareRule:
        """Read ``"Water<=0.9"``, ``"water <= 90%"``, ``"Built-up>=0.05"``."""
        m = _RULE.match(text)
        if m is None:
            raise InputError(
                f"cannot read class share rule {text!r}; write CLASS OP SHARE, e.g. "
                f"'Water<=0.9' or 'Tree>=5%' (classes: {', '.join(CLASS_NAMES)})"
            )
        name, op, number, pct = m.groups()
        value = float(number) / 100.0 if pct else float(number)
        try:
            return cls(name, op, value)  # type: ignore[arg-type]
        except ValueError as exc:  # class_index raises ValueError naming the valid classes
            raise InputError(f"class share rule {text!r}: {exc}") from None

    @property
    def column(self) -> str:
        """The per-sample scores column the rule reads (``frac_<class>``)."""
        return f"frac_{self.cls}"

    def __str__(self) -> str:
        return f"{self.cls}{self.op}{self.value:g}"

    def failure(self) -> str:
        """The reason recorded when a sample fails the rule, e.g. ``Water>0.9``."""
        return f"{self.cls}{_NEGATION[self.op]}{self.value:g}"


@dataclass(frozen=True)
class FilterConfig:
    """Resolved options of :func:`filter_synthetic` (saved as the run's ``config.yaml``)."""

    synthetic: str
    out: str
    scores: str | None = None
    model: str | None = None
    min_label_fidelity: float | None = None
    min_caption_consistency: float | None = None
    min_confidence: float | None = None
    class_share: tuple[str, ...] = ()
    mode: Mode = "manifest"
    on_missing: OnMissing = "fail"
    splits: tuple[str, ...] | None = None
    batch_size: int = 32
    workers: int = 0
    device: str = "auto"
    scores_sha256: str | None = None
    model_sha256: str | None = None
    rules: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise InputError(f"unknown mode {self.mode!r}; choose one of {', '.join(MODES)}")
        if self.on_missing not in ON_MISSING:
            raise InputError(
                f"unknown on_missing {self.on_missing!r}; choose one of {', '.join(ON_MISSING)}"
            )
        for name in ("min_label_fidelity", "min_caption_consistency"):
            v = getattr(self, name)
            if v is not None and not 0.0 <= v <= 1.0:
                raise InputError(f"{name} must be in 0..1, got {v}")
        if self.scores is not None and self.model is not None:
            raise InputError("give either scores (a per_sample.parquet) or a model, not both")
        if self.min_label_fidelity is not None and self.scores is None and self.model is None:
            raise InputError(
                "min_label_fidelity needs label-fidelity scores: pass --scores "
                "EVAL_DIR/per_sample.parquet (from `groundsynth evaluate synthetic --model ...`) "
                "or --model SEGMENTER.pt to score here"
            )
        shares = tuple(ShareRule.parse(r) for r in self.class_share)
        rules = [
            f"{name}>={value:g}"
            for name, value in (
                ("label_fidelity", self.min_label_fidelity),
                ("caption_consistency", self.min_caption_consistency),
                ("confidence", self.min_confidence),
            )
            if value is not None
        ] + [str(r) for r in shares]
        if not rules:
            raise InputError(
                "no filter rule given: set min_label_fidelity, min_caption_consistency, "
                "min_confidence or class_share (e.g. --min-label-fidelity 0.5)"
            )
        object.__setattr__(self, "class_share", tuple(str(r) for r in shares))
        object.__setattr__(self, "rules", tuple(rules))
        if self.batch_size < 1 or self.workers < 0:
            raise InputError(
                f"batch_size must be >= 1 and workers >= 0, got {self.batch_size}, {self.workers}"
            )
        if Path(self.out).resolve() == Path(self.synthetic).resolve():
            raise InputError(f"--out {self.out} is the dataset being filtered; choose a new folder")

    def checks(self) -> list[Check]:
        """The rules as :class:`Check` s, in the order given."""
        out: list[Check] = []
        for name, col, thr in (
            ("label_fidelity", "miou", self.min_label_fidelity),
            ("caption_consistency", "caption_consistency", self.min_caption_consistency),
            ("confidence", "confidence", self.min_confidence),
        ):
            if thr is not None:
                out.append(
                    Check(
                        f"{name}>={thr:g}",
                        name,
                        col,
                        lambda v, t=thr: v >= t - 1e-12,
                        f"{name}<{thr:g}",
                    )
                )
        for text in self.class_share:
            r = ShareRule.parse(text)
            out.append(
                Check(str(r), r.cls, r.column, lambda v, r=r: _OPS[r.op](v, r.value), r.failure())
            )
        return out


class Check(NamedTuple):
    """One rule: its text, the score it reads, ``passes(values) -> bool array``, and the
    reason recorded when a sample fails it (``<name>:missing`` when the score is missing)."""

    rule: str
    name: str
    column: str
    passes: Callable[[np.ndarray], np.ndarray]
    failure: str
