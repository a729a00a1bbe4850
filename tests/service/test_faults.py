"""Faults and access, through a real app: what happens, and that nothing finished is lost
or served stale."""

from __future__ import annotations

import os
import shutil
import sqlite3
import threading
import time
from pathlib import Path

import polars as pl
import pytest
from fastapi.testclient import TestClient
from support import DEMO10, DEMO_ID, SEED_PREAMBLE, app_client

from clustviz.workers import WorkerPool


def tsne(client: TestClient, **extra: object):  # type: ignore[no-untyped-def]
    body = {"dataset": DEMO_ID, "preamble": SEED_PREAMBLE, "projector": "tsne", **extra}
    return client.post("/projections", json=body)


def test_a_worker_killed_mid_request_fails_that_request_only(
    tmp_path: Path, cold_pool: WorkerPool
) -> None:
    with app_client(DEMO10, tmp_path, cold_pool) as client:
        tsne(client)  # the worker has imported scikit-learn
        (pid,) = cold_pool.worker_pids()

        def kill_when_busy() -> None:
            deadline = time.monotonic() + 30
            while cold_pool.status()["workers"][0]["state"] != "busy":
                if time.monotonic() > deadline:
                    return
                time.sleep(0.005)
            os.kill(pid, 9)  # like a segfault in a native library

        killer = threading.Thread(target=kill_when_busy)
        killer.start()
        # a first PaCMAP run in a cold worker imports and compiles for seconds: killed meanwhile
        response = client.post(
            "/projections",
            json={"dataset": DEMO_ID, "preamble": SEED_PREAMBLE, "projector": "pacmap"},
        )
        killer.join()
        assert response.status_code == 500
        assert response.json()["code"] == "worker_crashed"
        again = tsne(client, seed=3)  # a fresh worker serves the next request
        assert again.status_code == 200 and again.json()["cached"] is False
        assert tsne(client).json()["cached"] is True  # finished results were not lost


def test_a_corrupted_cache_entry_is_recomputed_not_served(
    tmp_path: Path, cold_pool: WorkerPool
) -> None:
    with app_client(DEMO10, tmp_path, cold_pool, memory_cache_bytes=0) as client:
        first = tsne(client).json()
        with sqlite3.connect(tmp_path / "clustviz.sqlite3") as db:
            db.execute("UPDATE projections SET coords = x'00ff'")
        again = tsne(client).json()
        assert again["cached"] is False and again["points"] == first["points"]


def test_a_replaced_dataset_file_never_serves_stale_results(
    tmp_path: Path, cold_pool: WorkerPool
) -> None:
    data = tmp_path / "data"
    shutil.copytree(DEMO10, data)
    with app_client(data, tmp_path / "state", cold_pool) as client:
        before = tsne(client).json()
        (parquet,) = (data / "embeddings").glob("*.parquet")
        frame = pl.read_parquet(parquet)
        shifted = frame.with_columns(
            pl.Series("embedding", frame["embedding"].to_numpy()[::-1].copy())  # other vectors
        )
        shifted.write_parquet(parquet)
        os.utime(parquet, ns=(1, 1))
        time.sleep(2.1)  # the catalog re-lists the data dir every 2 s
        after = tsne(client).json()
        assert after["cached"] is False and after["key"] != before["key"]
        assert after["points"] != before["points"]


def test_a_read_only_data_dir_keeps_serving(tmp_path: Path, cold_pool: WorkerPool) -> None:
    # Root ignores permission bits, so a real read-only view needs a read-only mount; where
    # this sandbox forbids mounts, the test says so instead of pretending.
    data = tmp_path / "ro"
    data.mkdir()
    import subprocess

    mounted = subprocess.run(
        ["mount", "--bind", "-o", "ro", str(DEMO10), str(data)], capture_output=True
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot make a read-only mount here: {mounted.stderr.decode().strip()}")
    try:
        with pytest.raises(OSError):
            (data / "probe").write_text("x")
        with app_client(data, tmp_path / "state", cold_pool) as client:
            assert client.get(f"/datasets/{DEMO_ID}").json()["status"] == "ok"
            assert tsne(client).status_code == 200
    finally:
        subprocess.run(["umount", str(data)], check=False)


def test_cors_is_an_allowlist(tmp_path: Path, cold_pool: WorkerPool) -> None:
    with app_client(DEMO10, tmp_path, cold_pool, cors_origins=["http://ok.example"]) as client:
        allowed = client.get("/health", headers={"Origin": "http://ok.example"})
        assert allowed.headers["access-control-allow-origin"] == "http://ok.example"
        other = client.get("/health", headers={"Origin": "http://evil.example"})
        assert "access-control-allow-origin" not in other.headers
    with app_client(DEMO10, tmp_path / "b", cold_pool) as client:  # default: no CORS at all
        assert (
            "access-control-allow-origin"
            not in client.get("/health", headers={"Origin": "http://ok.example"}).headers
        )


@pytest.mark.parametrize(
    "path",
    [
        "/datasets/..%2F..%2Fetc%2Fpasswd",
        "/datasets/%2Fetc%2Fpasswd/preambles",
        "/datasets/....//....//etc/preambles",
        "/plots/..%2Fembeddings/umap.png?preamble_id=000ff918bc98",
        "/projections/%2e%2e%2f%2e%2e/umap?preamble_id=000ff918bc98",
        "/static/..%2F..%2Fpyproject.toml",
        "/static/../../pyproject.toml",
    ],
)
def test_no_request_reaches_outside_the_data_dir(
    tmp_path: Path, cold_pool: WorkerPool, path: str
) -> None:
    with app_client(DEMO10, tmp_path, cold_pool) as client:
        response = client.get(path)
        assert response.status_code in (404, 422), (path, response.status_code)
        assert "[build-system]" not in response.text and "root:" not in response.text
        assert "Traceback" not in response.text


def test_points_per_projection_are_limited(tmp_path: Path, cold_pool: WorkerPool) -> None:
    with app_client(DEMO10, tmp_path, cold_pool, max_points=30) as client:
        response = tsne(client)
        assert response.status_code == 422 and response.json()["code"] == "too_many_points"
        assert "n=40" in response.json()["detail"] and "30" in response.json()["detail"]


def test_a_full_queue_answers_503_with_retry_after(tmp_path: Path, cold_pool: WorkerPool) -> None:
    with app_client(DEMO10, tmp_path, cold_pool, max_queue=1) as client:
        engine = client.app.state.engine  # type: ignore[attr-defined]
        blockers = [cold_pool.submit("worker_tasks:sleep", 3) for _ in range(2)]  # 1 runs, 1 waits
        time.sleep(0.3)
        response = tsne(client, seed=12345)
        assert response.status_code == 503 and response.json()["code"] == "busy"
        assert int(response.headers["retry-after"]) > 0
        assert all(b.result(30) == "slept" for b in blockers)
        assert engine.pool.queued == 0
        assert tsne(client, seed=12345).status_code == 200
