"""The report in a real browser: headless Chromium (Debian's, never a downloaded one) driven
by Playwright, at a desktop (1280 px) and a phone (390 px) width.

Each report is opened once per width; one script measures what the tests assert (images
decoded, caption and image boxes, links, page width) and a full-page screenshot is written
to ``$GROUNDSYNTH_TEST_ARTIFACTS/report`` (default: ``tests-artifacts/report`` under pytest's
temporary directory). Skipped, with the reason, where Chromium or Playwright is missing;
``.ci/run`` installs Chromium so that CI always runs them.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

import pytest

from groundsynth.report import FINDINGS_ID

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
WIDTHS = (1280, 390)

pytestmark = pytest.mark.timeout(300)

_MEASURE = """() => {
  const box = (e) => { const r = e.getBoundingClientRect();
    return {left: r.left, top: r.top, right: r.right, bottom: r.bottom}; };
  const sections = [...document.querySelectorAll('section')];
  const panel = document.getElementById('findings');
  const h2s = [...document.querySelectorAll('h2')];
  return {
    firstSection: sections.length ? sections[0].id : null,
    sectionIds: sections.map((s) => s.id),
    headingBeforePanel: h2s.some((h) => !panel.contains(h) &&
      (h.compareDocumentPosition(panel) & Node.DOCUMENT_POSITION_FOLLOWING)),
    question: (panel.querySelector('.question') || {}).textContent || '',
    answers: [...panel.querySelectorAll('.answer')].map((e) => e.textContent),
    withheld: !!panel.querySelector('.withheld'),
    checks: [...panel.querySelectorAll('.check')].map((e) => ({
      mark: e.dataset.mark, label: (e.querySelector('.mark') || {}).textContent || '',
      title: ((e.querySelector('strong') || {}).textContent || '').replace(/:$/, ''),
      text: e.textContent})),
    next: [...panel.querySelectorAll('.next li')].map((e) => e.textContent),
    images: [...document.images].map((i) => ({complete: i.complete, w: i.naturalWidth,
      h: i.naturalHeight, alt: i.getAttribute('alt') || ''})),
    overlaps: [...document.querySelectorAll('.grid')].flatMap((g) => {
      const imgs = [...g.querySelectorAll('img')].map(box);
      return [...g.querySelectorAll('figcaption')].map(box).flatMap((c) => imgs.filter((i) =>
        c.left < i.right - 0.5 && i.left < c.right - 0.5 &&
        c.top < i.bottom - 0.5 && i.top < c.bottom - 0.5).map((i) => [c, i]));
    }),
    captions: [...document.querySelectorAll('.grid figcaption')].map((c) => c.textContent),
    gridCaptionsBelow: [...document.querySelectorAll('figure.sample')].every((f) => {
      const c = f.querySelector('figcaption').getBoundingClientRect();
      return [...f.querySelectorAll('img')].every((i) =>
        c.top >= i.getBoundingClientRect().bottom - 0.5); }),
    links: [...document.querySelectorAll('a[href^="#"]')].map((a) => a.getAttribute('href')),
    missingTargets: [...document.querySelectorAll('a[href^="#"]')]
      .map((a) => a.getAttribute('href').slice(1)).filter((id) => !document.getElementById(id)),
    tablesWrapped: [...document.querySelectorAll('table')]
      .every((t) => t.parentElement.classList.contains('scroll')),
    scrollWidth: document.scrollingElement.scrollWidth,
  };
}"""


def _artifacts(tmp_path_factory: pytest.TempPathFactory) -> Path:
    base = os.environ.get("GROUNDSYNTH_TEST_ARTIFACTS")
    root = Path(base) if base else tmp_path_factory.getbasetemp() / "tests-artifacts"
    out = root / "report"
    out.mkdir(parents=True, exist_ok=True)
    return out


@pytest.fixture(scope="module")
def browser():
    if CHROMIUM is None:
        pytest.skip(
            "Chromium not found on PATH: install it (apt-get install chromium) to run the "
            "report's browser tests; .ci/run does"
        )
    sync_api = pytest.importorskip(
        "playwright.sync_api", reason="playwright not installed: pip install -e '.[dev]'"
    )
    with sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, headless=True)
        try:
            yield browser
        finally:
            browser.close()


@pytest.fixture(
    scope="module",
    params=[(r, w) for r in ("withheld", "learned") for w in WIDTHS],
    ids=lambda p: f"{p[0]}-{p[1]}px",
)
def shown(request, browser, fake_reports, tmp_path_factory) -> dict[str, Any]:
    """One report opened at one width: the measurements, console errors, a screenshot."""
    name, width = request.param
    page = browser.new_page(viewport={"width": width, "height": 900})
    errors: list[str] = []
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: errors.append(str(e)))
    try:
        page.goto(fake_reports[name].as_uri(), wait_until="load")
        page.wait_for_function("[...document.images].every((i) => i.complete)")
        measured = page.evaluate(_MEASURE)
        shot = _artifacts(tmp_path_factory) / f"{name}-{width}px.png"
        page.screenshot(path=str(shot), full_page=True)
    finally:
        page.close()
    return {"name": name, "width": width, "errors": errors, "shot": shot, **measured}


def test_findings_panel_is_first_and_complete(shown):
    assert shown["firstSection"] == FINDINGS_ID
    assert not shown["headingBeforePanel"]
    assert "grounded augmentation" in shown["question"]
    answers = shown["answers"]
    assert len(answers) == 2  # in-domain and cross-region, macro F1
    assert "in-domain" in answers[0] and "No difference detectable at 3 seeds" in answers[0]
    assert "cross-region" in answers[1] and "Grounded augmentation is better by 8.63" in answers[1]
    for a in answers:
        assert "95 % CI [" in a and "of 3 seeds" in a and "p = " in a
    checks = shown["checks"]
    assert checks and all(c["mark"] in ("pass", "warn") and c["mark"] in c["label"] for c in checks)
    text = " ".join(c["text"] for c in checks)
    for topic in (
        "Learning:",
        "Spatial leakage",
        "Label fidelity",
        "look like real images",
        "WorldCover",
    ):
        assert topic in text
    assert any("--seeds" in s for s in shown["next"])
    assert any("--preset full --device cuda" in s for s in shown["next"])
    assert shown["withheld"] == (shown["name"] == "withheld")


def test_findings_marks_follow_the_checks(shown):
    marks = {c["title"]: c["mark"] for c in shown["checks"]}
    assert marks["WorldCover accuracy"] == "warn"
    if shown["name"] == "withheld":
        assert marks["Spatial leakage, region A (A)"] == "pass"
        assert marks["Learning: segmenter unet trained on real"] == "warn"
    else:
        assert marks["Spatial leakage, dataset leaky"] == "warn"
        assert marks["Learning: segmenter unet trained on real"] == "pass"


def test_every_image_decodes_and_has_alt_text(shown):
    images = shown["images"]
    assert len(images) >= 20
    bad = [i for i in images if not (i["complete"] and i["w"] > 0 and i["h"] > 0)]
    assert not bad
    assert all(i["alt"].strip() for i in images)


def test_no_caption_overlaps_an_image(shown):
    assert shown["captions"]
    assert not shown["overlaps"]
    assert shown["gridCaptionsBelow"]


def test_samples_without_captions_say_so(shown):
    caps = shown["captions"]
    assert all(c.split(" ", 1)[-1].strip() for c in caps)  # never an empty label
    assert any("A landscape mostly of" in c for c in caps)
    assert any("no captions in this dataset" in c for c in caps)


def test_every_internal_link_resolves(shown):
    assert f"#{FINDINGS_ID}" in shown["links"]
    assert not shown["missingTargets"]
    assert {f"#{s}" for s in shown["sectionIds"]} <= set(shown["links"])  # the contents


def test_no_console_errors(shown):
    assert shown["errors"] == []


def test_page_fits_the_width_and_is_captured(shown):
    assert shown["scrollWidth"] <= shown["width"] + 1
    assert shown["tablesWrapped"]
    assert shown["shot"].stat().st_size > 10_000
