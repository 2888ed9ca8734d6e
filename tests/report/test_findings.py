"""The findings panel: sentences, checks and next steps from the run directories."""

from __future__ import annotations

import re

from groundsynth.report import FINDINGS_ID, make_report
from groundsynth.report.findings import (
    answer_sentence,
    collect_findings,
    leakage_check,
    regime_name,
    seeds_needed,
    task_name,
)
from tests.report.fake_runs import fake_dataset, fake_experiment


def _d(mean, lo, hi, n=3, wins=2, p=0.5):
    return {"mean": mean, "ci95_low": lo, "ci95_high": hi, "n": n, "wins": wins, "p_sign_flip": p}


def test_answer_sentences_in_plain_words():
    s = answer_sentence(_d(0.01, -0.02, 0.04))
    assert s.startswith("No difference detectable at 3 seeds")
    assert "+1.00 macro-F1 points (95 % CI [-2.00, +4.00])" in s and "2 of 3 seeds" in s
    s = answer_sentence(_d(0.05, 0.01, 0.09, wins=3, p=0.25))
    assert s == (
        "Grounded augmentation is better by 5.00 macro-F1 points (95 % CI [+1.00, +9.00]), "
        "won 3 of 3 seeds, sign-flip p = 0.25."
    )
    assert answer_sentence(_d(-0.05, -0.09, -0.01, wins=0)).startswith(
        "Ungrounded augmentation is better by 5.00"
    )
    assert answer_sentence(_d(0.02, float("nan"), float("nan"), n=1)).startswith("One seed only")


def test_names_of_tasks_and_regimes():
    pair = "real,synthetic/grounded:0.1  −  real,synthetic/ungrounded:0.1"
    assert task_name(pair) == "real + synthetic (10 % of A's real training set)"
    assert task_name("synthetic/grounded:1.0  −  synthetic/ungrounded:1.0").startswith(
        "synthetic only (100 %"
    )
    assert regime_name("real,synthetic/grounded:1.0") == "real + grounded synthetic (100 %)"


def test_seeds_needed_grows_as_the_difference_shrinks():
    big, small = seeds_needed(_d(0.02, -0.01, 0.05)), seeds_needed(_d(0.005, -0.025, 0.035))
    assert big is not None and small is not None and 3 < big < small
    assert seeds_needed(_d(0.0, -0.01, 0.01)) is None
    assert seeds_needed(_d(0.01, float("nan"), float("nan"), n=1)) is None


def test_leakage_check_reads_the_manifest(tmp_path):
    ok = leakage_check(fake_dataset(tmp_path / "a", 20, leakage=(0, 5)), "A")
    bad = leakage_check(fake_dataset(tmp_path / "b", 20, leakage=(3, 5)), "B")
    unknown = leakage_check(fake_dataset(tmp_path / "c", 20, leakage=None), "C")
    assert ok.mark == "pass" and "0 of 5 test patches" in ok.text
    assert bad.mark == "warn" and "3 of 5" in bad.text and "inflated" in bad.text
    assert unknown.mark == "warn" and "not measured" in unknown.text


def test_findings_of_an_experiment(tmp_path):
    a = fake_dataset(tmp_path / "A", 50, leakage=(2, 10))
    b = fake_dataset(tmp_path / "B", 50)
    exp = fake_experiment(tmp_path / "exp", a, b, synthetic_n=20)
    found = collect_findings([exp, a, b], ["experiment", "dataset", "dataset"])
    (e,) = found.experiments
    assert [x.domain for x in e.answers] == ["in-domain (A test)", "cross-region (B)"]
    assert e.failed  # the made-up real segmenters did not beat their floor
    titles = {c.title: c.mark for c in e.checks}
    assert titles["Spatial leakage, region A (A)"] == "warn"
    assert titles["Label fidelity of the grounded set"] == "warn"  # 0.36 / 0.545 < 0.7
    assert titles["Does the grounded set look like real images?"] == "pass"
    assert titles["Does the ungrounded set look like real images?"] == "warn"
    # the experiment's regions are not checked twice
    assert [c.title for c in found.checks] == ["WorldCover accuracy"]
    # a model did not learn: train it properly first; then rebuild A without leakage; seeds
    gpu, rebuild, seeds = (cmd for cmd, _ in e.next_steps)
    assert "--preset full --device cuda" in gpu
    assert rebuild.startswith("groundsynth build -i ") and "--buffer 1" in rebuild
    assert "--seeds" in seeds and "--preset" not in seeds
    ok = fake_experiment(tmp_path / "ok", b, a, learned=True, synthetic_n=20)
    (e,) = collect_findings([ok], ["experiment"]).experiments
    warned = [c.title for c in e.checks if c.mark == "warn"]
    assert not e.failed and warned == ["Does the ungrounded set look like real images?"]
    assert "--seeds" in e.next_steps[0][0] and "--preset full" in e.next_steps[1][0]


