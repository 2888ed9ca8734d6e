"""The report's section of a metric-utility run (``experiment metric-utility`` output): which
interpretable metric of a synthetic set predicts what the set adds to real training data.

Per domain: the answer in one sentence (:func:`utility_answers`, also shown in the findings
panel), every metric's rank correlations with the gain, the scatter plot the run wrote
(:func:`~groundsynth.experiment.utility_plots.scatter_name`); then the sets and their gains.
Everything is read from ``metric_utility.json``; missing values (``null``) show as ``–``.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from groundsynth.experiment.utility_plots import GAIN_SCALE, format_rho, scatter_name
from groundsynth.report.html import Page
from groundsynth.report.thumbs import plot_file

__all__ = ["RESULT_FILE", "answer_sentence", "metric_utility_section", "utility_answers"]

#: The file that marks a metric-utility run directory.
RESULT_FILE = "metric_utility.json"

#: At most this many sets are listed.
MAX_SETS = 80


def _num(value: Any) -> float:
    try:
        return float(value) if value is not None else math.nan
    except (TypeError, ValueError):
        return math.nan


def _label(metrics: dict[str, Any], name: str) -> str:
    return str((metrics.get(name) or {}).get("label") or name)


def _direction(metrics: dict[str, Any], name: str) -> float:
    return _num((metrics.get(name) or {}).get("direction"))


def _clause(what: str, best: dict[str, Any], n_sets: int | None) -> str:
    """``what, ρ = 0.71 [0.35, 0.90] over 12 sets[: qualification]; LOGO ...``."""
    rho, lo, hi = (_num(best.get(k)) for k in ("oriented_spearman", "ci95_low", "ci95_high"))
    if not math.isfinite(rho):
        return f"{what}, with no rank correlation computed"
    at = f"{n_sets} sets" if n_sets else "this number of sets"
    text = f"{what}, ρ = {format_rho(rho, lo, hi)}" + (f" over {n_sets} sets" if n_sets else "")
    if not (math.isfinite(lo) and math.isfinite(hi)):
        text += f", with no confidence interval: at {at} it cannot be told from no correlation"
    elif lo <= 0 <= hi:
        text += f": its 95 % CI includes 0, so at {at} it cannot be told from no correlation"
    elif hi < 0:
        text += ": it ranks the sets opposite to its stated direction"
    logo = _num(best.get("logo_concordance"))
    again = _num(best.get("logo_concordance_reselected"))
    if math.isfinite(logo):
        text += f"; on generators left out it holds at LOGO concordance {logo:.2f}"
        if math.isfinite(again):
            text += f" ({again:.2f} with the choice redone without that generator"
            text += "; 0.5 = chance)"
        else:
            text += " (0.5 = chance)"
    return text


def answer_sentence(doc: dict[str, Any], domain: str) -> str:
    """The answer for ``domain``: its best single predictor and best pair of metrics, each with
    its oriented Spearman ρ, 95 % CI and leave-one-generator-out concordance."""
    metrics = doc.get("metrics") or {}
    best = (doc.get("best") or {}).get(domain) or {}
    single = best.get("single") or {}
    if not single.get("metric"):
        return f"No best predictor for {domain}: no metric's rank correlation was computed."
    n_sets = next(
        (
            int(c["n_sets"])
            for c in doc.get("correlations") or []
            if c.get("domain") == domain
            and c.get("metric") == single["metric"]
            and isinstance(c.get("n_sets"), (int, float))
        ),
        None,
    )

    def named(name: str) -> str:
        lower = _direction(metrics, name) < 0
        return _label(metrics, name) + (" (lower is better)" if lower else "")

    sentence = _clause(f"Best single predictor: {named(single['metric'])}", single, n_sets)
    within = next(
        (
            _num(c.get("within_generator"))
            for c in doc.get("correlations") or []
            if c.get("domain") == domain and c.get("metric") == single["metric"]
        ),
        math.nan,
    )
    if math.isfinite(within):
        sentence += (
            f"; among the sets of one generator (its checkpoints and variants) it orders them at "
            f"ρ = {within:.2f} on average"
        )
    pair = best.get("combination") or {}
    if pair.get("metrics"):
        what = "Best pair (mean of their oriented ranks): " + " + ".join(
            named(str(m)) for m in pair["metrics"]
        )
        sentence += ". " + _clause(what, pair, None)
    return sentence + "."


def _load(path: Path) -> dict[str, Any]:
    doc = json.loads((path / RESULT_FILE).read_text())
    return doc if isinstance(doc, dict) else {}


def _domains(doc: dict[str, Any]) -> list[str]:
    found = [str(d) for d in doc.get("domains") or []]
    found += [str(u.get("domain")) for u in doc.get("utility") or [] if u.get("domain")]
    return list(dict.fromkeys(found))


def utility_answers(path: Path) -> list[tuple[str, str]]:
    """(domain, answer sentence) of the metric-utility run in ``path``, per domain."""
    doc = _load(path)
    return [(d, answer_sentence(doc, d)) for d in _domains(doc)]


def _percent(value: Any) -> str:
    v = 100 * _num(value)
    return f"{v:.2f} %" if math.isfinite(v) else "n/a"


def _points(mean: Any, lo: Any, hi: Any) -> str:
    """A gain in points with its CI: ``+1.23 [-0.40, +2.80]``."""
    m, low, high = (GAIN_SCALE * _num(v) for v in (mean, lo, hi))
    if not math.isfinite(m):
        return "–"
    if not (math.isfinite(low) and math.isfinite(high)):
        return f"{m:+.2f}"
    return f"{m:+.2f} [{low:+.2f}, {high:+.2f}]"


def _correlation_rows(doc: dict[str, Any], domain: str) -> list[list[Any]]:
    metrics = doc.get("metrics") or {}
    rows = [c for c in doc.get("correlations") or [] if c.get("domain") == domain]

    def key(c: dict[str, Any]) -> tuple[bool, float]:
        v = _num(c.get("oriented_spearman"))
        return (bool(c.get("constant")) or not math.isfinite(v), -v if math.isfinite(v) else 0.0)

    out = []
    for c in sorted(rows, key=key):
        name = str(c.get("metric"))
        d = _num(c.get("direction", (metrics.get(name) or {}).get("direction")))
        gens = c.get("logo_generators")
        const = bool(c.get("constant"))
        out.append([
            _label(metrics, name), "higher" if d > 0 else "lower" if d < 0 else "–",
            c.get("n_sets", "–"),
            "constant" if const else format_rho(c.get("spearman"), c.get("spearman_ci95_low"),
                                                c.get("spearman_ci95_high")),
            _num(c.get("spearman_p")),
            "constant" if const else format_rho(c.get("kendall"), c.get("kendall_ci95_low"),
                                                c.get("kendall_ci95_high")),
            _num(c.get("kendall_p")), _num(c.get("oriented_spearman")),
            _num(c.get("logo_concordance")),
            len(gens) if isinstance(gens, list) else "–" if gens is None else gens,
            _num(c.get("within_generator")),
        ])  # fmt: skip
    return out


def _sets_rows(doc: dict[str, Any], domains: list[str]) -> tuple[list[list[Any]], list[str]]:
    metrics = list(doc.get("metrics") or {})
    gain = {(u.get("set"), u.get("domain")): u for u in doc.get("utility") or []}
    rows = []
    for s in (doc.get("sets") or [])[:MAX_SETS]:
        row = [s.get("set"), s.get("generator", "–"), s.get("kind", "–"), s.get("step", "–"),
               "yes" if s.get("filtered") else "no", "yes" if s.get("targeted") else "no",
               s.get("n", "–")]  # fmt: skip
        for d in domains:
            u = gain.get((s.get("set"), d)) or {}
            row.append(_points(u.get("gain_mean"), u.get("gain_ci95_low"), u.get("gain_ci95_high")))
        row += [_num(s.get(m)) for m in metrics]
        rows.append(row)
    header = ["set", "generator", "kind", "step", "filtered", "targeted", "samples"]
    header += [f"gain {d} [95 % CI]" for d in domains] + metrics
    return rows, header


def metric_utility_section(page: Page, path: Path) -> None:
    doc = _load(path)
    metrics = doc.get("metrics") or {}
    domains = _domains(doc)
    sets = doc.get("sets") or []
    key = str(doc.get("utility_metric") or "iou").lower()
    what = {"iou": "IoU", "f1": "F1"}.get(key, key)
    page.heading(f"Metric utility: {path.name}")
    gens = sorted({str(s.get("generator")) for s in sets if s.get("generator") is not None})
    page.paragraph(
        f"{doc.get('question') or 'Do the metrics predict what synthetic data adds?'} "
        f"{len(sets)} synthetic sets from {len(gens)} generator(s) ({', '.join(gens)}); the "
        f"utility of a set is the gain in {doc.get('task', 'segmentation')} {what} "
        f"{'(and in retrieval mean recall) ' if 'retrieval' in (doc.get('tasks') or []) else ''}of real + set "
        f"over real alone, per seed ({len(doc.get('seeds') or [])} seeds) and domain, in points."
    )
    base = doc.get("baseline") or {}
    key = f"{key}_mean"
    if base:
        page.paragraph(
            f"Real alone, mean {what}: "
            + "; ".join(
                f"{d} {_percent((b or {}).get(key))} ({(b or {}).get('n_seeds', '?')} seeds)"
                for d, b in base.items()
            )
            + "."
        )
    if metrics:
        page.bullets(
            f"{_label(metrics, m)} ({'higher' if _direction(metrics, m) > 0 else 'lower'} is "
            f"better): {meta.get('description') or m}"
            for m, meta in metrics.items()
        )
    for domain in domains:
        page.heading(domain, level=3)
        page.paragraph(answer_sentence(doc, domain), cls="answer")
        rows = _correlation_rows(doc, domain)
        if rows:
            page.table(
                rows,
                ["metric", "better", "sets", "Spearman ρ [95 % CI]", "p", "Kendall τ [95 % CI]",
                 "p", "oriented ρ", "LOGO concordance", "LOGO generators",
                 "oriented ρ within generators"],
                left=2, digits=2,
            )  # fmt: skip
        scatter = path / scatter_name(domain)
        if scatter.is_file():
            mime, data = plot_file(scatter)
            page.image(
                data,
                f"{domain}: each metric against the mean gain in "
                f"{'mean recall' if domain.startswith('retrieval') else what} points of real + set over "
                "real alone (bars: 95 % CI over seeds). Colour: generator; marker: filtered / "
                "targeted. Panel titles: Spearman ρ [95 % CI].",
                mime=mime,
            )
        else:
            page.paragraph(f"No scatter plot: {scatter.name} is not in {path}.", cls="muted")
    page.paragraph(
        "ρ, τ: Spearman and Kendall rank correlations between a metric and the mean gain over "
        "the sets, with 95 % CIs. Oriented ρ: ρ times the metric's direction (+1 when higher is "
        "better, −1 when lower is), so that a positive value means the metric ranks the sets "
        "the way it claims to; the table is sorted by it and the best predictors are chosen by "
        "it. LOGO concordance (leave one generator out): the share of the pairs of sets involving "
        "a generator's sets that the metric orders as their gains are ordered (0.5 = chance, "
        "1 = always). The best metric and the best pair are picked on the same sets, which "
        "flatters their ρ; the LOGO figure with the choice redone without the generator held "
        "out does not carry that bias.",
        cls="muted",
    )
    if sets:
        page.heading("The sets", level=3)
        rows, header = _sets_rows(doc, domains)
        if len(sets) > MAX_SETS:
            page.paragraph(f"First {MAX_SETS} of {len(sets)} sets; all are in {path / 'sets.csv'}.",
                           cls="muted")  # fmt: skip
        page.table(rows, header, left=3, digits=3)
    for note in doc.get("notes") or []:
        page.paragraph(str(note), cls="muted")
