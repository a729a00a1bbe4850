"""The SQLite result store on a real file: round trip, persistence, eviction, corruption."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import numpy as np

from service.job_store import JobStore
from service.results import ResultStore


def test_round_trip_and_persistence(tmp_path: Path) -> None:
    path = tmp_path / "store.sqlite3"
    store = ResultStore(path, max_bytes=10**7)
    embedding = np.arange(80, dtype=np.float32).reshape(40, 2)
    store.put("k1", embedding, {"params_used": {"a": 1}})
    store.put_image("k1.png", "image/png", b"\x89PNG...")
    store.close()
    reopened = ResultStore(path, max_bytes=10**7, memory_bytes=0)
    got = reopened.get("k1")
    assert got is not None and got.meta == {"params_used": {"a": 1}}
    np.testing.assert_array_equal(got.embedding, embedding)
    assert reopened.get_image("k1.png") == ("image/png", b"\x89PNG...")
    assert reopened.get("missing") is None
    # coordinates are stored compactly, as float32 bytes, not JSON text
    row = sqlite3.connect(path).execute("SELECT coords FROM projections").fetchone()
    assert isinstance(row[0], bytes) and len(row[0]) == 40 * 2 * 4


def test_least_recently_used_entries_are_evicted(tmp_path: Path) -> None:
    store = ResultStore(tmp_path / "s.sqlite3", max_bytes=3000, memory_bytes=0)
    embedding = np.zeros((100, 2), dtype=np.float32)  # 800 bytes each
    for key in ["a", "b", "c"]:
        store.put(key, embedding, {})
    assert store.get("a") is not None  # a is now more recent than b
    store.put("d", embedding, {})
    assert store.get("b") is None and store.get("a") is not None and store.get("d") is not None
    assert store.stats()["bytes"] <= 3000


def test_a_corrupt_entry_is_dropped_and_reported_as_a_miss(tmp_path: Path) -> None:
    path = tmp_path / "s.sqlite3"
    store = ResultStore(path, max_bytes=10**7, memory_bytes=0)
    store.put("k", np.ones((4, 2), dtype=np.float32), {})
    with sqlite3.connect(path) as db:
        db.execute("UPDATE projections SET coords = ? WHERE key = 'k'", (b"\x00\x01\x02",))
    assert store.get("k") is None
    assert store.stats()["projections"] == 0
    store.put("n", np.ones((4, 2), dtype=np.float32), {})
    nan_bytes = np.full((4, 2), np.nan, dtype="<f4").tobytes()
    with sqlite3.connect(path) as db:
        db.execute("UPDATE projections SET coords = ? WHERE key = 'n'", (nan_bytes,))
    assert store.get("n") is None  # a non-finite stored entry is never served


def _drop_from_disk(path: Path) -> None:
    """Delete every row behind the store's back: what it still answers, it answers from memory."""
    with sqlite3.connect(path) as db:
        db.execute("DELETE FROM projections")
        db.execute("DELETE FROM images")


def test_the_memory_front_is_bounded_by_bytes_and_drops_the_least_recently_used(
    tmp_path: Path,
) -> None:
    path = tmp_path / "s.sqlite3"
    embedding = np.zeros((100, 2), dtype=np.float32)  # 800 bytes of coordinates
    entry = len(embedding.tobytes()) + len("{}") + len("a")
    store = ResultStore(path, max_bytes=10**7, memory_bytes=2 * entry)  # room for two
    store.put("a", embedding, {})
    store.put("b", embedding, {})
    assert store.get("a") is not None  # a is now more recent than b
    store.put("c", embedding, {})  # b leaves the front, a and c stay
    _drop_from_disk(path)
    assert store.get("b") is None
    assert store.get("a") is not None and store.get("c") is not None


def test_an_image_larger_than_the_memory_front_is_served_from_disk(tmp_path: Path) -> None:
    path = tmp_path / "s.sqlite3"
    store = ResultStore(path, max_bytes=10**7, memory_bytes=10_000)
    store.put("small", np.zeros((4, 2), dtype=np.float32), {})
    store.put_image("big.png", "image/png", b"\x89PNG" + bytes(20_000))
    assert store.get_image("big.png") is not None  # from disk
    _drop_from_disk(path)
    assert store.get_image("big.png") is None  # it never displaced the small entry…
    assert store.get("small") is not None  # …which is still remembered


def test_a_jobs_coordinates_are_read_in_pages_in_item_order(tmp_path: Path) -> None:
    path = tmp_path / "s.sqlite3"
    store = ResultStore(path, max_bytes=10**7)
    rows = []
    for index in range(7):
        store.put(f"k{index}", np.full((3, 2), index, dtype=np.float32), {})
        state = "failed" if index == 4 else "done"
        rows.append(("job", index, f"p{index}", "umap", f"k{index}", state, None, None, None))
    store.execute_many("INSERT INTO job_items VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)", rows)
    store.put("k5", np.full((3, 2), np.nan, dtype=np.float32), {})  # corrupt: left out
    jobs = JobStore(store)
    pages = list(jobs.iter_coords("job", page_items=2))
    assert [[item.index for item in page] for page in pages] == [[0, 1], [2, 3], [6]]
    assert [len(page) for page in pages] == [2, 2, 1]  # the page that held item 5 as well
    for item in (item for page in pages for item in page):
        assert item.preamble == f"p{item.index}" and item.projector == "umap"
        np.testing.assert_array_equal(item.embedding, np.full((3, 2), item.index))
    assert list(jobs.iter_coords("other")) == []


