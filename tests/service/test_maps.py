"""Global maps through a real server on loopback (``python -m service``) on the demo fixture
(400 rows): create → done, content-addressed ids, status, list, points in three formats checked
against the clustering TSV, ETag/304, events, every error code, DELETE, and durability across a
real SIGKILL (a killed fit leaves no coordinates; the restarted server finishes the map).

The method is openTSNE with few iterations: once numba's on-disk cache (the tests share
``.cache/numba``) holds its nearest-neighbour functions, a fit of the fixture takes a fraction of
a second in a fresh worker, where a umap-learn map of it took seconds even with that cache; the
first run on a machine with an empty cache compiles once, for tens of seconds.
"""

from __future__ import annotations

import io
import json
import shutil
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from xml.etree import ElementTree

import httpx
import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.ipc as ipc
import pytest
from fastapi.testclient import TestClient
from support import DEMO10, DEMO_ID, SEED_PREAMBLE, Server, app_client

from clustviz.alignment import (
    AlignParams,
    align_layout,
    align_to_map,
    centroid_offsets,
    similarity_transform,
)
from clustviz.cli import main as cli_main
from clustviz.client import Client
from clustviz.data import DataCatalog
from clustviz.data.dataset import preamble_id
from clustviz.workers import WorkerPool

FAST = {"early_exaggeration_iter": 50, "n_iter": 100}
#: A fit that runs for seconds: long enough to be seen running, and killed.
SLOW = {"early_exaggeration_iter": 250, "n_iter": 4000}


