"""The service's bounded memos, by which entry leaves: the engine's resolved requests and the
serialised points of projection answers. Each keeps the most recently used; a hit refreshes."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path

import numpy as np
from support import DEMO10, DEMO_ID, SEED_PREAMBLE

from clustviz.data import DataCatalog
from clustviz.workers import WorkerPool, WorkerSettings
from service.bodies import ProjectionBodies
from service.engine import Engine, Projection, ResolvedRequest
from service.results import ResultStore, StoredProjection
from service.schemas import ProjectionResponse


@contextmanager
def small_engine(tmp_path: Path, memo_entries: int) -> Iterator[Engine]:
    # Resolving validates and keys a request: it reads the dataset and never runs a task, so
    # the pool is a real one left unstarted. The listing is not re-read during the test: a
    # memoised request is checked against the dataset loaded now, found through it.
    store = ResultStore(tmp_path / "s.sqlite3", max_bytes=2**20)
    try:
        yield Engine(
            catalog=DataCatalog(DEMO10, rescan_seconds=3600),
            store=store,
            pool=WorkerPool(1, WorkerSettings(warm=())),
            lane=None,
            device="cpu",
            timeout=60,
            max_queue=8,
            max_points=5000,
            memo_entries=memo_entries,
        )
    finally:
        store.close()


def resolve(engine: Engine, seed: int, projector: str = "tsne") -> ResolvedRequest:
    # On a thread of its own: the browser tests' session-long Playwright keeps an event loop
    # running on the main thread, where asyncio.run refuses to start another.
    with ThreadPoolExecutor(1) as thread:
        return thread.submit(
            asyncio.run,
            engine.resolve(
                dataset_id=DEMO_ID, projector=projector, preamble=SEED_PREAMBLE, seed=seed
            ),
        ).result()


def test_resolved_requests_keep_the_most_recently_used(tmp_path: Path) -> None:
    with small_engine(tmp_path, memo_entries=2) as engine:
        check_resolved_memo(engine)


def check_resolved_memo(engine: Engine) -> None:
    first, second = resolve(engine, 1), resolve(engine, 2)
    assert resolve(engine, 1) is first  # a hit: 1 is now more recent than 2
    third = resolve(engine, 3)  # over the bound: 2, the least recently used, leaves
    assert resolve(engine, 1) is first and resolve(engine, 3) is third
    again = resolve(engine, 2)  # validated again: an equal request, a new object
    assert again is not second and again.key == second.key
    # 2 came back as the most recent: 1 (used before 3) left, 3 stayed
    assert resolve(engine, 3) is third
    assert resolve(engine, 1) is not first


def projection(request: ResolvedRequest, *, blobs: bool = False) -> Projection:
    """A stored answer for ``request``, as the store hands it back."""
    n = request.view.n_points
    rng = np.random.default_rng(request.seed)
    extras = None
    if blobs:  # one square per label, as clusterplot's blobs are stored (by label)
        square = [[0.0, 0.0], [1.0, 0.0], [1.0, 1.0], [0.0, 1.0]]
        extras = {
            "hulls": [
                {"label": label, "polygons": [square]} for label in range(request.view.n_clusters)
            ],
            "discrepancy_before": {"mean": 0.2, "max": 0.5},
            "discrepancy_after": {"mean": 0.1, "max": 0.4},
        }
    meta = {
        "params_used": request.params_used,
        "notes": [],
        "seconds": 0.01,
        "metrics": {"knn_preservation": 0.5},
        "extras": extras,
        "device": "cpu",
    }
    stored = StoredProjection(rng.normal(size=(n, 2)).astype(np.float32), meta)
    return Projection(request, stored, cached=True, total_ms=0.1)


def test_projection_bodies_keep_the_points_of_the_most_recently_used(tmp_path: Path) -> None:
    with small_engine(tmp_path, memo_entries=8) as engine:
        answers = {seed: projection(resolve(engine, seed)) for seed in (1, 2, 3)}
    keys = {seed: answer.request.key for seed, answer in answers.items()}
    bodies = ProjectionBodies(max_entries=2)
    first = bodies.response(answers[1]).body
    bodies.response(answers[2])
    assert bodies.response(answers[1]).body == first  # a hit: 1 is now more recent than 2
    bodies.response(answers[3])  # over the bound: 2 leaves
    assert keys[1] in bodies and keys[3] in bodies and keys[2] not in bodies
    # what a memoised body says is what a fresh one says, and it is a ProjectionResponse
    assert ProjectionBodies().response(answers[1]).body == first
    body = ProjectionResponse.model_validate_json(first)
    assert [[p.x, p.y] for p in body.points] == answers[1].stored.embedding.tolist()


def test_blobs_name_their_clusters_by_global_id(tmp_path: Path) -> None:
    with small_engine(tmp_path, memo_entries=8) as engine:
        answer = projection(resolve(engine, 5, projector="clusterplot"), blobs=True)
    body = json.loads(ProjectionBodies().response(answer).body)
    view = answer.request.view
    by_label = {p["label"]: p["cluster_id"] for p in body["points"]}
    assert sorted(by_label) == list(range(view.n_clusters))
    assert [hull["cluster_id"] for hull in body["hulls"]] == [
        by_label[label] for label in range(view.n_clusters)
    ]
    assert by_label != {label: label for label in by_label}  # global ids are not the labels
