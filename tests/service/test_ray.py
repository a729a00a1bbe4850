"""Scale-out: a real local Ray instance runs a batch job, a single projection and a map."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from support import DEMO_ID, SEED_PREAMBLE, missing_part

from service.app import create_app
from service.settings import Settings

try:
    import ray
except ImportError:
    missing_part("the optional 'ray' extra is not installed: pip install -e '.[ray]'")


@pytest.fixture(scope="module")
def client(data_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    """One service on one local Ray instance for the module (starting Ray is the slow part)."""
    settings = Settings(
        data_dir=data_dir,
        state_dir=tmp_path_factory.mktemp("ray-state"),
        device="cpu",
        executor="ray",
        workers=2,
    )
    with TestClient(create_app(settings)) as client:
        assert ray.is_initialized()
        yield client
    assert not ray.is_initialized()  # the lifespan shut the local instance down


def test_a_real_job_runs_on_a_local_ray_instance(client: TestClient) -> None:
    health = client.get("/health").json()
    assert health["pool"]["size"] == 2
    body = {
        "dataset": DEMO_ID,
        "preambles": "all",
        "projectors": ["tsne", "clusterplot"],
        "seed": 5,
    }
    job_id = client.post("/batches", json=body).json()["id"]
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline:
        status = client.get(f"/batches/{job_id}").json()
        if status["state"] == "done":
            break
        time.sleep(0.2)
    assert (status["done"], status["failed"]) == (20, 0), status
    assert client.get("/health").json()["lane_runs"] == {"batches": 1, "items": 10}
    view = client.get(  # a batch layout: its blobs are drawn on Ray when first viewed
        f"/projections/{DEMO_ID}/clusterplot", params={"preamble": SEED_PREAMBLE, "seed": 5}
    ).json()
    assert view["cached"] is True and view["hulls"]
    single = client.post(
        "/projections",
        json={"dataset": DEMO_ID, "preamble": SEED_PREAMBLE, "projector": "tsne", "seed": 5},
    ).json()
    assert single["cached"] is True and len(single["points"]) == 40

    def project(**params: object):  # type: ignore[no-untyped-def]
        body = {"dataset": DEMO_ID, "preamble": SEED_PREAMBLE, "projector": "tsne"}
        return client.post("/projections", json={**body, "params": params, "seed": 6})

    fresh = project(perplexity=3)  # valid, and new: computed on Ray, not cached
    assert fresh.status_code == 200, fresh.text
    assert fresh.json()["cached"] is False and fresh.json()["params"]["perplexity"] == 3
    bad = project(perplexity=0)  # t-SNE's perplexity must be > 0: refused before Ray
    assert bad.status_code == 422, bad.text
    assert bad.json()["code"] == "invalid_params" and "perplexity=0" in bad.json()["detail"]


def test_a_map_is_fitted_on_a_local_ray_instance(client: TestClient) -> None:
    """Maps go through the same pool as projections: on Ray, a Ray task fits the map, reports
    its progress through the state dir (shared with the workers: README "Scale-out on Ray") and
    the server serves its points."""
    body = {
        "dataset": DEMO_ID,
        "method": "opentsne",
        "fit_on": "points",
        "params": {"early_exaggeration_iter": 50, "n_iter": 100},
    }
    created = client.post("/maps", json=body)
    assert created.status_code == 202, created.text
    map_id = created.json()["id"]
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline:
        status = client.get(f"/maps/{map_id}").json()
        if status["state"] not in ("queued", "running"):
            break
        time.sleep(0.2)
    assert status["state"] == "done", status
    assert status["progress"] == 1.0 and status["summary"]["n_rows"] == 400
    points = client.get(f"/maps/{map_id}/points", params={"preamble": SEED_PREAMBLE})
    assert points.status_code == 200 and points.json()["n"] == 40
