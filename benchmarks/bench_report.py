"""Report build time and page size.

Run: ``python benchmarks/bench_report.py [--rows 100000] [RUN_DIR ...]``

Without run directories, builds a report over made-up ARAS-sized runs (the report tests'
``tests/report/fake_runs.py``): a dataset of ``--rows`` samples with captions, a second
region without captions, an experiment whose synthetic sets hold ``--rows`` samples each and
a benchmark table of ``--rows`` rows; only the image files a report shows exist. With run
directories (e.g. those of a demo: ``demo_out/dataset demo_out/captions_eval
demo_out/regions/A demo_out/regions/B demo_out/experiment``), reports on those instead.

Prints the build time (median of ``--repeats``), the page size and what it is made of.
"""

from __future__ import annotations

import argparse
import re
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # for tests.report.*

from tests.report.fake_runs import fake_dataset, fake_experiment, fake_table  # noqa: E402

from groundsynth.report import make_report  # noqa: E402


def fake_runs(root: Path, rows: int) -> list[Path]:
    t = time.perf_counter()
    a = fake_dataset(root / "A", rows, leakage=(0, rows // 10))
    b = fake_dataset(root / "B", rows // 2, captions=False, leakage=None, seed=1)
    exp = fake_experiment(root / "exp", a, b, synthetic_n=rows)
    bench = fake_table(root / "bench", rows)
    print(f"made-up runs of {rows} rows written in {time.perf_counter() - t:.1f} s")
    return [exp, a, b, bench]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="*", type=Path, help="run directories (default: made up)")
    parser.add_argument("--rows", type=int, default=100_000, help="rows of the made-up runs")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench_report_") as tmp:
        runs = args.runs or fake_runs(Path(tmp), args.rows)
        out = Path(tmp) / "report.html"
        times = []
        for _ in range(args.repeats):
            t = time.perf_counter()
            make_report(runs, out)
            times.append(time.perf_counter() - t)
        page = out.read_text()
    times.sort()
    uris = re.findall(r'src="data:(image/[a-z]+);base64,([^"]+)"', page)
    kinds: dict[str, list[int]] = {}
    for mime, data in uris:
        kinds.setdefault(mime, []).append(len(data))
    print(
        f"build time: median {times[len(times) // 2]:.2f} s (min {times[0]:.2f}, max {times[-1]:.2f})"
    )
    print(f"page size: {len(page.encode()) / 1e6:.2f} MB, {len(uris)} embedded images")
    for mime, sizes in sorted(kinds.items()):
        print(
            f"  {mime}: {len(sizes)} images, {sum(sizes) / 1e6:.2f} MB, largest {max(sizes) / 1e3:.0f} kB"
        )


if __name__ == "__main__":
    main()