def test_panel_opens_the_page(tmp_path):
    a = fake_dataset(tmp_path / "A", 50)
    b = fake_dataset(tmp_path / "B", 50)
    exp = fake_experiment(tmp_path / "exp", a, b, synthetic_n=20)
    page = make_report([a, exp], tmp_path / "r.html").read_text()
    sections = re.findall(r'<section id="([^"]+)"', page)
    assert sections[0] == FINDINGS_ID
    assert page.index(f'id="{FINDINGS_ID}"') < page.index("<h2", page.index("<h2") + 1)
    panel = page[page.index(f'id="{FINDINGS_ID}"') : page.index("</section>")]
    assert "Conclusion withheld" in panel and "95 % CI" in panel
    ok = fake_experiment(tmp_path / "exp_ok", a, b, learned=True, synthetic_n=20)
    page = make_report([ok], tmp_path / "ok.html").read_text()
    panel = page[page.index(f'id="{FINDINGS_ID}"') : page.index("</section>")]
    assert "Conclusion withheld" not in panel and "Grounded augmentation is better by" in panel


def test_panel_without_an_experiment(tmp_path):
    ds = fake_dataset(tmp_path / "ds", 30, captions=False, leakage=(1, 3))
    page = make_report([ds], tmp_path / "r.html").read_text()
    panel = page[page.index(f'id="{FINDINGS_ID}"') : page.index("</section>")]
    assert "No experiment among these run directories answers it" in panel
    assert "1 of 3 test patches touch a training patch" in panel
    assert "no captions in this dataset" in page


def _retrieval_block(passed: bool) -> dict:
    pair = "real,synthetic/grounded:1.0  −  real,synthetic/ungrounded:1.0"
    diffs = [
        {**_d(6.0, 2.0, 10.0, wins=3, p=0.25), "comparison": pair, "domain": d, "metric": m}
        for d in ("in-domain (A test)", "cross-region (B)") for m in ("mean_recall", "t2i_r10")
    ]  # fmt: skip
    table = [
        {"regime": r, "domain": d, "n_seeds": 3,
         **{f"{m}_{k}": v for m in ("mean_recall", "i2t_r10", "t2i_r10")
            for k, v in (("mean", 41.25), ("ci95_low", 38.5), ("ci95_high", 44.0))}}
        for r in ("real", pair.split("  ")[0]) for d in ("in-domain (A test)", "cross-region (B)")
    ]  # fmt: skip
    return {
        "metrics": ["mean_recall", "i2t_r10", "t2i_r10"], "table": table, "differences": diffs,
        "chance_mean_recall": {"real/test": 17.3, "synthetic/target": 15.9},
        "learning": {"passed": passed, "not_learned": [] if passed else ["real/seed1 on real/test"]},
        "captions": {"real": "maps", "grounded": "maps", "ungrounded": "pseudo-labels"},
    }  # fmt: skip


def test_retrieval_answers_checks_and_section(tmp_path):
    import json

    a = fake_dataset(tmp_path / "A", 50)
    b = fake_dataset(tmp_path / "B", 50)
    for passed in (True, False):
        exp = fake_experiment(tmp_path / f"exp{passed}", a, b, learned=True, synthetic_n=20)
        doc = json.loads((exp / "experiment.json").read_text())
        doc["tasks"] = {"retrieval": _retrieval_block(passed)}
        (exp / "experiment.json").write_text(json.dumps(doc))
        (e,) = collect_findings([exp], ["experiment"]).experiments
        answers = [x for x in e.answers if x.task.startswith("image–text retrieval")]
        assert [x.domain for x in answers] == ["in-domain (A test)", "cross-region (B)"]
        sentence = (
            "Grounded augmentation is better by 6.00 mR points (95 % CI [+2.00, +10.00]), won 3 "
            "of 3 seeds, sign-flip p = 0.25."
        )
        check = {c.title: c for c in e.checks}["Learning: retrieval dual encoders"]
        if passed:
            assert answers[0].sentence == sentence and check.mark == "pass"
            assert "real/test 17.3" in check.text
        else:
            assert answers[0].sentence.startswith("Withheld") and answers[0].sentence.endswith(
                sentence
            )
            assert check.mark == "warn" and "real/seed1 on real/test" in check.text
        html = make_report([exp], tmp_path / f"r{passed}.html").read_text()
        assert "Image–text retrieval (CLIP-style dual encoder)" in html
        assert "41.2 [38.5, 44.0]" in html and "+6.00 [+2.00, +10.00]" in html
        assert ("did not beat chance and their untrained model" in html) is not passed


def test_the_report_says_how_the_two_generators_differ():
    from groundsynth.report.experiment import _family_note

    same = _family_note({"family": "diffusion"})
    assert same == " Both are the same diffusion U-Net; only the map input differs."
    plain = {"grounded": {"mean_prior": True}, "ungrounded": {"cascade_size": None}}
    assert _family_note({"family": "diffusion", "generator_models": plain}) == same
    cascade = {"family": "diffusion", "generator_models": {"ungrounded": {"cascade_size": 8}}}
    note = _family_note(cascade)
    assert "from a 8 px base model's sample" in note and "same diffusion U-Net" not in note
    assert "confounded" in _family_note({**cascade, "family": "gan"})
