from __future__ import annotations

from pathlib import Path

import pytest

from groundsynth.report import make_report
from tests.report.fake_runs import fake_dataset, fake_experiment


@pytest.fixture(scope="module")
def fake_reports(tmp_path_factory) -> dict[str, Path]:
    """Two reports over made-up runs: ``withheld`` (a model did not learn; region A without
    leakage, a dataset without captions) and ``learned`` (every check passes; a dataset
    whose test patches touch training ones)."""
    tmp = tmp_path_factory.mktemp("fake_reports")
    a = fake_dataset(tmp / "A", 200, leakage=(0, 20))
    b = fake_dataset(tmp / "B", 150, captions=False, leakage=None, seed=1)
    leaky = fake_dataset(tmp / "leaky", 120, leakage=(7, 12), seed=2, missing=1)
    out = {}
    for name, learned, runs in (
        ("withheld", False, [a, b]),
        ("learned", True, [leaky]),
    ):
        exp = fake_experiment(tmp / f"exp_{name}", a, b, learned=learned)
        out[name] = make_report([exp, *runs], tmp / f"{name}.html", title=f"report {name}")
    return out
