"""Scale-out: a real local Ray instance runs a batch job and a single projection."""

from __future__ import annotations

import time
from pathlib import Path

from fastapi.testclient import TestClient
from support import DEMO_ID, SEED_PREAMBLE, missing_part

from service.app import create_app
from service.settings import Settings

try:
    import ray
except ImportError:
    missing_part("the optional 'ray' extra is not installed: pip install -e '.[ray]'")


def test_a_real_job_runs_on_a_local_ray_instance(data_dir: Path, tmp_path: Path) -> None:
    settings = Settings(
        data_dir=data_dir, state_dir=tmp_path, device="cpu", executor="ray", workers=2
    )
    with TestClient(create_app(settings)) as client:
        assert ray.is_initialized()
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
    assert not ray.is_initialized()  # the lifespan shut the local instance down
