"""The metric-utility run in the report: its scatter plots, its section and its findings line,
on a made-up run (:func:`tests.report.fake_runs.fake_metric_utility`)."""

from __future__ import annotations

import base64
import html
import json
import re

import pandas as pd
import pytest
from PIL import Image

from groundsynth.errors import InputError
from groundsynth.experiment.utility_plots import (
    DPI,
    LEGEND_INCHES,
    PANEL_INCHES,
    grid_shape,
    panel_title,
    scatter_name,
    scatter_path,
    write_scatter,
)
from groundsynth.report import detect_kind, make_report
from tests.report.fake_runs import (
    FAKE_UTILITY_DOMAINS,
    fake_dataset,
    fake_experiment,
    fake_metric_utility,
)

IN, CROSS = FAKE_UTILITY_DOMAINS
NO_CORRELATION = "cannot be told from no correlation"


def _tables(run):
    doc = json.loads((run / "metric_utility.json").read_text())
    return (
        pd.read_csv(run / "sets.csv"),
        pd.read_csv(run / "utility.csv"),
        pd.read_csv(run / "correlations.csv"),
        doc["metrics"],
    )


def _pixels(n_metrics: int) -> tuple[int, int]:
    rows, cols = grid_shape(n_metrics)
    width, height = PANEL_INCHES
    return round(cols * width * DPI), round((rows * height + LEGEND_INCHES) * DPI)


@pytest.fixture(scope="module")
def pages(tmp_path_factory):
    """Reports of a run whose cross-region answer cannot be told from none (``open``, with its
    scatter plots) and of one where every answer is resolved (``resolved``, no plots)."""
    tmp = tmp_path_factory.mktemp("metric_utility")
    run = fake_metric_utility(tmp / "mu")
    sets, utility, correlations, metrics = _tables(run)
    for domain in FAKE_UTILITY_DOMAINS:
        write_scatter(sets, utility, correlations, metrics, domain, scatter_path(run, domain))
    resolved = fake_metric_utility(tmp / "mu_resolved", resolved=True)
    return {
        "run": run,
        "open": make_report([run], tmp / "open.html").read_text(),
        "resolved": make_report([resolved], tmp / "resolved.html").read_text(),
    }


def _section(page: str, anchor: str) -> str:
    start = page.index(f'<section id="{anchor}"')
    return page[start : page.index("</section>", start)]


def _answers(page: str, anchor: str) -> list[str]:
    """The answer paragraphs of the run's section, in domain order, unescaped."""
    body = _section(page, anchor)
    return [html.unescape(a) for a in re.findall(r'<p class="answer">(.*?)</p>', body)]


def _text(markup: str) -> str:
    """``markup`` without its tags, unescaped."""
    return html.unescape(re.sub(r"<[^>]+>", "", markup))


def _rows(table: str) -> list[list[str]]:
    """The body cells of the first table in ``table``, row by row."""
    body = table[table.index("<tbody>") : table.index("</tbody>")]
    return [re.findall(r"<td[^>]*>(.*?)</td>", r) for r in re.findall(r"<tr>(.*?)</tr>", body)]


# ----------------------------------------------------------------------------- kinds
def test_kind_detected_before_experiment_and_table(pages, tmp_path):
    assert detect_kind(pages["run"]) == "metric-utility"
    both = fake_metric_utility(tmp_path / "both")
    (both / "experiment.json").write_text("{}")
    (both / "results.csv").write_text("a\n1\n")
    assert detect_kind(both) == "metric-utility"
    (both / "metric_utility.json").unlink()
    assert detect_kind(both) == "experiment"


# ----------------------------------------------------------------------------- scatter
def test_scatter_file_names():
    assert scatter_name(IN) == "scatter_in-domain-a-test.png"
    assert scatter_name(CROSS) == "scatter_cross-region-b.png"


def test_scatter_png_has_a_panel_per_metric(pages, tmp_path):
    run = pages["run"]
    for domain in FAKE_UTILITY_DOMAINS:
        with Image.open(run / scatter_name(domain)) as im:
            assert im.format == "PNG"
            assert im.size == _pixels(4) == (1280, 350)  # 4 metrics: one row of 4
    assert not [p.name for p in run.iterdir() if p.name.startswith(".")]  # no temporary left
    sets, utility, correlations, metrics = _tables(run)
    five = {**metrics, "extra": {"direction": -1, "label": "extra"}}
    sets["extra"] = range(len(sets))
    out = write_scatter(sets, utility, correlations, five, CROSS, tmp_path / "five.png")
    with Image.open(out) as im:
        assert im.size == _pixels(5) == (1280, 630)  # 5 metrics: two rows of 4


def test_scatter_rejects_an_unknown_domain_or_metric(pages, tmp_path):
    sets, utility, correlations, metrics = _tables(pages["run"])
    with pytest.raises(InputError, match="'elsewhere'.*cross-region"):
        write_scatter(sets, utility, correlations, metrics, "elsewhere", tmp_path / "x.png")
    with pytest.raises(InputError, match="missing_metric"):
        write_scatter(sets, utility, correlations, {"missing_metric": {}}, IN, tmp_path / "x.png")
    assert not list(tmp_path.iterdir())


def test_panel_titles():
    row = {"spearman": 0.62, "spearman_ci95_low": 0.1, "spearman_ci95_high": 0.9, "constant": False}
    assert panel_title("FD", row) == "FD\nρ = 0.62 [0.10, 0.90]"
    assert panel_title("FD", {**row, "constant": True}) == "FD\nconstant"
    assert panel_title("FD", row, constant=True) == "FD\nconstant"
    assert panel_title("FD", {**row, "spearman_ci95_low": None}) == "FD\nρ = 0.62"
    assert panel_title("FD", None) == "FD\nρ n/a"


