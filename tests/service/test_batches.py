"""Batch jobs through TestClient: validation, progress, results in three formats, SSE,
cancellation, the API key, and items failing alone."""

from __future__ import annotations

import io
import json
import time
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from fastapi.testclient import TestClient
from support import DEMO_ID, SEED_PREAMBLE, app_client, tiny_id

from clustviz.metrics import layout_metrics
from clustviz.workers import WorkerPool


def wait_done(client: TestClient, job_id: str, timeout: float = 300) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status = client.get(f"/batches/{job_id}").json()
        if status["state"] not in ("queued", "running"):
            return status
        time.sleep(0.1)
    raise AssertionError(f"job {job_id} did not finish")


def submit(client: TestClient, **body: object):  # type: ignore[no-untyped-def]
    return client.post("/batches", json={"dataset": DEMO_ID, **body})


def test_batch_runs_and_returns_points_in_three_formats(client: TestClient) -> None:
    response = submit(client, preambles="all", projectors=["umap", "pacmap"], seed=11)
    assert response.status_code == 202, response.text
    created = response.json()
    assert created["total"] == 20 and response.headers["location"] == f"/batches/{created['id']}"
    assert set(created["links"]) == {"self", "events", "results"}
    status = wait_done(client, created["id"])
    assert (status["state"], status["done"], status["failed"]) == ("done", 20, 0)
    assert status["elapsed_s"] is not None
    parquet = client.get(f"/batches/{created['id']}/results", params={"format": "parquet"})
    frame = pl.read_parquet(io.BytesIO(parquet.content))
    assert frame.columns == ["preamble", "guess", "token_id", "cluster_id", "projector", "x", "y"]
    assert frame.height == 20 * 40 and set(frame["projector"]) == {"umap", "pacmap"}
    arrow = client.get(f"/batches/{created['id']}/results", params={"format": "arrow"})
    assert pl.read_ipc_stream(io.BytesIO(arrow.content)).equals(frame)
    lines = client.get(f"/batches/{created['id']}/results?format=json").text.splitlines()
    assert len(lines) == 800 and json.loads(lines[0]).keys() == set(frame.columns)
    # the batch's items are the same results a single request gets (shared cache)
    single = client.post(
        "/projections",
        json={"dataset": DEMO_ID, "preamble": SEED_PREAMBLE, "projector": "umap", "seed": 11},
    ).json()
    assert single["cached"] is True
    seed_rows = frame.filter(
        (pl.col("preamble") == SEED_PREAMBLE) & (pl.col("projector") == "umap")
    )
    assert seed_rows["x"].to_list() == pytest.approx([p["x"] for p in single["points"]])


def test_cached_items_are_not_recomputed(client: TestClient) -> None:
    first = wait_done(
        client, submit(client, preambles=[SEED_PREAMBLE], projectors=["tsne"]).json()["id"]
    )
    pool_tasks = sum(w["tasks_done"] for w in client.get("/health").json()["pool"]["workers"])
    again = wait_done(
        client, submit(client, preambles=[SEED_PREAMBLE], projectors=["tsne"]).json()["id"]
    )
    assert first["done"] == again["done"] == 1
    assert (
        sum(w["tasks_done"] for w in client.get("/health").json()["pool"]["workers"]) == pool_tasks
    )


def test_clusterplot_items_run_as_one_batched_fit_and_draw_blobs_when_viewed(
    client: TestClient,
) -> None:
    before = client.get("/health").json()["lane_runs"]
    job = submit(client, preambles="all", projectors=["clusterplot"], seed=77).json()["id"]
    status = wait_done(client, job)
    assert (status["done"], status["failed"]) == (10, 0)
    after = client.get("/health").json()["lane_runs"]
    assert (after["batches"] - before["batches"], after["items"] - before["items"]) == (1, 10)
    store = client.app.state.engine.store  # type: ignore[attr-defined]
    sql = "SELECT meta FROM projections WHERE key IN (SELECT key FROM job_items WHERE job_id = ?)"
    metas = [json.loads(meta) for (meta,) in store.query(sql, (job,))]
    assert len(metas) == 10
    assert all(m["extras"]["hulls"] is None and m["metrics"] is None for m in metas)
    # a view of a batch item draws its blobs and scores it (once), and keeps the layout
    url = f"/projections/{DEMO_ID}/clusterplot"
    view = client.get(url, params={"preamble": SEED_PREAMBLE, "seed": 77}).json()
    assert view["cached"] is True and view["hulls"], view
    alone = client.post(
        "/projections",
        json={"dataset": DEMO_ID, "preamble": SEED_PREAMBLE, "projector": "clusterplot"},
    ).json()  # another seed: computed with its blobs and scores at once
    assert view["metrics"].keys() == alone["metrics"].keys()
    assert 0 < view["metrics"]["knn_preservation"] <= 1
    ndjson = client.get(f"/batches/{job}/results", params={"format": "json"}).text
    results = [json.loads(line) for line in ndjson.splitlines()]
    batch_x = [r["x"] for r in results if r["preamble"] == SEED_PREAMBLE]
    assert batch_x == pytest.approx([p["x"] for p in view["points"]])
    metas = [json.loads(meta) for (meta,) in store.query(sql, (job,))]
    assert sum(m["extras"]["hulls"] is not None for m in metas) == 1
    assert sum(m["metrics"] is not None for m in metas) == 1
    png = client.get(
        f"/plots/{DEMO_ID}/clusterplot.png", params={"preamble": SEED_PREAMBLE, "seed": 77}
    )
    assert png.status_code == 200 and png.content[:4] == b"\x89PNG"


