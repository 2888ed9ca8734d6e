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
