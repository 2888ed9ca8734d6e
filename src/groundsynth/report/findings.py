"""The findings of a report: the question, its answer per task and domain, the checks that
qualify the answer and what to run to tighten it, gathered from the run directories.

:func:`collect_findings` reads experiments (``experiment.json``: the paired differences and
the learning checks) and dataset manifests (spatial leakage); :mod:`.panel` renders the
result as the report's first section.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from groundsynth.experiment.learning import FD_RATIO, LABEL_FIDELITY_RATIO
from groundsynth.report.kinds import read_manifest

__all__ = [
    "QUESTION",
    "WORLDCOVER_CAVEAT",
    "Answer",
    "Check",
    "ExperimentFindings",
    "Findings",
    "answer_sentence",
    "collect_findings",
    "regime_name",
    "seeds_needed",
    "task_name",
]

QUESTION = (
    "Does grounded augmentation (synthetic images generated from land-cover maps, labelled "
    "with those maps) train a better land-cover segmenter than ungrounded augmentation "
    "(images generated without maps, labelled by a segmenter), in the region the models "
    "learn from and in another region?"
)

WORLDCOVER_CAVEAT = (
    "Land-cover labels come from ESA WorldCover, whose reported overall accuracy is about "
    "75–77 %. Every score computed against these maps (segmentation F1/IoU, caption↔map "
    "consistency, label fidelity) measures agreement with WorldCover, not with the ground: "
    "its label noise bounds what an IoU can mean."
)

Mark = Literal["pass", "warn"]

#: More seeds than this are not suggested: at such a spread the difference is too small to
#: matter.
MAX_SEEDS = 100


@dataclass(frozen=True)
class Check:
    """One qualification of the answer, marked ``pass`` or ``warn``."""

    mark: Mark
    title: str
    text: str


@dataclass(frozen=True)
class Answer:
    """The answer for one task and domain, in one sentence."""

    task: str
    domain: str
    sentence: str


@dataclass
class ExperimentFindings:
    name: str
    answers: list[Answer]
    #: models whose learning check failed: the conclusion is withheld when any
    failed: list[str]
    checks: list[Check]
    #: (command, why) pairs
    next_steps: list[tuple[str, str]]


@dataclass
class Findings:
    experiments: list[ExperimentFindings] = field(default_factory=list)
    #: checks of runs outside the experiments, then the WorldCover caveat
    checks: list[Check] = field(default_factory=list)
    #: which metric predicts what synthetic data adds: one answer per metric-utility run and
    #: domain (:mod:`.metric_utility`)
    utility: list[Answer] = field(default_factory=list)


# ----------------------------------------------------------------------------- answers
def task_name(comparison: str) -> str:
    """``real,synthetic/grounded:1.0  −  ...`` -> ``real + synthetic (100 % of A's real
    training set)``."""
    left = comparison.split("−")[0].strip()
    parts = left.split(",")
    budget = next((p.split(":", 1)[1] for p in parts if ":" in p), None)
    try:
        share = f" ({100 * float(budget):g} % of A's real training set)" if budget else ""
    except ValueError:
        return comparison
    what = "real + synthetic" if "real" in parts else "synthetic only"
    return what + share


def regime_name(regime: str) -> str:
    """``real,synthetic/grounded:1.0`` -> ``real + grounded synthetic (100 %)``."""
    names = []
    for part in regime.split(","):
        kind, _, budget = part.partition(":")
        name = kind.replace("synthetic/", "") + (
            " synthetic" if kind.startswith("synthetic/") else ""
        )
        try:
            names.append(name + (f" ({100 * float(budget):g} %)" if budget else ""))
        except ValueError:
            return regime
    return " + ".join(names)


def _range(values: list[float]) -> str:
    lo, hi = min(values), max(values)
    return f"{lo:.3f}" if f"{lo:.3f}" == f"{hi:.3f}" else f"{lo:.3f}–{hi:.3f}"


def _pts(x: float) -> str:
    return f"{100 * x:+.2f}"


def answer_sentence(d: dict[str, Any], what: str = "macro-F1 points", scale: float = 100.0) -> str:
    """One plain sentence for a grounded − ungrounded paired difference of fractions
    (``scale`` 100) or of percentages (``scale`` 1)."""
    mean, lo, hi = (
        float(d.get(k, math.nan)) * scale / 100 for k in ("mean", "ci95_low", "ci95_high")
    )
    n, wins = int(d.get("n", 0)), int(d.get("wins", 0))
    p = d.get("p_sign_flip")
    tail = f", sign-flip p = {float(p):.2f}" if p is not None else ""
    if mean != mean or n == 0:
        return "No seed was run under both regimes: no answer."
    if lo != lo or n < 2:
        return (
            f"One seed only: grounded − ungrounded = {_pts(mean)} {what}, with no confidence "
            "interval; no difference can be claimed."
        )
    ci = f"(95 % CI [{_pts(lo)}, {_pts(hi)}])"
    if lo <= 0 <= hi:
        return (
            f"No difference detectable at {n} seeds: grounded − ungrounded = {_pts(mean)} "
            f"{what} {ci}, grounded better in {wins} of {n} seeds{tail}."
        )
    if lo > 0:
        return (
            f"Grounded augmentation is better by {100 * mean:.2f} {what} {ci}, won {wins} of "
            f"{n} seeds{tail}."
        )
    return (
        f"Ungrounded augmentation is better by {-100 * mean:.2f} {what} {ci}; grounded won "
        f"{wins} of {n} seeds{tail}."
    )


def seeds_needed(d: dict[str, Any]) -> int | None:
    """Seeds for the 95 % t-interval to exclude 0 if the mean difference and its spread
    stay as observed; ``None`` when not estimable or beyond :data:`MAX_SEEDS`."""
    from scipy.stats import t

    mean, lo, hi = (float(d.get(k, math.nan)) for k in ("mean", "ci95_low", "ci95_high"))
    n = int(d.get("n", 0))
    if n < 2 or not all(map(math.isfinite, (mean, lo, hi))) or mean == 0:
        return None
    sd = (hi - lo) / 2 * math.sqrt(n) / float(t.ppf(0.975, n - 1))
    for m in range(2, MAX_SEEDS + 1):
        if float(t.ppf(0.975, m - 1)) * sd / math.sqrt(m) < abs(mean):
            return m
    return None


# ----------------------------------------------------------------------------- checks
def _learning_checks(learning: dict[str, Any]) -> list[Check]:
    checks = learning.get("checks") or []
    if not checks:
        return [
            Check(
                "warn",
                "Learning checks",
                "not recorded in this experiment (made by an older version): rerun it to learn "
                "whether every model beat its floor.",
            )
        ]
    out: list[Check] = []
    groups: dict[str, list[dict[str, Any]]] = {}
    for c in checks:
        words = str(c.get("model", "")).split(" ")
        if c.get("kind") == "segmenter" and len(words) >= 5 and words[-2] == "seed":
            groups.setdefault(" ".join(words[1:-2]), []).append(c)
        else:
            groups.setdefault(f"\0{len(groups)}", []).append(c)
    for key, group in groups.items():
        ok = sum(bool(c.get("passed")) for c in group)
        mark: Mark = "pass" if ok == len(group) else "warn"
        if not key.startswith("\0"):
            figs = [c["figure"] for c in group if c.get("figure") is not None]
            floors = [c["floor"] for c in group if c.get("floor") is not None]
            arch, _, regime = key.partition(" ")
            text = f"{ok} of {len(group)} seeds above the pixel floor"
            if figs and floors:
                text += f" (in-domain macro IoU {_range(figs)} against a floor of {_range(floors)})"
            title = f"Learning: segmenter {arch} trained on {regime_name(regime)}"
            out.append(Check(mark, title, text + "."))
            continue
        c = group[0]
        fig, floor = c.get("figure"), c.get("floor")
        nums = (
            f"{fig:.3f} against {floor:.3f}: "
            if isinstance(fig, (int, float)) and isinstance(floor, (int, float))
            else ""
        )
        verdict = "passed" if c.get("passed") else "failed"
        out.append(
            Check(mark, f"Learning: {c.get('model')}", f"{nums}{verdict} ({c.get('rule', '')}).")
        )
    return out


def _leakage(path: Path) -> tuple[int | None, int | None]:
    """(test patches touching a training patch, test patches) from a build manifest."""
    leak = (read_manifest(path).get("outputs") or {}).get("leakage") or {}
    return leak.get("test_patches_touching_train"), leak.get("test_patches")


def leakage_check(path: Path, name: str) -> Check:
    """Spatial leakage of a dataset, from its build manifest."""
    touching, tests = _leakage(path)
    if touching is None or tests is None:
        return Check(
            "warn",
            f"Spatial leakage, {name}",
            "not measured: its manifest records no leakage figures (an ARAS400k-layout or older "
            "dataset), so in-domain scores may be inflated by test patches next to training ones.",
        )
    if touching == 0:
        return Check(
            "pass",
            f"Spatial leakage, {name}",
            f"0 of {tests} test patches touch a training patch, so in-domain scores are not "
            "inflated by spatial leakage.",
        )
    return Check(
        "warn",
        f"Spatial leakage, {name}",
        f"{touching} of {tests} test patches touch a training patch: neighbouring patches share "
        "land cover and imagery, so in-domain scores are inflated (cross-region scores are not).",
    )


def _label_fidelity_check(fidelity: dict[str, Any]) -> Check:
    lf = (fidelity.get("grounded") or {}).get("label_fidelity") or {}
    syn = ((lf.get("synthetic") or {}).get("sample_miou") or {}).get("mean")
    ceiling = ((lf.get("real_reference") or {}).get("sample_miou") or {}).get("mean")
    title = "Label fidelity of the grounded set"
    if syn is None or not ceiling:
        return Check("warn", title, "not measured in this experiment.")
    share = syn / ceiling
    text = (
        f"grounded samples agree with their maps at mean mIoU {syn:.3f}; real images reach "
        f"{ceiling:.3f} with the same segmenter (the real ceiling): {100 * share:.0f} % of it "
        f"(at least {100 * LABEL_FIDELITY_RATIO:.0f} % passes)."
    )
    if share >= LABEL_FIDELITY_RATIO:
        return Check("pass", title, text)
    return Check("warn", title, text + " The maps describe these images only loosely.")


def _noise_checks(fidelity: dict[str, Any]) -> list[Check]:
    out = []
    for name, brief in fidelity.items():
        ff = (brief or {}).get("feature_fidelity") or {}
        fd = (ff.get("synthetic") or {}).get("frechet_distance")
        ref = (ff.get("real_halves") or {}).get("frechet_distance")
        title = f"Does the {name} set look like real images?"
        if not isinstance(fd, (int, float)) or not isinstance(ref, (int, float)) or ref <= 0:
            out.append(Check("warn", title, "not measured (no Fréchet distances recorded)."))
            continue
        text = (
            f"Fréchet distance {fd:.1f} on the segmenter's features, {fd / ref:.1f}× that "
            f"between two halves of the real set ({ref:.1f}; at most {FD_RATIO:g}× passes)."
        )
        if fd <= FD_RATIO * ref:
            out.append(Check("pass", title, text))
        else:
            out.append(
                Check(
                    "warn",
                    title,
                    text + " To the segmenter it looks more like noise than like real images; "
                    f"comparisons with it say little about {name} data in general.",
                )
            )
    return out


# ----------------------------------------------------------------------------- next steps
def _percent(budgets: Sequence[float]) -> str:
    return ",".join(f"{100 * float(b):g}%" for b in budgets)


def _config(path: Path) -> dict[str, Any]:
    """A run's resolved ``config.yaml`` (empty when missing or unreadable)."""
    import yaml

    try:
        cfg = yaml.safe_load((path / "config.yaml").read_text()) or {}
    except (OSError, yaml.YAMLError):
        return {}
    return cfg if isinstance(cfg, dict) else {}