@pytest.fixture(scope="module")
def server(data_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """This module's own server (its tests SIGKILL it), with no projector to warm."""
    server = Server(data_dir, tmp_path_factory.mktemp("maps-state"), CLUSTVIZ_WARM="[]")
    server.start()
    yield server
    server.kill()


def post(server: Server, **body: Any) -> httpx.Response:
    payload = {"dataset": DEMO_ID, "method": "opentsne", "fit_on": "points", **body}
    return httpx.post(server.url + "/maps", json=payload, timeout=60)


def wait_finished(server: Server, path: str, timeout: float = 240) -> dict[str, Any]:
    """The status at ``path`` (a map's or a batch's) once it is no longer queued or running."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status = httpx.get(f"{server.url}{path}", timeout=10).json()
        if status["state"] not in ("queued", "running"):
            return status
        time.sleep(0.1)
    raise AssertionError(f"{path} did not finish; log:\n{server.log_tail()}")


def wait_done(server: Server, map_id: str, timeout: float = 240) -> dict[str, Any]:
    return wait_finished(server, f"/maps/{map_id}", timeout)


def tsv_rows() -> pl.DataFrame:
    """The fixture's clustering TSV: the rows a map of the dataset must serve."""
    (tsv,) = (DEMO10 / "clustering").glob("*.tsv")
    return pl.read_csv(tsv, separator="\t").select("preamble", "guess", "token_id", "cluster_id")


@pytest.fixture(scope="module")
def done_map(server: Server) -> dict[str, Any]:
    created = post(server, params=FAST)
    assert created.status_code == 202, created.text
    body = created.json()
    assert body["state"] in ("queued", "running")
    assert body["links"]["points"] == f"/maps/{body['id']}/points?format=parquet"
    assert created.headers["location"] == f"/maps/{body['id']}"
    status = wait_done(server, body["id"])
    assert status["state"] == "done", status
    return status


def test_a_map_is_made_and_reports_what_it_used(done_map: dict[str, Any]) -> None:
    summary = done_map["summary"]
    assert (summary["method"], summary["fit_on"], summary["n_rows"]) == ("opentsne", "points", 400)
    assert summary["params"]["n_iter"] == 100 and summary["seed"] == 1871
    assert summary["timings"]["total"] > 0 and "fit" in summary["timings"]
    assert 0.5 < summary["quality"]["trustworthiness"] <= 1
    assert summary["versions"]["openTSNE"]
    assert done_map["progress"] == 1.0 and done_map["stage"] == "done"
    assert done_map["elapsed_s"] > 0 and done_map["error"] is None
    assert done_map["spec"]["plan"]["params"]["n_iter"] == 100


def test_the_same_request_names_the_same_map_and_is_not_refitted(
    server: Server, done_map: dict[str, Any]
) -> None:
    again = post(server, params=FAST)
    assert again.status_code == 200, again.text
    assert again.json()["id"] == done_map["id"]
    assert again.json()["finished"] == done_map["finished"]  # not fitted a second time
    # the defaults spelt out resolve to the same plan: the same map
    spelt = post(server, params={**FAST, "perplexity": 30.0}, seed=1871)
    assert spelt.json()["id"] == done_map["id"]
    other = post(server, params=FAST, seed=7)
    assert other.status_code == 202 and other.json()["id"] != done_map["id"]
    assert wait_done(server, other.json()["id"])["state"] == "done"
    listed = httpx.get(server.url + "/maps", timeout=10).json()
    ids = [item["id"] for item in listed]
    assert done_map["id"] in ids and other.json()["id"] in ids
    assert ids.index(other.json()["id"]) < ids.index(done_map["id"])  # newest first


def test_points_in_three_formats_match_the_datasets_rows(
    server: Server, done_map: dict[str, Any]
) -> None:
    url = f"{server.url}/maps/{done_map['id']}/points"
    expected = tsv_rows()
    whole = httpx.get(url, timeout=30).json()
    frame = pl.DataFrame(whole["points"])
    assert whole["n"] == 400 == frame.height
    assert frame.columns == ["preamble", "guess", "token_id", "cluster_id", "x", "y"]
    key = ["preamble", "guess", "token_id", "cluster_id"]
    assert frame.select(key).sort(key).equals(expected.sort(key))
    assert np.isfinite(frame["x"].to_numpy()).all() and frame["x"].std() > 0
    parquet = pl.read_parquet(io.BytesIO(httpx.get(url, params={"format": "parquet"}).content))
    assert parquet["x"].dtype == pl.Float32
    assert np.allclose(parquet["x"].to_numpy(), frame["x"].to_numpy())
    arrow = ipc.open_stream(httpx.get(url, params={"format": "arrow"}).content).read_all()
    assert arrow.schema.field("y").type == pa.float32()
    assert np.allclose(arrow.column("y").to_numpy(), frame["y"].to_numpy())
    one = pl.DataFrame(httpx.get(url, params={"preamble": SEED_PREAMBLE}).json()["points"])
    rows = expected.filter(pl.col("preamble") == SEED_PREAMBLE)
    assert one.height == rows.height == 40
    assert one.select(key).equals(rows)  # the TSV's order is the dataset's row order
    assert one.equals(frame.filter(pl.col("preamble") == SEED_PREAMBLE))  # the map's own rows
    by_id = httpx.get(url, params={"preamble_id": preamble_id(SEED_PREAMBLE)}).json()
    assert pl.DataFrame(by_id["points"]).equals(one)


def test_points_as_columns_are_the_same_rows(server: Server, done_map: dict[str, Any]) -> None:
    """format=columns (the page's form): one array per column, each preamble once."""
    url = f"{server.url}/maps/{done_map['id']}/points"
    rows = pl.DataFrame(httpx.get(url, timeout=30).json()["points"])
    answer = httpx.get(url, params={"format": "columns"}, timeout=30)
    assert answer.status_code == 200 and answer.headers["content-type"] == "application/json"
    body = answer.json()
    assert body["n"] == rows.height == 400 == len(body["preamble_index"])
    assert len(body["preambles"]) == len(set(body["preambles"])) == rows["preamble"].n_unique()
    assert [body["preambles"][i] for i in body["preamble_index"]] == rows["preamble"].to_list()
    assert body["preamble_ids"] == [preamble_id(text) for text in body["preambles"]]
    for name in ("guess", "token_id", "cluster_id"):
        assert body[name] == rows[name].to_list(), name
    # the coordinates read back to the stored float32 values exactly
    stored = pl.read_parquet(io.BytesIO(httpx.get(url, params={"format": "parquet"}).content))
    for name in ("x", "y"):
        assert np.array_equal(np.asarray(body[name], dtype=np.float32), stored[name].to_numpy())
    one = httpx.get(url, params={"format": "columns", "preamble": SEED_PREAMBLE}).json()
    assert (one["n"], one["preambles"], set(one["preamble_index"])) == (40, [SEED_PREAMBLE], {0})
    assert one["guess"] == rows.filter(pl.col("preamble") == SEED_PREAMBLE)["guess"].to_list()
    etags = {httpx.get(url, params={"format": fmt}).headers["etag"] for fmt in ("json", "columns")}
    assert len(etags) == 2


def test_a_done_maps_points_answer_if_none_match_with_304(
    server: Server, done_map: dict[str, Any]
) -> None:
    url = f"{server.url}/maps/{done_map['id']}/points"
    params = {"preamble": SEED_PREAMBLE}
    first = httpx.get(url, params=params)
    etag = first.headers["etag"]
    again = httpx.get(url, params=params, headers={"If-None-Match": etag})
    assert again.status_code == 304 and again.content == b"" and again.headers["etag"] == etag
    others = {
        httpx.get(url).headers["etag"],
        httpx.get(url, params={**params, "format": "parquet"}).headers["etag"],
    }
    assert etag not in others and len(others) == 2  # another selection, another answer
    assert httpx.get(url, headers={"If-None-Match": etag}).status_code == 200


@pytest.mark.parametrize("projector", ["tsne", "clusterplot"])
def test_a_projection_aligned_to_a_map_comes_back_in_its_frame(
    server: Server, done_map: dict[str, Any], projector: str
) -> None:
    """POST /projections with align: the layout the server computed alone, aligned to the
    preamble's rows of the map by clustviz.alignment (checked by computing it here from the
    same inputs: the generic relaxation for tsne, ClusterPlot's own for clusterplot), its
    clusters nearer their map places than the Procrustes-moved layout."""
    request = {"dataset": DEMO_ID, "preamble": SEED_PREAMBLE, "projector": projector}
    alone = httpx.post(f"{server.url}/projections", json=request, timeout=120)
    assert alone.status_code == 200, alone.text
    answer = httpx.post(
        f"{server.url}/projections",
        json={**request, "align": {"map": done_map["id"]}},
        timeout=120,
    )
    assert answer.status_code == 200, answer.text
    aligned = answer.json()
    assert aligned["aligned_to"] == {
        "map": done_map["id"],
        "params": AlignParams().model_dump(mode="json"),
    }
    assert alone.json()["aligned_to"] is None
    assert aligned["hulls"] is None  # drawn for the layout before alignment
    guesses = [point["guess"] for point in aligned["points"]]
    assert guesses == [point["guess"] for point in alone.json()["points"]]
    layout = np.array([[p["x"], p["y"]] for p in alone.json()["points"]])
    moved = np.array([[p["x"], p["y"]] for p in aligned["points"]])
    map_rows = httpx.get(
        f"{server.url}/maps/{done_map['id']}/points", params={"preamble": SEED_PREAMBLE}
    ).json()["points"]
    rows = np.array([[p["x"], p["y"]] for p in map_rows])
    view = DataCatalog(DEMO10).get(DEMO_ID).view(SEED_PREAMBLE)
    params = alone.json()["params"]
    expected = align_layout(
        projector, view.X, view.labels, layout.astype(np.float32), rows, None, params
    )
    if projector == "tsne":  # the generic relaxation
        np.testing.assert_array_equal(
            expected, align_to_map(view.X, view.labels, layout.astype(np.float32), rows)
        )
    np.testing.assert_allclose(moved, expected, atol=1e-4 * np.ptp(rows))
    framed = similarity_transform(layout, rows)
    nearer = centroid_offsets(moved, rows, view.labels).mean()
    assert nearer < 0.8 * centroid_offsets(framed, rows, view.labels).mean()
    assert aligned["metrics"] != alone.json()["metrics"]  # the aligned layout's own scores


def test_alignment_refusals(server: Server, done_map: dict[str, Any]) -> None:
    request = {"dataset": DEMO_ID, "preamble": SEED_PREAMBLE, "projector": "tsne"}
    url = f"{server.url}/projections"
    unknown = httpx.post(url, json={**request, "align": {"map": "0" * 16}}, timeout=120)
    assert unknown.status_code == 404 and unknown.json()["code"] == "map_not_found"
    bad_weight = httpx.post(url, json={**request, "align": {"map": "x", "weight": -1}})
    assert bad_weight.status_code == 422 and "weight" in bad_weight.text
    running = post(server, params=SLOW)
    assert running.status_code == 202, running.text
    try:
        waiting = httpx.post(
            url, json={**request, "align": {"map": running.json()["id"]}}, timeout=120
        )
        assert waiting.status_code == 409 and waiting.json()["code"] == "map_not_ready"
    finally:
        httpx.delete(f"{server.url}/maps/{running.json()['id']}", timeout=60)


def test_an_aligned_projection_as_an_image_is_the_aligned_layout_without_blobs(
    server: Server, done_map: dict[str, Any]
) -> None:
    request = {"dataset": DEMO_ID, "preamble": SEED_PREAMBLE, "projector": "tsne"}
    url = f"{server.url}/projections"
    aligned = {**request, "align": {"map": done_map["id"]}}
    svg = httpx.post(url, json=aligned, headers={"accept": "image/svg+xml"}, timeout=120)
    assert svg.status_code == 200, svg.text
    assert svg.headers["content-type"].startswith("image/svg+xml")
    root = ElementTree.fromstring(svg.content)
    texts = {"".join(node.itertext()).strip() for node in root.iter(SVG + "text")}
    assert f"t-SNE, aligned to map {done_map['id']}" in "\n".join(texts)
    plain = httpx.post(url, json=request, headers={"accept": "image/svg+xml"}, timeout=120)
    assert plain.headers["etag"] != svg.headers["etag"]
    assert not any("aligned to map" in text for text in texts_of(plain.content))
    again = httpx.post(url, json=aligned, headers={"accept": "image/svg+xml"}, timeout=120)
    assert again.content == svg.content and again.headers["etag"] == svg.headers["etag"]
    other = {**request, "align": {"map": done_map["id"], "weight": 1.0}}
    heavier = httpx.post(url, json=other, headers={"accept": "image/png"}, timeout=120)
    assert heavier.status_code == 200 and heavier.content[:4] == b"\x89PNG"
    assert heavier.headers["etag"] != svg.headers["etag"].replace(".svg", ".png")


SVG = "{http://www.w3.org/2000/svg}"


def texts_of(svg: bytes) -> set[str]:
    root = ElementTree.fromstring(svg)
    return {"".join(node.itertext()).strip() for node in root.iter(SVG + "text")}


def post_batch(server: Server, **body: Any) -> httpx.Response:
    return httpx.post(f"{server.url}/batches", json={"dataset": DEMO_ID, **body}, timeout=60)


def wait_batch(server: Server, job_id: str, timeout: float = 240) -> dict[str, Any]:
    return wait_finished(server, f"/batches/{job_id}", timeout)


def batch_results(server: Server, job_id: str, fmt: str) -> pl.DataFrame:
    body = httpx.get(f"{server.url}/batches/{job_id}/results", params={"format": fmt}).content
    if fmt == "json":
        return pl.DataFrame([json.loads(line) for line in body.decode().splitlines()])
    if fmt == "arrow":
        frame = pl.from_arrow(ipc.open_stream(body).read_all())
        assert isinstance(frame, pl.DataFrame)
        return frame
    return pl.read_parquet(io.BytesIO(body))


def pool_tasks(server: Server) -> int:
    workers = httpx.get(f"{server.url}/health").json()["pool"]["workers"]
    return sum(worker["tasks_done"] for worker in workers)


def job_keys(server: Server, job_id: str) -> set[str]:
    with sqlite3.connect(server.state_dir / "clustviz.sqlite3") as db:
        rows = db.execute("SELECT key FROM job_items WHERE job_id = ?", (job_id,)).fetchall()
    return {key for (key,) in rows}


def test_a_batch_aligned_to_a_map_gives_each_item_what_projections_gives(
    server: Server, done_map: dict[str, Any]
) -> None:
    """POST /batches with align: each item's result is the aligned layout POST /projections
    answers for that preamble; the exports say the map; an unaligned batch of the same items
    shares the layouts (nothing computed again) but never the aligned results."""
    projectors = ["tsne", "pacmap", "clusterplot"]  # clusterplot: its own aligner
    preambles = tsv_rows()["preamble"].unique(maintain_order=True).to_list()[:3]
    align = {"map": done_map["id"], "weight": 0.5}
    body = {"preambles": preambles, "projectors": projectors, "seed": 61}
    created = post_batch(server, **body, align=align)
    assert created.status_code == 202, created.text
    job = created.json()["id"]
    assert created.json()["spec"]["align"] == {**AlignParams().model_dump(), **align}
    status = wait_batch(server, job)
    assert (status["state"], status["done"], status["failed"]) == ("done", 9, 0), status
    frame = batch_results(server, job, "parquet")
    assert frame.columns == [
        *("preamble", "guess", "token_id", "cluster_id", "projector", "x", "y", "aligned_to")
    ]
    assert frame.height == 9 * 40 and set(frame["aligned_to"]) == {done_map["id"]}
    assert batch_results(server, job, "arrow").equals(frame)
    lines = batch_results(server, job, "json")
    assert lines["aligned_to"].to_list() == frame["aligned_to"].to_list()
    assert np.allclose(lines["x"].to_numpy(), frame["x"].to_numpy())
    for preamble in preambles:
        for projector in projectors:
            request = {"dataset": DEMO_ID, "preamble": preamble, "projector": projector}
            single = httpx.post(
                f"{server.url}/projections", json={**request, "seed": 61, "align": align}
            ).json()
            assert single["cached"] is True  # the batch's layout, shared
            assert single["aligned_to"]["map"] == done_map["id"]
            rows = frame.filter(
                (pl.col("preamble") == preamble) & (pl.col("projector") == projector)
            )
            assert rows["guess"].to_list() == [p["guess"] for p in single["points"]]
            expected = np.array([[p["x"], p["y"]] for p in single["points"]], dtype=np.float32)
            np.testing.assert_array_equal(rows.select("x", "y").to_numpy(), expected)
    # the same items unaligned: the layouts come from the cache, the results are not aligned
    tasks = pool_tasks(server)
    plain_job = post_batch(server, **body).json()["id"]
    assert wait_batch(server, plain_job)["done"] == 9
    assert pool_tasks(server) == tasks  # nothing computed again
    plain = batch_results(server, plain_job, "parquet")
    assert "aligned_to" not in plain.columns and plain.height == frame.height
    assert not np.allclose(plain["x"].to_numpy(), frame["x"].to_numpy())
    assert job_keys(server, job).isdisjoint(job_keys(server, plain_job))
    layout = httpx.post(
        f"{server.url}/projections",
        json={"dataset": DEMO_ID, "preamble": preambles[0], "projector": "tsne", "seed": 61},
    ).json()
    first = plain.filter((pl.col("preamble") == preambles[0]) & (pl.col("projector") == "tsne"))
    assert first["x"].to_list() == pytest.approx([p["x"] for p in layout["points"]])
    # another weight: other results, under other keys
    heavier = post_batch(server, **body, align={**align, "weight": 2.0}).json()["id"]
    assert wait_batch(server, heavier)["done"] == 9
    assert job_keys(server, heavier).isdisjoint(job_keys(server, job))
    assert not np.allclose(batch_results(server, heavier, "arrow")["x"].to_numpy(), frame["x"])
    # the same aligned batch again: its aligned results are found, not aligned again
    again = post_batch(server, **body, align=align).json()["id"]
    assert wait_batch(server, again)["done"] == 9
    assert job_keys(server, again) == job_keys(server, job)
    assert batch_results(server, again, "parquet").equals(frame)
    with Client(server.url) as client:
        points = client.batch(DEMO_ID, **body, align=align, progress=False)
    assert points.equals(frame)


def test_the_cli_aligns_a_batch(
    server: Server, done_map: dict[str, Any], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "aligned.parquet"
    command = ["batch", "--url", server.url, "--dataset", DEMO_ID, "--projectors", "tsne"]
    command += ["--preamble", SEED_PREAMBLE, "--quiet", "-o", str(out)]
    assert cli_main([*command, "--align", done_map["id"]]) == 0
    frame = pl.read_parquet(out)
    single = httpx.post(
        f"{server.url}/projections",
        json={
            "dataset": DEMO_ID,
            "preamble": SEED_PREAMBLE,
            "projector": "tsne",
            "align": {"map": done_map["id"]},
        },
        timeout=120,
    ).json()
    assert set(frame["aligned_to"]) == {done_map["id"]} and frame.height == 40
    assert frame["x"].to_list() == pytest.approx([p["x"] for p in single["points"]])
    assert cli_main([*command, "--align", "0" * 16]) == 2
    assert "map_not_found" in capsys.readouterr().err


def test_a_batch_refuses_a_map_it_cannot_align_to_before_it_is_accepted(
    server: Server, done_map: dict[str, Any]
) -> None:
    body = {"preambles": [SEED_PREAMBLE], "projectors": ["tsne"]}

    def jobs() -> int:
        with sqlite3.connect(server.state_dir / "clustviz.sqlite3") as db:
            return int(db.execute("SELECT COUNT(*) FROM jobs").fetchone()[0])

    before = jobs()
    unknown = post_batch(server, **body, align={"map": "0" * 16})
    assert unknown.status_code == 404 and unknown.json()["code"] == "map_not_found"
    bad_weight = post_batch(server, **body, align={"map": done_map["id"], "weight": -1})
    assert bad_weight.status_code == 422 and "weight" in bad_weight.text
    no_map = post_batch(server, **body, align={"weight": 1})
    assert no_map.status_code == 422 and "map" in no_map.text
    tiny = next(
        item["id"]
        for item in httpx.get(server.url + "/datasets").json()
        if item.get("n_preambles") == 2
    )
    tiny_map = post(server, dataset=tiny, params={**FAST, "perplexity": 3})
    assert tiny_map.status_code == 202, tiny_map.text
    assert wait_done(server, tiny_map.json()["id"])["state"] == "done"
    for url, request in (
        ("/batches", {"dataset": DEMO_ID, **body}),
        ("/projections", {"dataset": DEMO_ID, "preamble": SEED_PREAMBLE, "projector": "tsne"}),
    ):
        other = httpx.post(
            server.url + url, json={**request, "align": {"map": tiny_map.json()["id"]}}
        )
        assert other.status_code == 422 and other.json()["code"] == "invalid_request"
        assert tiny in other.json()["detail"] and "align.map" in other.json()["detail"]
    running = post(server, params=SLOW, seed=62)
    assert running.status_code == 202, running.text
    try:
        waiting = post_batch(server, **body, align={"map": running.json()["id"]})
        assert waiting.status_code == 409 and waiting.json()["code"] == "map_not_ready"
    finally:
        httpx.delete(f"{server.url}/maps/{running.json()['id']}", timeout=60)
    assert jobs() == before  # nothing accepted


def test_a_map_deleted_while_its_batch_runs_fails_the_items_left(server: Server) -> None:
    """Items aligned after the map was deleted fail with map_not_found (and say so); the batch
    finishes; what was done before stays exported."""
    map_id = post(server, params=FAST, seed=63).json()["id"]
    assert wait_done(server, map_id)["state"] == "done"
    created = post_batch(
        server,
        preambles="all",
        projectors=["tsne"],
        params={"tsne": {"max_iter": 5000}},  # long enough to delete the map meanwhile
        seed=64,
        align={"map": map_id},
    )
    assert created.status_code == 202, created.text
    assert httpx.delete(f"{server.url}/maps/{map_id}").json()["state"] == "deleted"
    status = wait_batch(server, created.json()["id"])
    assert status["state"] == "done" and status["done"] + status["failed"] == 10
    assert status["failed"] >= 1, status
    codes = {error["code"] for error in status["errors"]}
    assert codes == {"map_not_found"}
    assert all(f"align.map={map_id!r}" in error["detail"] for error in status["errors"])
    frame = batch_results(server, created.json()["id"], "parquet")
    assert frame.height == 40 * status["done"]


def test_an_aligned_batch_killed_mid_job_resumes_aligned(
    server: Server, done_map: dict[str, Any]
) -> None:
    """SIGKILL mid-job: the restarted server resumes the job with its align (the aligner is
    there before the jobs resume); every item ends aligned, the ones done before unchanged."""
    align = {"map": done_map["id"], "weight": 0.7}
    body = {"preambles": "all", "projectors": ["tsne"], "params": {"tsne": {"max_iter": 4000}}}
    job = post_batch(server, **body, seed=65, align=align).json()["id"]
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        status = httpx.get(f"{server.url}/batches/{job}", timeout=10).json()
        if status["done"] >= 2:
            break
        time.sleep(0.05)
    assert 2 <= status["done"] < 10, status  # killed mid-job
    before = batch_results(server, job, "parquet")
    server.kill()
    server.start()
    status = wait_batch(server, job)
    assert (status["state"], status["done"], status["failed"]) == ("done", 10, 0), status
    after = batch_results(server, job, "parquet")
    assert after.height == 400 and set(after["aligned_to"]) == {done_map["id"]}
    kept = before.join(after, on=["preamble", "guess"], suffix="_after")
    assert kept.height == before.height  # every point finished before the kill, unchanged
    assert kept["x"].equals(kept["x_after"], check_names=False)
    assert kept["y"].equals(kept["y_after"], check_names=False)
    last = after.filter(pl.col("preamble") == after["preamble"][-1])
    single = httpx.post(
        f"{server.url}/projections",
        json={
            "dataset": DEMO_ID,
            "preamble": last["preamble"][0],
            "projector": "tsne",
            "params": {"max_iter": 4000},
            "seed": 65,
            "align": align,
        },
        timeout=120,
    ).json()
    expected = np.array([[p["x"], p["y"]] for p in single["points"]], dtype=np.float32)
    np.testing.assert_array_equal(last.select("x", "y").to_numpy(), expected)


def test_the_client_and_the_cli_fetch_maps(
    server: Server, done_map: dict[str, Any], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    url = f"{server.url}/maps/{done_map['id']}/points"
    served = pl.read_parquet(io.BytesIO(httpx.get(url, params={"format": "parquet"}).content))
    with Client(server.url) as client:  # the same request: the same map, not fitted again
        frame = client.map(DEMO_ID, method="opentsne", fit_on="points", params=FAST, progress=False)
        assert frame.equals(served) and frame.height == 400
        one = client.map_points(done_map["id"], preamble=SEED_PREAMBLE)
        assert one.equals(served.filter(pl.col("preamble") == SEED_PREAMBLE))
    out = tmp_path / "map.arrow"
    command = ["map", "--url", server.url, "--dataset", DEMO_ID, "--method", "opentsne"]
    command += ["--fit-on", "points", "--params", json.dumps(FAST), "--quiet"]
    assert cli_main([*command, "--seed", "5", "-o", str(out)]) == 0  # a new map, followed
    made = pl.from_arrow(ipc.open_stream(out.read_bytes()).read_all())
    assert isinstance(made, pl.DataFrame) and made.height == 400
    assert made.select("preamble", "guess").equals(served.select("preamble", "guess"))
    assert not np.allclose(made["x"].to_numpy(), served["x"].to_numpy())  # another seed
    refused = [*command[:5], "--method", "nope", "-o", str(tmp_path / "x.parquet")]
    assert cli_main(refused) == 2
    assert "unknown_map_method" in capsys.readouterr().err


def test_a_preamble_on_a_done_map_as_png_and_svg_with_304(
    server: Server, done_map: dict[str, Any]
) -> None:
    url = f"{server.url}/maps/{done_map['id']}/plot"
    params = {"preamble": SEED_PREAMBLE}
    png = httpx.get(url + ".png", params=params, timeout=60)
    assert png.status_code == 200, png.text
    assert png.headers["content-type"] == "image/png" and png.content[:8] == b"\x89PNG\r\n\x1a\n"
    assert int.from_bytes(png.content[16:20], "big") == 800  # 8 in × 100 dpi
    etag = png.headers["etag"]
    again = httpx.get(url + ".png", params=params, headers={"If-None-Match": etag})
    assert again.status_code == 304 and again.content == b"" and again.headers["etag"] == etag
    by_id = {"preamble_id": preamble_id(SEED_PREAMBLE)}
    assert httpx.get(url + ".png", params=by_id).headers["etag"] == etag  # one preamble, one key
    svg = httpx.get(url + ".svg", params=params, timeout=60)
    assert svg.headers["content-type"].startswith("image/svg+xml") and svg.headers["etag"] != etag
    root = ElementTree.fromstring(svg.content)
    assert root.tag == "{http://www.w3.org/2000/svg}svg"
    nodes = root.iter("{http://www.w3.org/2000/svg}text")
    texts = {"".join(node.itertext()).strip() for node in nodes}
    guesses = tsv_rows().filter(pl.col("preamble") == SEED_PREAMBLE)["guess"].to_list()
    assert {guess.strip() for guess in guesses} <= texts  # every guess of the preamble as text
    other = tsv_rows().filter(pl.col("preamble") != SEED_PREAMBLE)["guess"].unique().to_list()
    # numbers are axis ticks too, and "a" is the legend's key glyph of a text layer
    words = {g for g in set(other) - set(guesses) if not g.lstrip("-").isdigit() and g != "a"}
    assert len(words) > 100 and not words & texts  # the other rows are dots, not text
    assert any(SEED_PREAMBLE[:20] in text for text in texts)  # the title names the preamble
    assert any("openTSNE" in text for text in texts)  # the method
    assert any(text.startswith("dataset: HuggingFaceTB:SmolLM2-135M") for text in texts)
    assert b"<image" in svg.content  # the map's rows: one raster image, not a node per dot


def test_a_map_plot_needs_a_known_preamble(server: Server, done_map: dict[str, Any]) -> None:
    url = f"{server.url}/maps/{done_map['id']}/plot.svg"
    missing = httpx.get(url)
    assert missing.status_code == 422 and missing.json()["code"] == "invalid_request"
    assert "preamble" in missing.json()["detail"]
    for params in ({"preamble": "no such preamble"}, {"preamble_id": "0123"}):
        unknown = httpx.get(url, params=params)
        assert unknown.status_code == 404 and unknown.json()["code"] == "preamble_not_found"
    assert (
        httpx.get(url.replace(".svg", ".gif"), params={"preamble": SEED_PREAMBLE}).status_code
        == 422
    )


def test_events_stream_progress_then_end(server: Server) -> None:
    map_id = post(server, params=FAST, seed=11).json()["id"]
    with httpx.stream("GET", f"{server.url}/maps/{map_id}/events", timeout=120) as response:
        assert response.headers["content-type"].startswith("text/event-stream")
        lines = [line for line in response.iter_lines() if line.startswith(("id:", "event:"))]
    events = list(zip(lines[1::2], lines[0::2], strict=True))
    assert events[-1][0] == "event: end"
    ids = [int(event_id.removeprefix("id: ")) for _, event_id in events]
    assert ids == sorted(set(ids))  # increasing, never twice
    status = httpx.get(f"{server.url}/maps/{map_id}").json()
    assert status["state"] == "done" and ids[-1] == status["updates"] + 1
    resumed = httpx.get(
        f"{server.url}/maps/{map_id}/events", headers={"Last-Event-ID": str(ids[-1])}
    )
    assert resumed.status_code == 204


@pytest.mark.parametrize(
    ("body", "status", "code"),
    [
        ({"method": "nope"}, 422, "unknown_map_method"),
        ({"fit_on": "everything"}, 422, "unknown_fit_on"),
        ({"method": "pacmap", "fit_on": "cluster_means"}, 422, "unsupported_fit_on"),
        ({"supervised": True}, 422, "unsupported_supervised"),
        ({"params": {"perplexity": -1}}, 422, "invalid_params"),
        ({"params": {"no_such": 1}}, 422, "invalid_params"),
        ({"dataset": "nope"}, 404, "dataset_not_found"),
        ({"seed": -1}, 422, "invalid_request"),
    ],
)
def test_bad_requests_are_refused_before_queueing(
    server: Server, body: dict[str, Any], status: int, code: str
) -> None:
    before = len(httpx.get(server.url + "/maps").json())
    response = post(server, **body)
    assert response.status_code == status, response.text
    assert response.json()["code"] == code
    assert len(httpx.get(server.url + "/maps").json()) == before  # nothing queued


def test_too_few_points_for_the_fit(server: Server) -> None:
    tiny = next(
        item["id"]
        for item in httpx.get(server.url + "/datasets").json()
        if item.get("n_preambles") == 2
    )
    # the tiny dataset has 3 clusters: too few cluster means for openTSNE (at least 5)
    response = post(server, dataset=tiny, fit_on="cluster_means")
    assert response.status_code == 422 and response.json()["code"] == "too_few_points"
    assert "needs at least 5 clusters, got 3" in response.json()["detail"]


def test_unknown_maps_are_404_and_unfinished_ones_409(server: Server) -> None:
    plot = f"/plot.png?preamble_id={preamble_id(SEED_PREAMBLE)}"
    for path in ("", "/points", "/events", plot):
        response = httpx.get(f"{server.url}/maps/0123abcd{path}")
        assert response.status_code == 404 and response.json()["code"] == "map_not_found"
    slow = post(server, params=SLOW, seed=21).json()["id"]
    for path in ("/points", plot):
        early = httpx.get(f"{server.url}/maps/{slow}{path}")
        assert early.status_code == 409 and early.json()["code"] == "map_not_ready"
        assert "etag" not in early.headers
    wait_running(server, slow)
    deleted = httpx.delete(f"{server.url}/maps/{slow}")
    assert deleted.status_code == 200 and deleted.json()["state"] == "deleted"
    # the worker was asked to stop the fit, and did: it removed the request when it saw it
    cancel = server.state_dir / "map-progress" / f"{slow}.json.cancel"
    deadline = time.monotonic() + 30
    while cancel.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not cancel.exists()
    assert httpx.get(f"{server.url}/maps/{slow}").json()["code"] == "map_not_found"
    assert httpx.delete(f"{server.url}/maps/{slow}").json()["code"] == "map_not_found"


def test_delete_removes_a_done_map_and_its_coordinates(server: Server) -> None:
    map_id = post(server, params=FAST, seed=31).json()["id"]
    assert wait_done(server, map_id)["state"] == "done"
    assert httpx.delete(f"{server.url}/maps/{map_id}").json()["state"] == "deleted"
    with sqlite3.connect(server.state_dir / "clustviz.sqlite3") as db:
        assert db.execute("SELECT COUNT(*) FROM maps WHERE id = ?", (map_id,)).fetchone() == (0,)
    assert httpx.get(f"{server.url}/maps/{map_id}/points").json()["code"] == "map_not_found"
    again = post(server, params=FAST, seed=31)  # made again from scratch
    assert again.status_code == 202 and again.json()["id"] == map_id


def wait_running(server: Server, map_id: str) -> dict[str, Any]:
    """The map's status once its fit is under way (progress past 5 %); every progress seen."""
    deadline = time.monotonic() + 120
    seen: set[float] = set()
    while time.monotonic() < deadline:
        status = httpx.get(f"{server.url}/maps/{map_id}", timeout=10).json()
        seen.add(status["progress"])
        if status["stage"] == "fit" and status["progress"] > 0.05:
            break
        time.sleep(0.05)
    assert status["state"] == "running" and status["progress"] < 1, status
    return {**status, "seen": seen}


def test_a_map_killed_mid_fit_is_never_served_half_and_finishes_after_restart(
    server: Server,
) -> None:
    map_id = post(server, params=SLOW, seed=41).json()["id"]
    status = wait_running(server, map_id)
    assert len(status["seen"]) >= 2  # the worker's progress reached the server while it ran
    waiting = post(server, params=FAST, seed=42).json()["id"]
    time.sleep(0.5)
    assert httpx.get(f"{server.url}/maps/{waiting}").json()["state"] == "queued"  # one at a time
    server.kill()
    with sqlite3.connect(server.state_dir / "clustviz.sqlite3") as db:
        state, coords, summary = db.execute(
            "SELECT state, coords, summary FROM maps WHERE id = ?", (map_id,)
        ).fetchone()
    assert (state, coords, summary) == ("running", None, None)  # no half map
    server.start()
    restarted = httpx.get(f"{server.url}/maps/{map_id}/points")
    assert restarted.status_code == 409 and restarted.json()["code"] == "map_not_ready"
    status = wait_done(server, map_id)
    assert status["state"] == "done", status
    assert wait_done(server, waiting)["state"] == "done"  # the queued one resumed too
    points = httpx.get(f"{server.url}/maps/{map_id}/points").json()
    assert points["n"] == 400
    with sqlite3.connect(server.state_dir / "clustviz.sqlite3") as db:
        (blob,) = db.execute("SELECT coords FROM maps WHERE id = ?", (map_id,)).fetchone()
    assert len(blob) == 400 * 2 * 4
    xy = np.frombuffer(blob, dtype="<f4").reshape(400, 2)
    assert np.allclose(xy[:, 0], [p["x"] for p in points["points"]])


def test_a_changed_dataset_file_makes_its_maps_stale_and_delete_needs_the_key(
    tmp_path: Path, cold_pool: WorkerPool
) -> None:
    data = tmp_path / "data"
    shutil.copytree(DEMO10, data)
    with app_client(data, tmp_path / "state", cold_pool, api_key="k") as client:
        created = client.post(
            "/maps",
            json={"dataset": DEMO_ID, "method": "opentsne", "fit_on": "points", "params": FAST},
            headers={"X-API-Key": "k"},
        )
        assert created.status_code == 202, created.text
        map_id = created.json()["id"]
        refused = client.post("/maps", json={"dataset": DEMO_ID})
        assert refused.status_code == 401 and refused.json()["code"] == "unauthorized"
        assert wait_done_client(client, map_id)["state"] == "done"
        assert client.get(f"/maps/{map_id}/points").status_code == 200
        (parquet,) = (data / "embeddings").glob("*.parquet")
        frame = pl.read_parquet(parquet)
        frame.with_columns(
            pl.Series("embedding", frame["embedding"].to_numpy()[::-1].copy())
        ).write_parquet(parquet)
        time.sleep(2.1)  # the catalog re-lists the data dir every 2 s
        stale = client.get(f"/maps/{map_id}/points")
        assert stale.status_code == 409 and stale.json()["code"] == "map_stale"
        denied = client.delete(f"/maps/{map_id}")
        assert denied.status_code == 401 and denied.json()["code"] == "unauthorized"
        assert client.delete(f"/maps/{map_id}", headers={"X-API-Key": "k"}).status_code == 200


def wait_done_client(client: TestClient, map_id: str, timeout: float = 120) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status = client.get(f"/maps/{map_id}").json()
        if status["state"] not in ("queued", "running"):
            return status
        time.sleep(0.1)
    raise AssertionError(json.dumps(status))