def test_library_items_are_scored_when_first_viewed(client: TestClient) -> None:
    job = submit(client, preambles=[SEED_PREAMBLE], projectors=["tsne"], seed=78).json()["id"]
    assert wait_done(client, job)["done"] == 1
    store = client.app.state.engine.store  # type: ignore[attr-defined]
    sql = "SELECT meta FROM projections WHERE key IN (SELECT key FROM job_items WHERE job_id = ?)"
    ((meta,),) = store.query(sql, (job,))
    assert json.loads(meta)["metrics"] is None  # a batch stores the layout alone
    url = f"/projections/{DEMO_ID}/tsne"
    view = client.get(url, params={"preamble": SEED_PREAMBLE, "seed": 78}).json()
    assert view["cached"] is True
    dataset = client.app.state.engine.catalog.get(DEMO_ID)  # type: ignore[attr-defined]
    points = dataset.view(SEED_PREAMBLE)
    layout = np.array([[p["x"], p["y"]] for p in view["points"]])
    expected = layout_metrics(points.X, layout, points.labels)
    assert view["metrics"] == pytest.approx(expected, rel=1e-6)
    ((meta,),) = store.query(sql, (job,))
    assert json.loads(meta)["metrics"] == view["metrics"]  # stored: scored once


def test_validation_up_front(client: TestClient) -> None:
    unknown = submit(client, preambles=[SEED_PREAMBLE, "nope one", "nope two"], projectors=["umap"])
    assert unknown.status_code == 404 and unknown.json()["code"] == "unknown_preambles"
    assert "'nope one', 'nope two'" in unknown.json()["detail"]
    cases = [
        ({"preambles": "all", "projectors": ["nope"]}, 422, "unknown_projector"),
        ({"preambles": "all", "projectors": []}, 422, "invalid_request"),
        (
            {"preambles": "all", "projectors": ["umap"], "params": {"umap": {"bad": 1}}},
            422,
            "invalid_params",
        ),
        (
            {"preambles": "all", "projectors": ["umap"], "params": {"tsne": {}}},
            422,
            "invalid_params",
        ),
        ({"preambles": "some", "projectors": ["umap"]}, 422, "invalid_request"),
        ({"preambles": [], "projectors": ["umap"]}, 422, "invalid_request"),
    ]
    for body, status, code in cases:
        response = submit(client, **body)
        assert (response.status_code, response.json()["code"]) == (status, code), body
    missing = client.post(
        "/batches", json={"dataset": "nope", "preambles": "all", "projectors": ["umap"]}
    )
    assert missing.status_code == 404 and missing.json()["code"] == "dataset_not_found"
    assert client.get("/batches/nope").json()["code"] == "job_not_found"


def test_failing_items_are_recorded_and_do_not_fail_the_job(client: TestClient) -> None:
    dataset = tiny_id(client)
    response = client.post(
        "/batches", json={"dataset": dataset, "preambles": "all", "projectors": ["tsne"]}
    )
    status = wait_done(client, response.json()["id"])
    assert (status["state"], status["done"], status["failed"]) == ("done", 1, 1)
    (error,) = status["errors"]
    assert error["preamble"] == "Tiny" and error["code"] == "too_few_points"


def test_events_stream_progress_then_end(client: TestClient) -> None:
    job_id = submit(client, preambles="all", projectors=["trimap"]).json()["id"]
    events = []
    with client.stream("GET", f"/batches/{job_id}/events") as response:
        assert response.headers["content-type"].startswith("text/event-stream")
        name = None
        ids = []
        for line in response.iter_lines():
            if line.startswith("id:"):
                ids.append(int(line[3:]))
            elif line.startswith("event:"):
                name = line.split(":", 1)[1].strip()
            elif line.startswith("data:"):
                events.append((name, json.loads(line[5:])))
                if name == "end":
                    break
    assert events[0][0] == "progress" and events[-1][0] == "end"
    assert events[-1][1]["done"] == 10
    # every event has an id: a progress event's is its count of finished items, end's total + 1
    assert len(ids) == len(events) and ids == sorted(set(ids))
    assert ids[:-1] == [data["done"] + data["failed"] for _, data in events[:-1]]
    assert ids[-1] == events[-1][1]["total"] + 1
    done_counts = [data["done"] for _, data in events]
    assert done_counts == sorted(done_counts)


