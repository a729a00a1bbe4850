"""Streamed batch exports: row counts, schema, row groups, NDJSON lines, and content equal to the
whole-table export built item by item from the store (the way it was built before streaming)."""

from __future__ import annotations

import io
import json
import time

import numpy as np
import polars as pl
import pyarrow.parquet as pq
import pytest
from fastapi.testclient import TestClient
from support import DEMO_ID

from service.export import ExportRequest, export_results

SCHEMA = {
    "preamble": pl.String,
    "guess": pl.String,
    "token_id": pl.Int64,
    "cluster_id": pl.Int64,
    "projector": pl.String,
    "x": pl.Float32,
    "y": pl.Float32,
}


def finished_job(client: TestClient, seed: int) -> str:
    body = {"dataset": DEMO_ID, "preambles": "all", "projectors": ["tsne", "umap"], "seed": seed}
    job = client.post("/batches", json=body).json()["id"]
    deadline = time.monotonic() + 300
    while client.get(f"/batches/{job}").json()["state"] in ("queued", "running"):
        assert time.monotonic() < deadline, "the job did not finish"
        time.sleep(0.1)
    return job


def whole_table(client: TestClient, job: str) -> pl.DataFrame:
    """The oracle: every finished item read whole from the store, its view's rows next to it."""
    store = client.app.state.engine.store  # type: ignore[attr-defined]
    dataset = client.app.state.engine.catalog.get(DEMO_ID)  # type: ignore[attr-defined]
    items = store.query(
        "SELECT preamble, projector, key FROM job_items"
        " WHERE job_id = ? AND state = 'done' ORDER BY idx",
        (job,),
    )
    parts = []
    for preamble, projector, key in items:
        embedding = store.get(key).embedding
        view = dataset.view(preamble)
        parts.append(
            pl.DataFrame(
                {
                    "preamble": [preamble] * view.n_points,
                    "guess": view.guesses,
                    "token_id": view.token_ids,
                    "cluster_id": view.cluster_ids,
                    "projector": [projector] * view.n_points,
                    "x": embedding[:, 0],
                    "y": embedding[:, 1],
                },
                schema=SCHEMA,
            )
        )
    return pl.concat(parts)


@pytest.fixture(scope="module")
def job(client: TestClient) -> str:
    return finished_job(client, seed=4242)


def test_every_format_holds_the_whole_table(client: TestClient, job: str) -> None:
    expected = whole_table(client, job)
    assert expected.height == 20 * 40
    url = f"/batches/{job}/results"
    parquet = client.get(url, params={"format": "parquet"})
    assert parquet.headers["content-type"] == "application/vnd.apache.parquet"
    frame = pl.read_parquet(io.BytesIO(parquet.content))
    assert frame.schema == pl.Schema(SCHEMA)
    assert frame.equals(expected)
    arrow = client.get(url, params={"format": "arrow"})
    assert arrow.headers["content-type"] == "application/vnd.apache.arrow.stream"
    assert pl.read_ipc_stream(io.BytesIO(arrow.content)).equals(expected)
    ndjson = client.get(url, params={"format": "json"})
    assert ndjson.headers["content-type"] == "application/x-ndjson"
    lines = ndjson.text.splitlines()
    assert len(lines) == expected.height and ndjson.text.endswith("\n")
    records = [json.loads(line) for line in lines]
    assert all(list(record) == list(SCHEMA) for record in records)
    assert pl.DataFrame(records, schema=SCHEMA).equals(expected)


def test_chunks_become_row_groups_and_batches_in_item_order(client: TestClient, job: str) -> None:
    expected = whole_table(client, job)
    dataset = client.app.state.engine.catalog.get(DEMO_ID)  # type: ignore[attr-defined]
    jobs = client.app.state.jobs.job_store  # type: ignore[attr-defined]
    request = ExportRequest(jobs, job, dataset, chunk_items=3)  # 20 items: 7 chunks
    pieces = list(export_results(request, "parquet"))
    assert len(pieces) == 8  # one row group each, then the footer
    parquet = pq.ParquetFile(io.BytesIO(b"".join(pieces)))
    assert parquet.num_row_groups == 7
    assert [parquet.metadata.row_group(i).num_rows for i in range(7)] == [120] * 6 + [80]
    assert pl.read_parquet(io.BytesIO(b"".join(pieces))).equals(expected)
    arrow = b"".join(export_results(request, "arrow"))
    assert pl.read_ipc_stream(io.BytesIO(arrow)).equals(expected)
    lines = b"".join(export_results(request, "json")).decode()
    assert pl.read_ndjson(io.StringIO(lines), schema=SCHEMA).equals(expected)


def test_a_job_without_finished_items_exports_an_empty_table(client: TestClient) -> None:
    dataset = client.app.state.engine.catalog.get(DEMO_ID)  # type: ignore[attr-defined]
    jobs = client.app.state.jobs.job_store  # type: ignore[attr-defined]
    request = ExportRequest(jobs, "no-such-job", dataset)
    frame = pl.read_parquet(io.BytesIO(b"".join(export_results(request, "parquet"))))
    assert frame.height == 0 and frame.schema == pl.Schema(SCHEMA)
    arrow = pl.read_ipc_stream(io.BytesIO(b"".join(export_results(request, "arrow"))))
    assert arrow.height == 0 and arrow.schema == pl.Schema(SCHEMA)
    assert b"".join(export_results(request, "json")) == b""


def test_an_item_with_corrupt_coordinates_is_left_out(client: TestClient) -> None:
    job = finished_job(client, seed=4343)
    store = client.app.state.engine.store  # type: ignore[attr-defined]
    key, preamble = store.query(
        "SELECT key, preamble FROM job_items WHERE job_id = ? ORDER BY idx LIMIT 1", (job,)
    )[0]
    nan = np.full((40, 2), np.nan, dtype="<f4").tobytes()
    store.execute("UPDATE projections SET coords = ? WHERE key = ?", (nan, key))
    response = client.get(f"/batches/{job}/results", params={"format": "parquet"})
    frame = pl.read_parquet(io.BytesIO(response.content))
    assert frame.height == 19 * 40
    first = frame.filter(pl.col("preamble") == preamble)["projector"].unique().to_list()
    assert first == ["umap"]  # its tsne item is gone, its umap item is there


def test_results_of_an_unknown_job_are_a_404(client: TestClient) -> None:
    response = client.get("/batches/nope/results", params={"format": "json"})
    assert response.status_code == 404 and response.json()["code"] == "job_not_found"
