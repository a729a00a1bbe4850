"""``/health`` tells warming, warm and failed warm-ups apart, per projector."""

from __future__ import annotations

from pathlib import Path

from fastapi.testclient import TestClient
from support import DEMO10, app_client

from clustviz.workers import WorkerPool, WorkerSettings


def test_health_is_ok_when_every_warm_up_ran(client: TestClient) -> None:
    body = client.get("/health").json()
    assert body["status"] == "ok" and body["warm"] is True
    assert body["device"] == "cpu" and body["versions"]["umap-learn"]
    assert body["pool"]["ready"] == body["pool"]["size"] == 1
    for name in ("tsne", "umap", "trimap", "pacmap", "render", "clusterplot"):
        assert body["warm_up"][name] == {"state": "warm", "reason": None}, name


def test_a_projector_whose_warm_up_fails_makes_the_service_degraded(tmp_path: Path) -> None:
    settings = WorkerSettings(warm=("broken",), warm_render=False, imports=("broken_projector",))
    pool = WorkerPool(1, settings).start()
    try:
        with app_client(DEMO10, tmp_path, pool) as client:
            assert pool.wait_ready(120), pool.status()
            health = client.get("/health").json()
    finally:
        pool.close()
    assert health["status"] == "degraded" and health["warm"] is True  # warm-ups have run
    assert health["warm_up"]["broken"] == {
        "state": "failed",
        "reason": "OSError: the broken projector's native library failed to load",
    }
    assert health["warm_up"]["tsne"] == {"state": "cold", "reason": None}  # not warmed here


def test_health_says_warming_until_the_workers_have_warmed_up(tmp_path: Path) -> None:
    pool = WorkerPool(1, WorkerSettings(warm=("umap",)))  # not started: no worker is ready yet
    with app_client(DEMO10, tmp_path, pool) as client:
        health = client.get("/health").json()
    assert health["status"] == "warming" and health["warm"] is False
    assert health["warm_up"]["umap"] == {"state": "warming", "reason": None}
    assert health["warm_up"]["render"] == {"state": "warming", "reason": None}
