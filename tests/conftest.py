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


@pytest.fixture(scope="module")
def one_thread():
    """One torch thread in this process for the module (restored afterwards). The Ray tests
    use it (``pytestmark = pytest.mark.usefixtures("one_thread")``) with :func:`ray_cluster`:
    bit-identical outputs across executors need the same float path, the thread count changes
    the order of float sums, CI runs without OMP_NUM_THREADS, and Ray would give a 2-CPU task
    2 threads."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def ray_cluster():
    """A local Ray cluster of 2 CPUs for the module; its workers run torch on one thread."""
    from groundsynth.distributed import RayExecutor

    executor = RayExecutor(
        local_cpus=2,
        init_options={
            "object_store_memory": 100 * 2**20,
            "runtime_env": {"env_vars": {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}},
        },
    )
    yield executor.start()
    executor.close()
