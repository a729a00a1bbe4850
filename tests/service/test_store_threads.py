"""No SQL runs on the event loop: every statement the stores run, traced through the one place
they open connections (``service.database.connect``), while a real app runs a batch job, follows
its events, exports it, serves projections and a plot, cancels and deletes, makes a global map
and serves its points, starts and stops."""

from __future__ import annotations

import json
import sqlite3
import threading
from pathlib import Path
from typing import Any

import pytest
from support import DEMO10, DEMO_ID, SEED_PREAMBLE, app_client

import service.database
from clustviz.workers import WorkerPool

#: ``(thread id, statement)`` of every statement run on a traced connection.
Trace = list[tuple[int, str]]


def tracing_factory(trace: Trace) -> type[sqlite3.Connection]:
    class TracingConnection(sqlite3.Connection):
        def execute(self, sql: str, *args: Any) -> sqlite3.Cursor:
            trace.append((threading.get_ident(), sql))
            return super().execute(sql, *args)

        def executemany(self, sql: str, *args: Any) -> sqlite3.Cursor:
            trace.append((threading.get_ident(), sql))
            return super().executemany(sql, *args)

        def executescript(self, script: str) -> sqlite3.Cursor:
            trace.append((threading.get_ident(), script))
            return super().executescript(script)

    return TracingConnection


@pytest.fixture
def trace(monkeypatch: pytest.MonkeyPatch) -> Trace:
    statements: Trace = []
    factory = tracing_factory(statements)
    connect = service.database.connect

    def traced(database: str | Path, **options: Any) -> sqlite3.Connection:
        return connect(database, factory=factory, **options)

    monkeypatch.setattr(service.database, "connect", traced)
    return statements


def test_no_sqlite_statement_runs_on_the_event_loop(
    tmp_path: Path, cold_pool: WorkerPool, trace: Trace
) -> None:
    # no memory front: every read of a result or an image goes to the disk
    with app_client(DEMO10, tmp_path, cold_pool, memory_cache_bytes=0) as client:
        loop_thread = client.portal.call(threading.get_ident)  # type: ignore[union-attr]
        preambles = client.get(f"/datasets/{DEMO_ID}/preambles", params={"limit": 3}).json()
        texts = [item["text"] for item in preambles["items"]]
        body = {"dataset": DEMO_ID, "preambles": texts, "projectors": ["tsne"], "seed": 5}
        created = client.post("/batches", json=body)
        assert created.status_code == 202, created.text
        job_id = created.json()["id"]
        with client.stream("GET", f"/batches/{job_id}/events") as response:
            lines = [line for line in response.iter_lines() if line.startswith("event:")]
        assert lines[-1] == "event: end"
        status = client.get(f"/batches/{job_id}").json()
        assert (status["state"], status["done"]) == ("done", 3)
        ndjson = client.get(f"/batches/{job_id}/results", params={"format": "json"}).text
        assert len(ndjson.splitlines()) == 3 * 40
        resumed = client.get(f"/batches/{job_id}/events", headers={"Last-Event-ID": "3"})
        assert "event: end" in resumed.text
        url = f"/projections/{DEMO_ID}/tsne"
        view = client.get(url, params={"preamble": texts[0], "seed": 5}).json()
        assert view["cached"] is True and view["metrics"] is not None  # scored, stored
        posted = {"dataset": DEMO_ID, "preamble": SEED_PREAMBLE, "projector": "tsne", "seed": 6}
        assert client.post("/projections", json=posted).json()["cached"] is False
        assert client.post("/projections", json=posted).json()["cached"] is True  # from disk
        plot = f"/plots/{DEMO_ID}/tsne.png"
        for _ in range(2):  # rendered and stored, then read back
            png = client.get(plot, params={"preamble": SEED_PREAMBLE, "seed": 6})
            assert png.content[:4] == b"\x89PNG"
        slow = {**body, "params": {"tsne": {"max_iter": 5000}}, "seed": 7}
        cancelled = client.post("/batches", json=slow).json()["id"]
        assert client.post(f"/batches/{cancelled}/cancel").json()["state"] == "cancelled"
        assert client.delete(f"/batches/{job_id}").json()["state"] == "deleted"
        # a global map: created, followed (progress copied to the store), listed, served, deleted
        params = {"early_exaggeration_iter": 50, "n_iter": 300}
        body = {"dataset": DEMO_ID, "method": "opentsne", "fit_on": "points", "params": params}
        map_id = client.post("/maps", json=body).json()["id"]
        with client.stream("GET", f"/maps/{map_id}/events") as response:
            events = [line for line in response.iter_lines() if line.startswith("event:")]
        assert events[-1] == "event: end"
        assert client.post("/maps", json=body).status_code == 200  # the same map, done
        assert [item["id"] for item in client.get("/maps").json()] == [map_id]
        points = client.get(f"/maps/{map_id}/points", params={"preamble": SEED_PREAMBLE})
        assert points.status_code == 200 and points.json()["n"] == 40
        assert client.delete(f"/maps/{map_id}").json()["state"] == "deleted"
    # traced: the jobs' statements, the results', the images' and the maps'
    for table in ("job_items", "projections", "images", "maps"):
        assert any(table in sql for _, sql in trace), table
    on_loop = [sql for thread, sql in trace if thread == loop_thread]
    assert not on_loop, json.dumps(on_loop, indent=1)
