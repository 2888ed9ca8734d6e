"""The findings panel: the report's first section (``id="findings"``).

It states the question, answers it per task and domain in one sentence each, lists the
checks that qualify the answer with a pass / warn mark, and names the commands that would
tighten it. When a model failed its learning check the panel says the conclusion is
withheld; the numbers stay visible.
"""

from __future__ import annotations

from groundsynth.report.findings import QUESTION, Check, ExperimentFindings, Findings
from groundsynth.report.html import Page, esc

__all__ = ["FINDINGS_ID", "findings_section"]

#: Element id of the panel.
FINDINGS_ID = "findings"

_MARKS = {"pass": "✓ pass", "warn": "⚠ warn"}


def _checks_html(checks: list[Check]) -> str:
    items = "".join(
        f'<li class="check" data-mark="{c.mark}"><span class="mark {c.mark}">{_MARKS[c.mark]}</span>'
        f"<strong>{esc(c.title)}{'' if c.title.endswith('?') else ':'}</strong> {esc(c.text)}</li>"
        for c in checks
    )
    return f'<ul class="checks">{items}</ul>'


def _experiment_html(page: Page, exp: ExperimentFindings, extra: list[Check], many: bool) -> None:
    if many:
        page.heading(f"Experiment {exp.name}", level=3)
    if exp.failed:
        page.raw(
            '<div class="note warning withheld">⚠ <strong>Conclusion withheld</strong>: '
            f"{len(exp.failed)} learning check{'s' if len(exp.failed) > 1 else ''} failed ("
            + esc("; ".join(exp.failed))
            + "). The comparison is one of models that did not learn more than their floor, "
            "not of grounded and ungrounded data: the numbers below are shown, but they do not "
            "answer the question.</div>"
        )
    page.heading("Answer" + (" (withheld: numbers only)" if exp.failed else ""), level=4)
    if exp.answers:
        page.raw(
            '<ul class="answers">'
            + "".join(
                f'<li class="answer"><strong>{esc(a.task)}, {esc(a.domain)}:</strong> '
                f"{esc(a.sentence)}</li>"
                for a in exp.answers
            )
            + "</ul>"
        )
    else:
        page.paragraph("The experiment recorded no paired difference.", cls="answer")
    page.heading("What qualifies it", level=4)
    page.raw(_checks_html(exp.checks + extra))
    page.heading("To tighten it", level=4)
    page.raw(
        '<ul class="next">'
        + "".join(f"<li><code>{esc(cmd)}</code>: {esc(why)}</li>" for cmd, why in exp.next_steps)
        + "</ul>"
    )


def _utility_html(page: Page, findings: Findings) -> None:
    """One line per metric-utility run and domain: which metric predicts what synthetic data
    adds."""
    if not findings.utility:
        return
    page.heading("Which metric predicts what synthetic data adds?", level=4)
    page.raw(
        '<ul class="answers utility">'
        + "".join(
            f'<li class="answer"><strong>{esc(a.task)}, {esc(a.domain)}:</strong> '
            f"{esc(a.sentence)}</li>"
            for a in findings.utility
        )
        + "</ul>"
    )


def findings_section(page: Page, findings: Findings) -> None:
    """Open the panel as a new section of ``page`` (call it first) and fill it."""
    page.section("Findings", anchor=FINDINGS_ID, cls="findings")
    page.raw(f'<p class="question"><strong>Question:</strong> {esc(QUESTION)}</p>')
    exps = findings.experiments
    if len(exps) == 1:
        _experiment_html(page, exps[0], findings.checks, many=False)
        _utility_html(page, findings)
        return
    for exp in exps:
        _experiment_html(page, exp, [], many=True)
    if not exps:
        page.raw(
            '<p class="answer">No experiment among these run directories answers it. Run '
            "<code>groundsynth experiment transfer --source A --target B --out EXP</code> and "
            "add EXP to the report.</p>"
        )
    _utility_html(page, findings)
    page.heading("What qualifies " + ("them" if exps else "these runs"), level=4)
    page.raw(_checks_html(findings.checks))