def _seeds_step(res: dict[str, Any], base: str, path: Path) -> tuple[int, tuple[str, str]]:
    """How many seeds to run next, and the command that runs them."""
    seeds = len(res.get("seeds") or [])
    diffs = [d for d in res.get("differences") or [] if d.get("metric") == "f1"]
    unresolved = [
        d for d in diffs if not (float(d.get("ci95_low", math.nan)) > 0)
        and not (float(d.get("ci95_high", math.nan)) < 0)
    ]  # fmt: skip
    needed = [(m, d) for d in unresolved if (m := seeds_needed(d)) is not None]
    if needed:
        m, d = min(needed, key=lambda x: x[0])
        n = max(m, seeds + 1)
        why = (
            f"at the spread seen over {seeds} seeds, about {n} seeds would separate the most "
            f"promising difference ({task_name(d['comparison'])}, {d['domain']}: "
            f"{_pts(d['mean'])} points) from 0; smaller differences need more."
        )
    else:
        n = max(20, 2 * seeds)
        state = (
            "no difference seen so far is large enough to estimate how many it takes"
            if unresolved
            else "the differences already exclude 0"
        )
        why = f"more seeds narrow every interval (from 20 seeds the CI is a paired bootstrap); {state}."
    return n, (f"{base} --seeds {n} --out {path}-{n}seeds", why)


