"""The report stays bounded over ARAS-sized runs: sampled grids, small thumbnails,
aggregated plots, cut tables."""

from __future__ import annotations

import io
import re

import numpy as np
from PIL import Image

from groundsynth.report import make_report
from groundsynth.report.samples import MAX_SAMPLES, pick_ids
from groundsynth.report.thumbs import THUMB_PX, map_thumb, photo_thumb, plot_file
from tests.report.fake_runs import fake_dataset, fake_experiment, fake_table

#: The bounds the report promises.
MAX_PAGE_BYTES = 5_000_000


def test_report_over_large_runs_is_bounded(tmp_path):
    n = 100_000
    a = fake_dataset(tmp_path / "A", n, leakage=(0, 10_000), missing=1)
    b = fake_dataset(tmp_path / "B", n // 2, captions=False, leakage=None, seed=1)
    exp = fake_experiment(tmp_path / "exp", a, b, synthetic_n=n)
    bench = fake_table(tmp_path / "bench", rows=n)
    # the build time is measured by benchmarks/bench_report.py, not asserted here
    out = make_report([exp, a, b, bench], tmp_path / "r.html")
    page = out.read_text()
    assert out.stat().st_size <= MAX_PAGE_BYTES
    # grids: MAX_SAMPLES per dataset shown, each image with its map (one missing in A)
    thumbs = re.findall(r'<img src="data:image/(?:jpeg|png);base64,([^"]+)"', page)
    assert len(thumbs) <= 2 * MAX_SAMPLES * 4
    assert max(len(t) for t in thumbs) < 40_000
    assert f"{MAX_SAMPLES - 1} of {int(0.8 * n)} samples of the train split" in page
    assert f"1 of {MAX_SAMPLES} chosen samples could not be shown" in page
    assert f"First 60 of {n} rows" in page


def test_picked_samples_are_spread_and_deterministic():
    ids = [f"{i:06d}" for i in range(1000)]
    picked = pick_ids(ids, 6)
    assert picked == pick_ids(list(ids), 6) and len(set(picked)) == 6
    assert picked[0] < "000200" and picked[-1] > "000800"
    assert pick_ids(ids[:3], 6) == ids[:3]


def test_thumbnails_are_small():
    rng = np.random.default_rng(0)
    mime, data = photo_thumb(rng.integers(0, 255, (512, 384, 3), dtype=np.uint8))
    assert mime == "image/jpeg" and max(Image.open(io.BytesIO(data)).size) == THUMB_PX
    mask = rng.integers(0, 7, (512, 512), dtype=np.uint8)
    mask[:10] = 255  # nodata: drawn grey, not an error
    mime, data = map_thumb(mask)
    im = Image.open(io.BytesIO(data))
    assert mime == "image/png" and im.size == (THUMB_PX, THUMB_PX)
    assert im.convert("RGB").getpixel((0, 0)) == (200, 200, 200)


def test_large_plot_files_are_reencoded(tmp_path):
    rng = np.random.default_rng(0)
    path = tmp_path / "big.png"
    Image.fromarray(rng.integers(0, 255, (1600, 2400, 3), dtype=np.uint8)).save(path)
    mime, data = plot_file(path, max_bytes=150_000)
    assert len(data) <= 150_000 and mime in ("image/png", "image/webp")
    assert max(Image.open(io.BytesIO(data)).size) <= 1100
    small = tmp_path / "small.png"
    Image.new("RGB", (50, 50), "white").save(small)
    assert plot_file(small) == ("image/png", small.read_bytes())
