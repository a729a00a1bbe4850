"""A batch job's event stream over a real server on loopback: every event has an id, a client
that reconnects with ``Last-Event-ID`` gets exactly what follows (from a restarted server too),
the Python client reconnects on its own, and an idle stream carries keep-alive comments.

The jobs run the test plugin's ``sleepy`` projector (tests/sleepy_projector.py): it paces the
items without using the CPU, so the stream can be cut and resumed between them."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from support import DEMO10, DEMO_ID, Server

from clustviz.client import Client

TESTS = Path(__file__).resolve().parents[1]
KEEPALIVE_S = 0.3


@pytest.fixture(scope="module")
def sleepy_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    server = Server(
        DEMO10,
        tmp_path_factory.mktemp("events-state"),
        CLUSTVIZ_PLUGINS='["sleepy_projector"]',
        CLUSTVIZ_WARM="[]",
        CLUSTVIZ_SSE_KEEPALIVE_S=str(KEEPALIVE_S),
        PYTHONPATH=os.pathsep.join(filter(None, [str(TESTS), os.environ.get("PYTHONPATH")])),
    )
    server.start()
    yield server
    server.stop()


@dataclass
class Event:
    id: int
    name: str
    data: dict


def submit(server: Server, *, seconds: float, seed: int) -> str:
    """A job of the demo's 10 preambles through ``sleepy`` (a new seed: nothing is cached)."""
    body = {
        "dataset": DEMO_ID,
        "preambles": "all",
        "projectors": ["sleepy"],
        "params": {"sleepy": {"seconds": seconds}},
        "seed": seed,
    }
    response = httpx.post(server.url + "/batches", json=body, timeout=30)
    assert response.status_code == 202, response.text
    return str(response.json()["id"])


def read_stream(
    server: Server,
    job_id: str,
    *,
    last_event_id: int | None = None,
    stop_after: int | None = None,
    comments: list[str] | None = None,
) -> list[Event]:
    """The events of one connection, until ``end`` or ``stop_after`` events (then it is cut)."""
    headers = {} if last_event_id is None else {"Last-Event-ID": str(last_event_id)}
    events: list[Event] = []
    url = f"{server.url}/batches/{job_id}/events"
    with httpx.stream("GET", url, headers=headers, timeout=30) as response:
        assert response.status_code == 200, response.read()
        fields: dict[str, str] = {}
        for line in response.iter_lines():
            if line.startswith(":"):
                if comments is not None:
                    comments.append(line)
            elif line:
                name, _, value = line.partition(": ")
                fields[name] = value
            elif fields:
                events.append(Event(int(fields["id"]), fields["event"], json.loads(fields["data"])))
                fields = {}
                if events[-1].name == "end" or len(events) == stop_after:
                    break
    return events


def finished(data: dict) -> int:
    return int(data["done"] + data["failed"])


def assert_ids_follow_the_job(events: list[Event]) -> None:
    """Ids strictly increase; a progress event's id is the count of items its data shows."""
    ids = [event.id for event in events]
    assert ids == sorted(set(ids)), ids
    for event in events:
        if event.name == "progress":
            assert event.id == finished(event.data), event
        else:
            assert event.name == "end" and event.id == event.data["total"] + 1, event


def test_a_reconnect_with_last_event_id_continues_without_repeat_or_gap(
    sleepy_server: Server,
) -> None:
    job_id = submit(sleepy_server, seconds=0.3, seed=1)
    first = read_stream(sleepy_server, job_id, stop_after=3)  # then the connection is dropped
    assert [event.name for event in first] == ["progress"] * 3
    time.sleep(1.0)  # items finish while no one listens
    missed = finished(httpx.get(f"{sleepy_server.url}/batches/{job_id}", timeout=30).json())
    assert missed > first[-1].id
    rest = read_stream(sleepy_server, job_id, last_event_id=first[-1].id)
    assert_ids_follow_the_job(first + rest)  # no event twice
    # what finished while disconnected comes at once, in the first event: nothing is missed
    assert rest[0].id >= missed
    end = rest[-1]
    assert end.name == "end" and end.data["state"] == "done" and end.data["done"] == 10
    assert [event.name for event in rest[:-1]] == ["progress"] * (len(rest) - 1)
    assert rest[-2].id == 10  # the last progress event counts every item
    # resumed after the job has finished: only what the client has not had
    assert [e.name for e in read_stream(sleepy_server, job_id, last_event_id=9)] == [
        "progress",
        "end",
    ]
    (only_end,) = read_stream(sleepy_server, job_id, last_event_id=10)
    assert (only_end.name, only_end.id) == ("end", 11)
    after_end = httpx.get(
        f"{sleepy_server.url}/batches/{job_id}/events",
        headers={"Last-Event-ID": "11"},
        timeout=30,
    )
    assert after_end.status_code == 204  # a browser's EventSource stops reconnecting
    fresh = read_stream(sleepy_server, job_id, last_event_id=None)
    assert [(e.name, e.id) for e in fresh] == [("progress", 10), ("end", 11)]


def test_ids_come_from_the_stored_job_so_a_restarted_server_resumes_the_stream(
    tmp_path: Path,
) -> None:
    server = Server(
        DEMO10,
        tmp_path,
        CLUSTVIZ_PLUGINS='["sleepy_projector"]',
        CLUSTVIZ_WARM="[]",
        PYTHONPATH=os.pathsep.join(filter(None, [str(TESTS), os.environ.get("PYTHONPATH")])),
    )
    server.start()
    try:
        job_id = submit(server, seconds=0.4, seed=2)
        first = read_stream(server, job_id, stop_after=3)
        server.stop()  # the job stays running in the store, and resumes on the next start
        server.start()
        rest = read_stream(server, job_id, last_event_id=first[-1].id)
    finally:
        server.stop()
    assert_ids_follow_the_job(first + rest)
    assert rest[-1].name == "end" and rest[-1].data["done"] == 10


def test_the_client_reconnects_a_dropped_stream_with_last_event_id(
    sleepy_server: Server,
) -> None:
    job_id = submit(sleepy_server, seconds=0.6, seed=3)
    sent: list[str | None] = []
    with Client(sleepy_server.url) as client:

        def record(request: httpx.Request) -> None:
            if request.url.path.endswith("/events"):
                sent.append(request.headers.get("Last-Event-ID"))

        client._http.event_hooks = {"request": [record], "response": []}
        # a read timeout below the server's keep-alive interval: the connection drops between
        # items, again and again, and the client reopens it where it stopped
        events = list(client.events(job_id, read_timeout=KEEPALIVE_S / 2))
    assert len(sent) > 2 and sent[0] is None, sent
    resumed = [int(value) for value in sent[1:] if value is not None]
    assert resumed == sorted(resumed) and len(resumed) == len(sent) - 1, sent
    names = [name for name, _ in events]
    assert names[-1] == "end" and set(names[:-1]) == {"progress"}
    counts = [finished(data) for name, data in events if name == "progress"]
    assert counts == sorted(set(counts)), counts  # each progress once, in order
    assert counts[-1] == 10 and events[-1][1]["state"] == "done"


def test_an_idle_stream_sends_keep_alive_comments(sleepy_server: Server) -> None:
    job_id = submit(sleepy_server, seconds=3 * KEEPALIVE_S, seed=4)
    comments: list[str] = []
    events = read_stream(sleepy_server, job_id, stop_after=3, comments=comments)
    assert len(events) == 3
    assert comments and set(comments) == {": keep-alive"}, comments
    httpx.delete(f"{sleepy_server.url}/batches/{job_id}", timeout=30)
