"""A data dir with the demo fixture, a tiny dataset and a malformed one; apps built on it."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from support import DEMO10, app_client, make_rows, write_dataset

from clustviz.workers import WorkerPool, WorkerSettings


@pytest.fixture(scope="session")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("data")
    shutil.copytree(DEMO10, root, dirs_exist_ok=True)  # top level, as data/demo is served
    embeddings, clusters = make_rows({"The cat sat on the": 12, "Tiny": 3})
    write_dataset(root / "tiny", embeddings, clusters)
    bad_embeddings, bad_clusters = make_rows({"p": 6})
    write_dataset(root / "bad", bad_embeddings.vstack(bad_embeddings.head(1)), bad_clusters)
    return root


@pytest.fixture(scope="module")
def client(
    data_dir: Path,
    tmp_path_factory: pytest.TempPathFactory,
    warm_pools: tuple[WorkerPool, WorkerPool],
) -> Iterator[TestClient]:
    pool, lane = warm_pools
    with app_client(data_dir, tmp_path_factory.mktemp("state"), pool, lane) as test_client:
        assert pool.wait_ready(300), pool.status()
        test_client.app.state.engine.catalog.check_all()  # type: ignore[attr-defined]
        yield test_client


@pytest.fixture
def cold_pool() -> Iterator[WorkerPool]:
    """A worker without warm-up (no numba here: t-SNE only), cheap to kill and restart."""
    pool = WorkerPool(1, WorkerSettings(warm=()), default_timeout=60).start()
    assert pool.wait_ready(60)
    yield pool
    pool.close()
