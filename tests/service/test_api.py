"""Every endpoint and error code, through TestClient (the lifespan runs) on real files."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient
from support import DEMO10, DEMO_ID, SEED_PREAMBLE, app_client, tiny_id

from clustviz.data import discover_datasets, load_dataset
from clustviz.workers import WorkerPool, WorkerSettings

LIBRARY = ["tsne", "umap", "trimap", "pacmap"]


def post(client: TestClient, **body: object):  # type: ignore[no-untyped-def]
    return client.post("/projections", json={"dataset": DEMO_ID, **body})


def test_datasets_list_valid_and_invalid(client: TestClient, data_dir: Path) -> None:
    listed = {item["id"]: item for item in client.get("/datasets").json()}
    assert len(listed) == 3
    demo = listed[DEMO_ID]
    assert (demo["status"], demo["n_preambles"], demo["n_rows"], demo["dim"]) == (
        "ok",
        10,
        400,
        576,
    )
    (bad,) = [item for item in listed.values() if item["status"] == "invalid"]
    assert "share a (preamble, guess) key" in bad["error"]
    assert client.get(f"/datasets/{DEMO_ID}").json()["n_preambles"] == 10
    response = client.get(f"/datasets/{bad['id']}")
    assert response.status_code == 422 and response.json()["code"] == "invalid_dataset"


def test_unknown_dataset_and_traversal_ids_are_404(client: TestClient) -> None:
    for dataset in ["nope", "..%2F..%2Fetc%2Fpasswd", "%2Fetc%2Fpasswd"]:
        response = client.get(f"/datasets/{dataset}")
        assert response.status_code == 404, dataset
        assert response.json()["code"] in ("dataset_not_found", "not_found")


def test_preamble_search_and_paging(client: TestClient) -> None:
    page = client.get(f"/datasets/{DEMO_ID}/preambles", params={"q": "OUTRAGED"}).json()
    assert page["total"] == 1
    (item,) = page["items"]
    # the counts, read from the clustering file with the csv module (not the service's polars)
    (tsv,) = (DEMO10 / "clustering").glob("*.tsv")
    with tsv.open(newline="") as handle:
        rows = [r for r in csv.DictReader(handle, delimiter="\t") if r["preamble"] == SEED_PREAMBLE]
    assert item == {
        "id": "000ff918bc98",
        "text": SEED_PREAMBLE,
        "n_points": len(rows),
        "n_clusters": len({row["cluster_id"] for row in rows}),
    }
    assert 1 < item["n_clusters"] < item["n_points"] == 40  # a real split: not 1, not n
    first = client.get(f"/datasets/{DEMO_ID}/preambles", params={"limit": 4}).json()
    second = client.get(f"/datasets/{DEMO_ID}/preambles", params={"limit": 4, "offset": 4}).json()
    assert first["total"] == 10 and len(first["items"]) == 4 and len(second["items"]) == 4
    assert not {i["id"] for i in first["items"]} & {i["id"] for i in second["items"]}
    response = client.get(f"/datasets/{DEMO_ID}/preambles", params={"limit": 0})
    assert response.status_code == 422 and response.json()["code"] == "invalid_request"
    assert "limit" in response.json()["detail"]


def test_projectors_endpoint_lists_schemas(client: TestClient) -> None:
    projectors = {item["name"]: item for item in client.get("/projectors").json()}
    assert set(LIBRARY) <= set(projectors)
    assert projectors["pacmap"]["params_schema"]["properties"]["n_neighbors"]["default"] == 8
    # every knob that changes a ClusterPlot layout is a parameter, shown with its default
    knobs = projectors["clusterplot"]["params_schema"]["properties"]
    assert knobs["dense_max_rows"]["default"] == 640 and knobs["kmeans_iter"]["default"] == 20
    assert {"negatives", "candidate_refresh", "sparse_radius_every", "umap_n_neighbors"} <= set(
        knobs
    )


@pytest.mark.parametrize("projector", LIBRARY)
def test_projection_json_then_cached(client: TestClient, projector: str) -> None:
    response = post(client, preamble=SEED_PREAMBLE, projector=projector)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["n_points"] == 40 and len(body["points"]) == 40
    assert body["params"]["random_state"] == 1871 and body["device"] == "cpu"
    assert set(body["metrics"]) >= {"knn_preservation", "trustworthiness", "overlap_mean"}
    # points come in the dataset's row order
    (source,) = [
        s for s in discover_datasets(client.app.state.settings.data_dir) if s.id == DEMO_ID
    ]
    view = load_dataset(source).view(SEED_PREAMBLE)
    assert [p["guess"] for p in body["points"]] == view.guesses
    assert [p["cluster_id"] for p in body["points"]] == view.cluster_ids.tolist()
    coords = np.array([[p["x"], p["y"]] for p in body["points"]])
    assert np.isfinite(coords).all() and coords.std(axis=0).min() > 0
    again = post(client, preamble_id=body["preamble_id"], projector=projector).json()
    assert again["cached"] is True and again["key"] == body["key"]
    assert again["points"] == body["points"]


def test_projection_as_png_and_svg(client: TestClient) -> None:
    png = client.post(
        "/projections",
        json={"dataset": DEMO_ID, "preamble": SEED_PREAMBLE, "projector": "umap"},
        headers={"Accept": "image/png"},
    )
    assert png.status_code == 200 and png.headers["content-type"] == "image/png"
    assert png.content[:8] == b"\x89PNG\r\n\x1a\n" and png.headers["etag"]
    svg = client.post(
        "/projections",
        json={"dataset": DEMO_ID, "preamble": SEED_PREAMBLE, "projector": "umap"},
        headers={"Accept": "image/svg+xml"},
    )
    assert svg.headers["content-type"].startswith("image/svg+xml")
    text = svg.text
    assert text.count("<text") >= 40 and "policy" in text


def test_get_plot_is_cacheable_with_etag(client: TestClient) -> None:
    url = f"/plots/{DEMO_ID}/tsne.png"
    # the preamble has spaces and an apostrophe: passed as an encoded query parameter
    response = client.get(url, params={"preamble": SEED_PREAMBLE, "width": 6, "height": 4})
    assert response.status_code == 200 and response.content[:4] == b"\x89PNG"
    etag = response.headers["etag"]
    assert "max-age" in response.headers["cache-control"]
    again = client.get(
        url,
        params={"preamble": SEED_PREAMBLE, "width": 6, "height": 4},
        headers={"If-None-Match": etag},
    )
    assert again.status_code == 304 and again.headers["etag"] == etag and not again.content
    other_size = client.get(url, params={"preamble_id": "000ff918bc98", "width": 5, "height": 4})
    assert other_size.headers["etag"] != etag


def test_get_projection_json_by_id(client: TestClient) -> None:
    response = client.get(
        f"/projections/{DEMO_ID}/umap",
        params={"preamble_id": "000ff918bc98", "params": json.dumps({"n_neighbors": 10})},
    )
    assert response.status_code == 200 and response.headers["etag"]
    assert response.json()["params"]["n_neighbors"] == 10


ERROR_CASES = [
    ({"dataset": "nope", "preamble": SEED_PREAMBLE, "projector": "umap"}, 404, "dataset_not_found"),
    ({"preamble": "no such preamble", "projector": "umap"}, 404, "preamble_not_found"),
    ({"preamble_id": "ffffffffffff", "projector": "umap"}, 404, "preamble_not_found"),
    ({"preamble": SEED_PREAMBLE, "projector": "nope"}, 422, "unknown_projector"),
    (
        {"preamble": SEED_PREAMBLE, "projector": "umap", "params": {"n_neighbours": 5}},
        422,
        "invalid_params",
    ),
    (
        {"preamble": SEED_PREAMBLE, "projector": "tsne", "params": {"perplexity": -1}},
        422,
        "invalid_params",
    ),
    (
        {"preamble": SEED_PREAMBLE, "projector": "umap", "seed": 1, "params": {"random_state": 2}},
        422,
        "invalid_params",
    ),
    ({"projector": "umap"}, 404, "preamble_not_found"),
    ({"preamble": SEED_PREAMBLE}, 422, "invalid_request"),
    ({"preamble": SEED_PREAMBLE, "projector": "umap", "seed": -5}, 422, "invalid_request"),
    ({"preamble": SEED_PREAMBLE, "projector": "umap", "extra": 1}, 422, "invalid_request"),
]


@pytest.mark.parametrize(("body", "status", "code"), ERROR_CASES)
def test_errors_have_status_code_and_detail(
    client: TestClient, body: dict, status: int, code: str
) -> None:
    response = client.post("/projections", json={"dataset": DEMO_ID, **body})
    assert response.status_code == status, response.text
    payload = response.json()
    assert payload["code"] == code and payload["detail"]
    assert "Traceback" not in response.text


def test_error_details_name_field_and_value(client: TestClient) -> None:
    detail = post(
        client, preamble=SEED_PREAMBLE, projector="umap", params={"n_neighbours": 5}
    ).json()["detail"]
    assert "n_neighbours=5" in detail
    detail = post(
        client, preamble=SEED_PREAMBLE, projector="tsne", params={"perplexity": -1}
    ).json()["detail"]
    assert "perplexity=-1" in detail


def test_too_few_points(client: TestClient) -> None:
    response = client.post(
        "/projections", json={"dataset": tiny_id(client), "preamble": "Tiny", "projector": "tsne"}
    )
    assert response.status_code == 422 and response.json()["code"] == "too_few_points"
    assert "n=3" in response.json()["detail"]


def test_small_preamble_reports_clamped_params(client: TestClient) -> None:
    response = client.post(
        "/projections",
        json={"dataset": tiny_id(client), "preamble": "The cat sat on the", "projector": "umap"},
    )
    body = response.json()
    assert response.status_code == 200, body
    assert body["params"]["n_neighbors"] == 11
    assert body["notes"] == ["n_neighbors clamped from 15 to 11 for n=12"]


def test_get_errors(client: TestClient) -> None:
    url = f"/plots/{DEMO_ID}/umap.png"
    assert client.get(url).json()["code"] == "invalid_request"  # no preamble given
    bad_json = client.get(url, params={"preamble_id": "000ff918bc98", "params": "{nope"})
    assert bad_json.status_code == 422 and bad_json.json()["code"] == "invalid_params"
    bad_format = client.get(f"/plots/{DEMO_ID}/umap.gif", params={"preamble_id": "000ff918bc98"})
    assert bad_format.status_code == 422
    assert client.get("/no/such/route").json()["code"] == "not_found"
    wrong_method = client.put("/projections", json={})
    assert wrong_method.status_code == 405
    assert wrong_method.json()["code"] == "method_not_allowed"
    assert wrong_method.headers["allow"] == "POST"


def test_body_too_large(client: TestClient) -> None:
    response = client.post(
        "/projections",
        content=b"{" + b" " * (2 * 1024 * 1024) + b"}",
        headers={"content-type": "application/json"},
    )
    assert response.status_code == 413 and response.json()["code"] == "body_too_large"


def test_openapi_has_examples(client: TestClient) -> None:
    schema = client.get("/openapi.json").json()
    request_schema = schema["components"]["schemas"]["ProjectionRequest"]
    assert request_schema["examples"][0]["dataset"] == DEMO_ID
    assert client.get("/docs").status_code == 200


def test_a_run_over_its_time_bound_is_a_500_timeout(data_dir: Path, tmp_path: Path) -> None:
    # A cold worker cannot even import umap in 0.5 s: the time bound stops it.
    pool = WorkerPool(1, WorkerSettings(warm=()), default_timeout=0.5).start()
    try:
        with app_client(data_dir, tmp_path, pool, projection_timeout=0.5) as client:
            assert pool.wait_ready(60)
            response = post(client, preamble=SEED_PREAMBLE, projector="umap")
            assert response.status_code == 500
            payload = response.json()
            assert payload["code"] == "projection_timeout" and "0.5 s" in payload["detail"]
            assert client.get("/health").status_code == 200
    finally:
        pool.close()


def test_chunked_body_over_the_limit_is_refused(client: TestClient) -> None:
    def chunks():  # type: ignore[no-untyped-def]
        for _ in range(40):
            yield b" " * 65536  # no Content-Length: the limit applies while streaming

    response = client.post(
        "/projections", content=chunks(), headers={"content-type": "application/json"}
    )
    assert response.status_code == 413 and response.json()["code"] == "body_too_large"


def test_clusterplot_works_before_the_device_is_known(
    data_dir: Path, tmp_path: Path, warm_pools: tuple[WorkerPool, WorkerPool]
) -> None:
    # With device=auto the lane worker reports the device in the background; a request in
    # the meantime must run (with "auto"), not fail on the "pending" label.
    pool, lane = warm_pools
    with app_client(data_dir, tmp_path, pool, lane, device="auto") as client:
        client.app.state.engine.device = "pending"  # type: ignore[attr-defined]
        response = post(client, preamble=SEED_PREAMBLE, projector="clusterplot", seed=31)
        assert response.status_code == 200, response.text
        body = response.json()
        assert body["params"]["device"] == "auto" and body["device"] == "cpu"
        assert (
            body["hulls"] and body["overlap"]["after"]["mean"] <= body["overlap"]["before"]["mean"]
        )
        # each blob is named by its cluster's global id and drawn around that cluster's points
        xy = np.array([[p["x"], p["y"]] for p in body["points"]])
        ids = np.array([p["cluster_id"] for p in body["points"]])
        margin = 0.05 * np.ptp(xy, axis=0)
        for hull in body["hulls"]:
            members = xy[ids == hull["cluster_id"]]
            assert len(members), hull["cluster_id"]
            corners = np.concatenate([np.asarray(polygon) for polygon in hull["polygons"]])
            low, high = corners.min(0) - margin, corners.max(0) + margin
            assert np.all((low <= members.mean(0)) & (members.mean(0) <= high)), hull["cluster_id"]