def test_cancel_then_delete(client: TestClient) -> None:
    job_id = submit(
        client, preambles="all", projectors=["tsne"], params={"tsne": {"max_iter": 5000}}, seed=99
    ).json()["id"]
    cancelled = client.post(f"/batches/{job_id}/cancel").json()
    assert cancelled["state"] == "cancelled"
    final = wait_done(client, job_id)
    assert final["state"] == "cancelled" and final["done"] < 10
    again = client.post(f"/batches/{job_id}/cancel").json()  # ended: answered as it is
    assert (again["state"], again["done"]) == ("cancelled", final["done"])
    assert client.get(f"/batches/{job_id}/results").status_code == 200  # finished items stay
    assert client.delete(f"/batches/{job_id}").json()["state"] == "deleted"
    assert client.get(f"/batches/{job_id}").status_code == 404
    assert client.post(f"/batches/{job_id}/cancel").status_code == 404


def test_deleting_a_running_job_stops_it_and_removes_it(client: TestClient) -> None:
    """DELETE is removal, whatever the job's state: a running job is stopped first, and
    afterwards its status, results, events and cancel are 404; the server goes on."""
    job_id = submit(
        client, preambles="all", projectors=["tsne"], params={"tsne": {"max_iter": 5000}}, seed=98
    ).json()["id"]
    assert client.get(f"/batches/{job_id}").json()["state"] in ("queued", "running")
    assert client.delete(f"/batches/{job_id}").json()["state"] == "deleted"
    for path in ("", "/results?format=parquet", "/events"):
        gone = client.get(f"/batches/{job_id}{path}")
        assert gone.status_code == 404 and gone.json()["code"] == "job_not_found", path
    assert client.post(f"/batches/{job_id}/cancel").status_code == 404
    assert client.delete(f"/batches/{job_id}").status_code == 404
    later = submit(client, preambles="all", projectors=["tsne"], seed=97).json()["id"]
    assert wait_done(client, later)["state"] == "done"


def test_api_key_protects_mutating_endpoints(
    data_dir: Path, tmp_path: Path, warm_pools: tuple[WorkerPool, WorkerPool]
) -> None:
    with app_client(data_dir, tmp_path, *warm_pools, api_key="s3cret") as client:
        body = {"dataset": DEMO_ID, "preambles": [SEED_PREAMBLE], "projectors": ["umap"]}
        refused = client.post("/batches", json=body)
        assert refused.status_code == 401 and refused.json()["code"] == "unauthorized"
        wrong = client.post("/batches", json=body, headers={"X-API-Key": "nope"})
        assert wrong.status_code == 401
        accepted = client.post("/batches", json=body, headers={"X-API-Key": "s3cret"})
        assert accepted.status_code == 202
        job_id = accepted.json()["id"]
        assert client.delete(f"/batches/{job_id}").status_code == 401
        assert client.post(f"/batches/{job_id}/cancel").status_code == 401
        assert client.get(f"/batches/{job_id}").status_code == 200  # reading stays open
        wait_done(client, job_id)


def test_a_jobs_results_stay_pinned_in_a_full_store_until_the_job_is_deleted(
    data_dir: Path, tmp_path: Path, warm_pools: tuple[WorkerPool, WorkerPool]
) -> None:
    # the smallest store, read from disk, and no response cache: every answer is the store's
    overrides = {"cache_max_bytes": 2**20, "memory_cache_bytes": 0, "response_cache_entries": 0}
    with app_client(data_dir, tmp_path, *warm_pools, **overrides) as client:
        store = client.app.state.engine.store  # type: ignore[attr-defined]
        # another job's result, pinned, fills the store past its bound: from here on every
        # unpinned result is evicted as soon as anything is stored
        store.execute(
            "INSERT INTO job_items VALUES ('other-job', 0, 'p', 'umap', 'other', 'done', NULL,"
            " NULL, NULL)"
        )
        store.put("other", np.zeros((2**17, 2), dtype=np.float32), {})  # 1 MiB
        assert store.get("other") is not None and store.stats()["bytes"] > 2**20
        job_id = submit(client, preambles="all", projectors=["tsne"], seed=21).json()["id"]
        assert wait_done(client, job_id)["done"] == 10

        def exported_rows() -> int:
            body = client.get(f"/batches/{job_id}/results", params={"format": "parquet"})
            return pl.read_parquet(io.BytesIO(body.content)).height

        def view_is_cached() -> bool:
            params = {"preamble": SEED_PREAMBLE, "seed": 21}
            return bool(client.get(f"/projections/{DEMO_ID}/tsne", params=params).json()["cached"])

        assert exported_rows() == 10 * 40  # every item was kept while the job ran
        store.put("unpinned", np.zeros((1000, 2), dtype=np.float32), {})  # evicts what it can
        assert exported_rows() == 10 * 40 and view_is_cached()  # finished, still pinned
        assert client.delete(f"/batches/{job_id}").json()["state"] == "deleted"  # unpins
        store.put("unpinned-2", np.zeros((1000, 2), dtype=np.float32), {})
        assert not view_is_cached()  # evicted: computed again
