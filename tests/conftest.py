"""Shared fixtures: tiny real datasets written to tmp_path, and warm worker pools shared by
every app in the session (warming numba costs tens of seconds per process)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

# Test-process configuration, before numba or BLAS are imported: a persistent numba cache
# (warm re-runs) and one thread (the libraries misbehave with OpenMP oversubscription on 2 cores).
REPO = Path(__file__).resolve().parents[1]
os.environ.setdefault("NUMBA_CACHE_DIR", str(REPO / ".cache" / "numba"))
for _var in ("OMP_NUM_THREADS", "NUMBA_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")
os.environ.setdefault("MPLBACKEND", "Agg")

import pytest  # noqa: E402
from support import DEMO10, Server, make_rows, write_dataset  # noqa: E402

from clustviz.projectors import projectors_run_by  # noqa: E402
from clustviz.workers import WorkerPool, WorkerSettings  # noqa: E402


@pytest.fixture
def tiny_dataset(tmp_path: Path) -> Path:
    """A valid data dir: two preambles of 12 guesses and one of 3 (too few for projectors)."""
    embeddings, clusters = make_rows({"The cat sat on the": 12, 'She said "the': 12, "Tiny": 3})
    write_dataset(tmp_path, embeddings, clusters)
    return tmp_path


@pytest.fixture(scope="session")
def warm_pools() -> Iterator[tuple[WorkerPool, WorkerPool]]:
    """One warm CPU worker and one device-lane worker for every app in the session."""
    cache = str(REPO / ".cache" / "numba")
    pool = WorkerPool(
        1,
        WorkerSettings(warm=projectors_run_by("pool"), numba_cache_dir=cache),
        default_timeout=120,
    ).start()
    lane = WorkerPool(
        1,
        WorkerSettings(
            warm=projectors_run_by("lane"), warm_render=False, numba_cache_dir=cache, threads=2
        ),
    ).start()
    yield pool, lane
    pool.close()
    lane.close()


@pytest.fixture(scope="session")
def live_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """One real, warm server on the demo fixture for every test that only reads from it."""
    server = Server(DEMO10, tmp_path_factory.mktemp("live-state"), CLUSTVIZ_WARM='["tsne", "umap"]')
    server.ready_seconds = server.start()  # type: ignore[attr-defined]
    server.wait_warm()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def plugin_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """A real server whose registry holds the broken projectors of tests/broken_projector.py (a
    plugin, as a user's own projector module would be), with a batch limit of 5 items."""
    tests = Path(__file__).resolve().parent
    server = Server(
        DEMO10,
        tmp_path_factory.mktemp("plugin-state"),
        CLUSTVIZ_PLUGINS='["broken_projector"]',
        CLUSTVIZ_WARM="[]",  # the broken projectors are not warmed: their failure is the test
        CLUSTVIZ_MAX_BATCH_ITEMS="5",
        PYTHONPATH=os.pathsep.join(filter(None, [str(tests), os.environ.get("PYTHONPATH")])),
    )
    server.start()
    yield server
    server.stop()
