"""Findings of the experiment's multimodal tasks (retrieval, captioning): one answer per
comparison and domain, and the learning check of their models (see :mod:`.findings`)."""

from __future__ import annotations

from typing import Any

from groundsynth.report.findings import Answer, Check, answer_sentence, task_name

__all__: list[str] = []


def _retrieval_answers(block: dict[str, Any]) -> list[Answer]:
    """Answers of the retrieval task (mean recall, percent); withheld when a run did not learn."""
    withheld = not (block.get("learning") or {}).get("passed", True)
    out = []
    for d in block.get("differences") or []:
        if d.get("metric") != "mean_recall":
            continue
        sentence = answer_sentence(d, "mR points", scale=1.0)
        if withheld:
            sentence = (
                "Withheld (a retrieval run did not beat its floor); numbers only: " + sentence
            )
        task = "image–text retrieval, " + task_name(str(d.get("comparison", "")))
        out.append(Answer(task, str(d.get("domain", "")), sentence))
    return out


def _captioning_answers(block: dict[str, Any]) -> list[Answer]:
    """Answers of the captioning task (CIDEr-D, fractions); withheld when a run did not learn."""
    withheld = not (block.get("learning") or {}).get("passed", True)
    out = []
    for d in block.get("differences") or []:
        if d.get("metric") != "cider":
            continue
        sentence = answer_sentence(d, "CIDEr points")
        if withheld:
            sentence = (
                "Withheld (a captioning run did not beat its floor); numbers only: " + sentence
            )
        out.append(Answer("image captioning, " + task_name(str(d.get("comparison", ""))),
                          str(d.get("domain", "")), sentence))  # fmt: skip
    return out


def _captioning_check(block: dict[str, Any]) -> Check:
    learning = block.get("learning") or {}
    title = "Learning: captioners"
    if learning.get("passed", False):
        return Check(
            "pass",
            title,
            "every run beat the most frequent caption (CIDEr-D and consistency with the "
            "maps) and its untrained model.",
        )
    missed = learning.get("not_learned") or []
    return Check(
        "warn", title,
        f"{len(missed)} run(s) did not beat the most frequent training caption (CIDEr-D and "
        "consistency with the maps) and their "
        "untrained model: " + "; ".join(missed[:6]) + ("; …" if len(missed) > 6 else "") + ".",
    )  # fmt: skip


def _retrieval_check(block: dict[str, Any]) -> Check:
    learning = block.get("learning") or {}
    chance = block.get("chance_mean_recall") or {}
    floors = ", ".join(f"{k} {v:.1f}" for k, v in chance.items())
    if learning.get("passed", False):
        return Check("pass", "Learning: retrieval dual encoders",
                     f"every run beat chance (mR {floors}) and its untrained model.")  # fmt: skip
    missed = learning.get("not_learned") or []
    return Check(
        "warn", "Learning: retrieval dual encoders",
        f"{len(missed)} run(s) did not beat chance (mR {floors}) and their untrained model: "
        + "; ".join(missed[:6]) + ("; …" if len(missed) > 6 else "") + ".",
    )  # fmt: skip