def _next_steps(
    res: dict[str, Any], path: Path, failed: bool, leaky: Path | None
) -> list[tuple[str, str]]:
    """(command, why) pairs, the most useful first: train longer when a model did not learn,
    rebuild region A without leakage, then more seeds."""
    base = (
        f"groundsynth experiment transfer --source {res.get('source', 'A')} --target "
        f"{res.get('target', 'B')} --budgets {_percent(res.get('budgets') or [1.0])}"
    )
    n, seeds_step = _seeds_step(res, base, path)
    steps = [seeds_step]
    preset = _config(path).get("preset")
    if preset != "full":
        gpu = (
            f"{base} --seeds {n} --preset full --device cuda --out {path}-full",
            f"paper-scale models and step budgets on a GPU (this run used the {preset or 'unknown'} "
            "preset)"
            + (
                "; the models that failed their learning check need them (on CPU: longer "
                "training with --max-epochs, --generator-steps, --diffusion-steps)."
                if failed
                else "."
            ),
        )
        steps.insert(0 if failed else 1, gpu)
    if leaky is not None:
        cfg = _config(leaky)
        sources = " ".join(f"-i {p}" for p in cfg.get("imagery") or ["IMAGERY"])
        sources += " " + " ".join(f"-l {p}" for p in cfg.get("landcover") or ["LANDCOVER"])
        steps.insert(
            1 if failed else 0,
            (
                f"groundsynth build {sources} --size {cfg.get('size', 256)} --buffer 1 "
                f"--out {leaky}-buffered",
                "rebuilds region A dropping the patches between training and test blocks, so "
                "that no test patch touches a training one; then rerun the experiment on it.",
            ),
        )
    return steps


