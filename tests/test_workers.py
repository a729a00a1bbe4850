"""The warm worker pool with real spawned processes: results, errors, time bounds, crashes."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from clustviz.errors import InvalidInputError, ProjectionFailedError, UnavailableError
from clustviz.workers import WorkerPool, WorkerSettings


@pytest.fixture
def pool() -> Iterator[WorkerPool]:
    pool = WorkerPool(2, WorkerSettings(warm=()), max_queue=8, default_timeout=30).start()
    assert pool.wait_ready(60)
    yield pool
    pool.close()


def test_runs_tasks_in_worker_processes(pool: WorkerPool) -> None:
    import os

    assert pool.submit("worker_tasks:add", 2, 3).result(30) == 5
    assert pool.submit("worker_tasks:pid").result(30) != os.getpid()


def test_workers_native_thread_pools_are_capped(monkeypatch: pytest.MonkeyPatch) -> None:
    """numpy (and its BLAS) is loaded before a worker sets its thread variables: the pools
    already loaded must be capped too, or their idle threads spin beside the other worker.
    The parent here asks for 2 threads (as a server's environment may), the worker for 1."""
    for variable in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        monkeypatch.setenv(variable, "2")
    pool = WorkerPool(1, WorkerSettings(warm=(), threads=1)).start()
    try:
        pools = pool.submit("worker_tasks:thread_pools").result(60)
    finally:
        pool.close()
    assert any(p["api"] == "blas" for p in pools)
    assert all(p["threads"] == 1 for p in pools), pools


def test_library_errors_keep_their_class_and_code(pool: WorkerPool) -> None:
    with pytest.raises(InvalidInputError) as err:
        pool.submit("worker_tasks:refuse", 7).result(30)
    assert err.value.code == "bad_value" and "value=7" in err.value.message
    with pytest.raises(ProjectionFailedError) as failed:
        pool.submit("worker_tasks:explode").result(30)
    assert failed.value.code == "worker_error" and "library blew up" in failed.value.message


def test_time_bound_kills_the_task_and_the_pool_recovers(pool: WorkerPool) -> None:
    with pytest.raises(ProjectionFailedError) as err:
        pool.submit("worker_tasks:sleep", 60, timeout=1).result(30)
    assert err.value.code == "projection_timeout"
    # the other worker kept serving, and the killed one is replaced
    assert pool.submit("worker_tasks:add", 1, 1).result(30) == 2
    assert pool.wait_ready(60)
    assert sum(worker["restarts"] for worker in pool.status()["workers"]) == 1


def test_a_crashing_worker_fails_only_its_task(pool: WorkerPool) -> None:
    pids_before = set(pool.worker_pids())
    with pytest.raises(ProjectionFailedError) as err:
        pool.submit("worker_tasks:crash").result(30)
    assert err.value.code == "worker_crashed" and "exit code 3" in err.value.message
    results = [pool.submit("worker_tasks:add", i, i) for i in range(4)]
    assert [future.result(60) for future in results] == [0, 2, 4, 6]
    assert pool.wait_ready(60)
    assert set(pool.worker_pids()) != pids_before


def test_a_full_queue_is_refused_not_grown(pool: WorkerPool) -> None:
    import time

    running = [pool.submit("worker_tasks:sleep", 1.0) for _ in range(2)]
    deadline = time.monotonic() + 10
    while pool.queued and time.monotonic() < deadline:  # both taken by the workers
        time.sleep(0.01)
    futures = running + [pool.submit("worker_tasks:sleep", 0.1) for _ in range(8)]
    with pytest.raises(UnavailableError) as err:
        pool.submit("worker_tasks:add", 1, 2)
    assert err.value.code == "pool_saturated"
    assert all(future.result(30) == "slept" for future in futures)


def test_closed_pool_refuses_work() -> None:
    pool = WorkerPool(1, WorkerSettings(warm=())).start()
    pool.close()
    with pytest.raises(UnavailableError) as err:
        pool.submit("worker_tasks:add", 1, 2)
    assert err.value.code == "pool_closed"
