from __future__ import annotations

import numpy as np
import pytest

from groundsynth.data.radiometry import Scaler, to_uint8
from groundsynth.data.rasters import BandRef


def _bands(offset: float = 0.0, nodata: float | None = 0) -> tuple[BandRef, ...]:
    return tuple(
        BandRef("x.tif", i + 1, name, 1e-4, offset, nodata)
        for i, name in enumerate(("red", "green", "blue", "nir"))
    )


@pytest.mark.parametrize("method", ["reflectance", "percentile", "patch-max"])
@pytest.mark.parametrize("offset", [0.0, -0.1])
def test_lookup_tables_equal_float_arithmetic(method, offset):
    rng = np.random.default_rng(0)
    dn = rng.integers(0, 12000, size=(3, 32, 32), dtype=np.uint16)
    dn[:, :2] = 0  # nodata
    lo, hi = [0.01, 0.02, 0.03], [0.2, 0.25, 0.3]
    scaler = Scaler(_bands(offset), method, reflectance_max=0.3, lo=lo, hi=hi)
    fast, _ = scaler.to_uint8(dn)
    slow, _ = to_uint8(scaler.reflectance(dn), method, reflectance_max=0.3, lo=lo, hi=hi)
    np.testing.assert_array_equal(fast, slow)
    assert (fast[:2] == 0).all()


def test_reflectance_scaling_is_fixed_range():
    refl = np.full((3, 4, 4), 0.15, dtype=np.float32)
    img, _ = to_uint8(refl, "reflectance", reflectance_max=0.3)
    assert (img == 128).all()  # rint(0.15 / 0.3 * 255) = rint(127.5) = 128 (half to even)
    img, pmax = to_uint8(refl, "patch-max")
    assert pmax == pytest.approx(0.15) and (img == 255).all()


def test_offset_and_nodata_in_reflectance():
    scaler = Scaler(_bands(offset=-0.1, nodata=0), "reflectance")
    dn = np.array([[[0, 500, 1000, 3000]]] * 3, dtype=np.uint16)
    refl = scaler.reflectance(dn)
    np.testing.assert_allclose(refl[0, 0], [0.0, 0.0, 0.0, 0.2], atol=1e-6)


def test_percentile_scaling_maps_the_2nd_and_98th_percentiles_to_0_and_255(tmp_path):
    """Clouds and shadows (1 % bright, 1 % dark outliers) fall outside 2-98 %: the scene's
    body spans 0..255. A 0-100 % stretch would squeeze it into a few grey levels."""
    from rasterio.transform import from_origin

    from groundsynth.data.radiometry import source_percentiles
    from groundsynth.data.rasters import discover_imagery
    from tests.data.rasters import write_imagery

    rng = np.random.default_rng(7)
    dn = rng.integers(1000, 2001, size=(3, 40, 50), dtype=np.uint16)
    flat = dn.reshape(3, -1)
    for k in range(3):
        idx = rng.permutation(flat.shape[1])
        flat[k, idx[:20]] = 30000  # bright outliers (1 %)
        flat[k, idx[20:40]] = 5  # dark outliers (1 %)
        flat[k, idx[40:60]] = 0  # nodata: not counted
    path = write_imagery(tmp_path / "s2.tif", dn, from_origin(500000, 4000000, 10, 10))
    (source,) = discover_imagery([path])
    refl = dn.astype(np.float64) * 1e-4  # uint16 without metadata: DN / 10000
    valid = [refl[k][dn[k] != 0] for k in range(3)]
    want_lo = [np.percentile(v, 2) for v in valid]
    want_hi = [np.percentile(v, 98) for v in valid]
    assert all(0.1 <= a < 0.102 and 0.198 < b <= 0.2 for a, b in zip(want_lo, want_hi))

    lo, hi = source_percentiles(source)  # the defaults: 2 and 98
    np.testing.assert_allclose(lo, want_lo, rtol=1e-9)
    np.testing.assert_allclose(hi, want_hi, rtol=1e-9)

    img, _ = Scaler(source.bands, "percentile", lo=lo, hi=hi).to_uint8(dn)
    for k in range(3):
        a, b = want_lo[k], want_hi[k]
        want = np.rint(np.clip((refl[k] - a) * 255.0 / (b - a), 0, 255))
        want[dn[k] == 0] = 0
        assert np.abs(img[..., k].astype(int) - want).max() <= 1  # float32 vs float64 rounding
        body = (dn[k] >= 1000) & (dn[k] <= 2000)
        assert img[..., k][body].min() == 0 and img[..., k][body].max() == 255
        assert (img[..., k][dn[k] == 30000] == 255).all()