# ----------------------------------------------------------------------------- collect
def _experiment(path: Path) -> tuple[ExperimentFindings, list[Path]]:
    res = json.loads((path / "experiment.json").read_text())
    diffs = res.get("differences") or []
    shown = [d for d in diffs if d.get("metric") == "f1"] or diffs
    answers = [
        Answer(task_name(str(d.get("comparison", ""))), str(d.get("domain", "")), answer_sentence(
            d, "macro-F1 points" if d.get("metric") == "f1" else f"{d.get('metric', '')} points"))
        for d in shown
    ]  # fmt: skip
    learning = res.get("learning") or {}
    failed = [c.get("model", "?") for c in learning.get("checks") or [] if not c.get("passed")]
    checks = _learning_checks(learning)
    from groundsynth.report.task_findings import (
        _captioning_answers,
        _captioning_check,
        _retrieval_answers,
        _retrieval_check,
    )

    retrieval = (res.get("tasks") or {}).get("retrieval")
    if retrieval:
        answers += _retrieval_answers(retrieval)
        checks.append(_retrieval_check(retrieval))
    captioning = (res.get("tasks") or {}).get("captioning")
    if captioning:
        answers += _captioning_answers(captioning)
        checks.append(_captioning_check(captioning))
    source = Path(res["source"]) if res.get("source") else None
    leaky = None
    if source is not None:
        checks.append(leakage_check(source, f"region A ({source.name})"))
        leaky = source if _leakage(source)[0] else None
    fidelity = res.get("fidelity") or {}
    checks.append(_label_fidelity_check(fidelity))
    checks += _noise_checks(fidelity)
    steps = _next_steps(res, path, bool(failed), leaky)
    regions = [Path(res[k]) for k in ("source", "target") if res.get(k)]
    return ExperimentFindings(path.name, answers, failed, checks, steps), regions


def collect_findings(paths: Sequence[Path], kinds: Sequence[str]) -> Findings:
    """The findings of the run directories ``paths`` (of the given kinds)."""
    found = Findings()
    regions_seen: set[Path] = set()  # an experiment's regions: checked there (A) or moot (B)
    for path, kind in zip(paths, kinds):
        if kind == "experiment":
            exp, regions = _experiment(path)
            found.experiments.append(exp)
            regions_seen.update(r.resolve() for r in regions)
        elif kind == "metric-utility":
            from groundsynth.report.metric_utility import utility_answers

            found.utility += [
                Answer(f"metric utility ({path.name})", domain, sentence)
                for domain, sentence in utility_answers(path)
            ]
    for path, kind in zip(paths, kinds):
        if kind == "dataset" and path.resolve() not in regions_seen:
            found.checks.append(leakage_check(path, f"dataset {path.name}"))
    found.checks.append(Check("warn", "WorldCover accuracy", WORLDCOVER_CAVEAT))
    return found