# ----------------------------------------------------------------------------- section
def test_answer_sentences_state_the_best_predictors(pages):
    in_domain, cross = _answers(pages["open"], "metric-utility-mu")
    assert (
        "Best single predictor: label fidelity (pixel floor), ρ = 0.71 [0.35, 0.90] over 12 sets"
        in in_domain
    )
    assert "LOGO concordance 0.78 (0.72 with the choice redone" in in_domain
    assert (
        "label fidelity (pixel floor) + FD (segmenter features) (lower is better), ρ = 0.80 [0.50, 0.93]"
        in in_domain
    )
    assert NO_CORRELATION not in in_domain
    assert (
        "Best single predictor: FD (segmenter features) (lower is better), ρ = 0.31 [-0.25, 0.72]"
        in cross
    )
    assert f"so at 12 sets it {NO_CORRELATION}" in cross


def test_resolved_answers_claim_no_missing_correlation(pages):
    in_domain, cross = _answers(pages["resolved"], "metric-utility-mu-resolved")
    assert "ρ = 0.61 [0.15, 0.85] over 12 sets" in cross
    assert NO_CORRELATION not in pages["resolved"]
    assert "No scatter plot: scatter_in-domain-a-test.png is not in" in pages["resolved"]


def test_correlation_table_sorted_escaped_with_missing_values(pages):
    body = _section(pages["open"], "metric-utility-mu")
    table = body[body.index('id="in-domain-a-test"') :].split("</table>")[0]
    labels = re.findall(r'<tr><td class="l">(.*?)</td>', table)
    assert labels == ["label fidelity (pixel floor)", "FD (segmenter features)",
                      "precision &lt;k=5&gt;", "patch size (px)"]  # fmt: skip
    assert "<k=5>" not in pages["open"]
    cells = {r[0]: r[3:] for r in _rows(table)}
    assert cells["FD (segmenter features)"] == [
        "-0.52 [-0.80, -0.05]", "0.03", "-0.42 [-0.64, -0.04]", "0.04", "0.52", "0.66", "3", "–"
    ]  # fmt: skip
    assert cells["patch size (px)"] == ["constant", "–", "constant", "–", "–", "–", "3", "–"]


def test_scatters_embedded_as_written(pages):
    body = _section(pages["open"], "metric-utility-mu")
    uris = re.findall(r'src="data:image/png;base64,([^"]+)"', body)
    assert [base64.b64decode(u) for u in uris] == [
        (pages["run"] / scatter_name(d)).read_bytes() for d in FAKE_UTILITY_DOMAINS
    ]
    assert "<script" not in pages["open"].lower()


def test_sets_table_and_baseline(pages):
    body = _section(pages["open"], "metric-utility-mu")
    assert "in-domain (A test) 71.00 % (2 seeds); cross-region (B) 25.00 % (2 seeds)" in body
    sets = body[body.index('id="the-sets"') :]
    cells = _rows(sets)
    assert len(cells) == 12
    assert cells[0][:9] == ["conditional-diffusion@100", "conditional-diffusion", "grounded",
                            "100", "no", "no", "90", "-0.50", "+0.00"]  # fmt: skip
    assert cells[3][7:9] == ["+0.10 [-1.90, +2.10]", "+1.23 [-0.77, +3.23]"]
    assert cells[5][-2] == "–"  # precision missing for that set


# ----------------------------------------------------------------------------- findings
def test_findings_carry_one_line_per_domain(pages, tmp_path):
    panel = _text(_section(pages["open"], "findings"))
    assert (
        "metric utility (mu), in-domain (A test): Best single predictor: label fidelity (pixel floor), ρ = 0.71 [0.35, 0.90]"
        in panel
    )
    assert (
        f"metric utility (mu), cross-region (B): Best single predictor: FD (segmenter features) (lower is better), ρ = 0.31 [-0.25, 0.72] over 12 sets: its 95 % CI includes 0, so at 12 sets it {NO_CORRELATION}"
        in panel
    )
    # beside an experiment too (the panel's other branch)
    a = fake_dataset(tmp_path / "A", 40)
    b = fake_dataset(tmp_path / "B", 40, seed=1)
    exp = fake_experiment(tmp_path / "exp", a, b, synthetic_n=12)
    page = make_report([exp, pages["run"]], tmp_path / "both.html").read_text()
    panel = _text(_section(page, "findings"))
    assert "metric utility (mu), in-domain (A test): Best single predictor" in panel
    assert "Grounded augmentation is better" in panel  # the experiment's answer still there


def test_answer_names_the_within_generator_correlation_when_there_is_one():
    from groundsynth.report.metric_utility import answer_sentence

    row = {"domain": "D", "metric": "m", "n_sets": 13, "within_generator": 0.25}
    doc = {
        "metrics": {"m": {"direction": 1, "label": "label fidelity"}},
        "correlations": [row],
        "best": {"D": {"single": {"metric": "m", "oriented_spearman": 0.8, "ci95_low": 0.4,
                                  "ci95_high": 0.9, "logo_concordance": 0.7}}},
    }  # fmt: skip
    assert "among the sets of one generator" in answer_sentence(doc, "D")
    assert "orders them at ρ = 0.25 on average" in answer_sentence(doc, "D")
    row["within_generator"] = None
    assert "among the sets of one generator" not in answer_sentence(doc, "D")
