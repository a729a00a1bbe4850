"""The response cache in front of the router: what it stores, what it serves, when it stops."""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

import polars as pl
from support import DEMO10, DEMO_ID, app_client

from clustviz.workers import WorkerPool

URL = f"/projections/{DEMO_ID}/tsne?preamble_id=000ff918bc98"
PLOT = f"/plots/{DEMO_ID}/tsne.png?preamble_id=000ff918bc98&width=4&height=3"


def test_repeated_gets_are_served_from_the_cache_unchanged(
    tmp_path: Path, warm_pools: tuple[WorkerPool, WorkerPool]
) -> None:
    with app_client(DEMO10, tmp_path, *warm_pools) as client:
        cache = client.app.state.response_cache  # type: ignore[attr-defined]
        first = client.get(URL)  # computed: not stored (its body says "cached": false)
        assert first.status_code == 200 and first.json()["cached"] is False
        assert "x-clustviz-cacheable" not in first.headers
        second = client.get(URL)  # from the result store: now stored here
        assert second.json()["cached"] is True and cache.stats()["entries"] == 1
        assert "x-clustviz-cacheable" not in second.headers  # the mark stays internal
        hits = cache.hits
        third = client.get(URL)
        assert cache.hits == hits + 1
        assert third.content == second.content and third.headers["etag"] == second.headers["etag"]
        not_modified = client.get(URL, headers={"If-None-Match": third.headers["etag"]})
        assert not_modified.status_code == 304 and not not_modified.content
        plot = client.get(PLOT)
        again = client.get(PLOT)
        assert again.content == plot.content and again.headers["content-type"] == "image/png"
        assert cache.hits == hits + 3


def test_repeated_posts_are_served_from_the_cache_unchanged(
    tmp_path: Path, warm_pools: tuple[WorkerPool, WorkerPool]
) -> None:
    body = {"dataset": DEMO_ID, "preamble_id": "000ff918bc98", "projector": "tsne"}
    with app_client(DEMO10, tmp_path, *warm_pools) as client:
        cache = client.app.state.response_cache  # type: ignore[attr-defined]
        assert client.post("/projections", json=body).json()["cached"] is False
        second = client.post("/projections", json=body)
        assert second.json()["cached"] is True and cache.stats()["entries"] == 1
        hits = cache.hits
        third = client.post("/projections", json=body)
        assert cache.hits == hits + 1 and third.content == second.content
        # another Accept, another body, another query: other answers
        png = client.post("/projections", json=body, headers={"Accept": "image/png"})
        assert png.headers["content-type"] == "image/png" and cache.hits == hits + 1
        other = client.post("/projections", json=body | {"seed": 5})
        assert other.json()["seed"] == 5 and other.json()["cached"] is False
        assert client.post("/projections", json=body, params={"dpi": 50}).json()["cached"]
        again = client.post("/projections", json=body, headers={"Accept": "image/png"})
        assert again.content == png.content and cache.hits == hits + 2
        # an invalid body is answered by the app, never stored
        for _ in range(2):
            bad = client.post("/projections", json=body | {"projector": "nope"})
            assert bad.status_code == 422
        # a body over the key limit goes through the app every time, never stored
        entries = cache.stats()["entries"]
        long_preamble = {"dataset": DEMO_ID, "preamble": "x" * 5000, "projector": "tsne"}
        for _ in range(2):
            assert client.post("/projections", json=long_preamble).status_code == 404
        assert cache.stats()["entries"] == entries


def test_errors_are_never_stored(tmp_path: Path, warm_pools: tuple[WorkerPool, WorkerPool]) -> None:
    with app_client(DEMO10, tmp_path, *warm_pools) as client:
        cache = client.app.state.response_cache  # type: ignore[attr-defined]
        for _ in range(2):
            assert client.get(f"/projections/{DEMO_ID}/tsne?preamble_id=nope").status_code == 404
            assert client.get(f"/projections/{DEMO_ID}/tsne").status_code == 422
        assert cache.stats()["entries"] == 0


def test_a_replaced_dataset_file_is_never_answered_from_the_cache(
    tmp_path: Path, warm_pools: tuple[WorkerPool, WorkerPool]
) -> None:
    data = tmp_path / "data"
    shutil.copytree(DEMO10, data)
    with app_client(data, tmp_path / "state", *warm_pools) as client:
        client.get(URL)
        before = client.get(URL)
        assert client.get(URL).content == before.content  # a hit
        (parquet,) = (data / "embeddings").glob("*.parquet")
        frame = pl.read_parquet(parquet)
        frame.with_columns(
            pl.Series("embedding", frame["embedding"].to_numpy()[::-1].copy())
        ).write_parquet(parquet)
        os.utime(parquet, ns=(1, 1))
        time.sleep(2.1)  # the catalog re-lists the data dir every 2 s
        after = client.get(URL)
        assert after.json()["key"] != before.json()["key"]
        assert after.json()["points"] != before.json()["points"]


def test_the_cache_is_bounded_and_drops_the_least_recently_used(
    tmp_path: Path, warm_pools: tuple[WorkerPool, WorkerPool]
) -> None:
    with app_client(DEMO10, tmp_path, *warm_pools, response_cache_entries=2) as client:
        cache = client.app.state.response_cache  # type: ignore[attr-defined]

        def served_from_cache(seed: int) -> bool:
            hits = cache.hits
            assert client.get(f"{URL}&seed={seed}").status_code == 200
            return cache.hits == hits + 1

        for seed in (0, 1):
            for _ in range(2):  # computed, then stored here from the result store
                client.get(f"{URL}&seed={seed}")
        assert served_from_cache(0)  # 0 is now more recent than 1
        for _ in range(2):
            client.get(f"{URL}&seed=2")  # stored: 1, the least recently used, leaves
        assert cache.stats()["entries"] == 2
        assert served_from_cache(0) and served_from_cache(2)
        assert not served_from_cache(1)  # answered by the app (and stored again: 0 leaves)
        assert served_from_cache(1) and not served_from_cache(0)
