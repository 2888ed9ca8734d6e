from __future__ import annotations

from pathlib import Path

import pytest

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The real test data in ../shared/data; skips the test when it is absent."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"real data not available at {SHARED_DATA}")
    return SHARED_DATA


@pytest.fixture(scope="session")
def sample_world_512(tmp_path_factory: pytest.TempPathFactory):
    """A 512 x 512 sample world (seed 0, temperate), written once per test session.

    Returns the :class:`~groundsynth.data.sample_world.SampleWorld` (landcover, imagery, config).
    Treat its files as read-only: other tests share them.
    """
    from groundsynth.data.sample_world import SampleWorldConfig, make_sample_world

    out = tmp_path_factory.mktemp("sample_world_512")
    return make_sample_world(out, SampleWorldConfig(size=512, seed=0))