def _pin(store: ResultStore, job_id: str, keys: list[str]) -> None:
    """List ``keys`` as a job's finished items, as the job manager records them."""
    rows = [(job_id, i, f"p{i}", "umap", k, "done", None, None, 0.1) for i, k in enumerate(keys)]
    store.execute_many("INSERT INTO job_items VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)", rows)


def test_a_jobs_results_are_pinned_until_the_job_is_removed(tmp_path: Path) -> None:
    store = ResultStore(tmp_path / "s.sqlite3", max_bytes=3000, memory_bytes=0)
    embedding = np.zeros((100, 2), dtype=np.float32)  # 800 bytes each: room for three
    for key in ["a", "b", "c"]:
        store.put(key, embedding, {})
    _pin(store, "job", ["a"])  # a, the least recently used, is a job's result
    store.put("d", embedding, {})
    assert store.get("a") is not None  # pinned: b, the next oldest, left instead
    assert store.get("b") is None and store.get("c") is not None and store.get("d") is not None
    store.put("e", embedding, {})  # a was just read, c is the oldest unpinned
    assert store.get("c") is None and store.get("a") is not None
    store.execute("DELETE FROM job_items WHERE job_id = ?", ("job",))  # the job is removed
    store.get("d")
    store.get("e")  # a is the least recently used again, and no longer pinned
    store.put("f", embedding, {})
    assert store.get("a") is None
    assert [store.get(key) is not None for key in "def"] == [True, True, True]


def test_a_store_of_pinned_results_grows_past_its_bound_rather_than_drop_them(
    tmp_path: Path,
) -> None:
    store = ResultStore(tmp_path / "s.sqlite3", max_bytes=2000, memory_bytes=0)
    embedding = np.zeros((100, 2), dtype=np.float32)
    _pin(store, "job", ["a", "b", "c"])  # listed before they are stored
    for key in ["a", "b", "c"]:
        store.put(key, embedding, {})
    store.put_image("x.png", "image/png", bytes(500))  # unpinned: dropped first
    assert store.get_image("x.png") is None
    assert all(store.get(key) is not None for key in "abc")
    assert store.stats()["bytes"] > store.max_bytes


def test_the_memory_front_serves_hits_and_forgets_what_the_disk_evicts(tmp_path: Path) -> None:
    path = tmp_path / "s.sqlite3"
    store = ResultStore(path, max_bytes=3000, memory_bytes=10**6)  # the front holds everything
    embedding = np.zeros((100, 2), dtype=np.float32)
    for key in ["a", "b", "c"]:
        store.put(key, embedding + ord(key), {"key": key})
    first = store.get("b")
    assert first is not None and store.get("b") is first  # the same object: from memory
    store.put("d", embedding, {})  # the disk evicts a: the front must not answer it either
    assert store.get("a") is None
    store.put("b", embedding - 1, {"key": "b2"})  # replaced: the front holds the new value
    again = store.get("b")
    assert again is not None and again.meta == {"key": "b2"}
    np.testing.assert_array_equal(again.embedding, embedding - 1)
    _drop_from_disk(path)  # what is left is served from memory alone
    assert [store.get(key) is not None for key in "bcd"] == [True, True, True]
    reopened = ResultStore(path, max_bytes=3000, memory_bytes=10**6)  # a new process's front
    assert reopened.get("b") is None


def test_a_hit_served_from_memory_counts_as_a_use_when_the_disk_evicts(tmp_path: Path) -> None:
    store = ResultStore(tmp_path / "s.sqlite3", max_bytes=3000, memory_bytes=10**6)
    embedding = np.zeros((100, 2), dtype=np.float32)  # 803 bytes each: room for three
    for key in ["a", "b", "c"]:
        store.put(key, embedding, {})
    for _ in range(3):
        assert store.get("a") is not None  # hot, and answered from memory every time
    store.put("d", embedding, {})  # b is the least recently used, not a
    assert store.get("b") is None and store.get("a") is not None
    images = ResultStore(tmp_path / "i.sqlite3", max_bytes=3000, memory_bytes=10**6)
    for key in ["x", "y", "z"]:  # 900 bytes each: room for three
        images.put_image(key, "image/png", bytes(900 - len(key)))
    assert images.get_image("x") is not None  # from memory
    images.put_image("w", "image/png", bytes(899))
    assert images.get_image("y") is None and images.get_image("x") is not None
