"""The SQLite result store on a real file: round trip, persistence, eviction, corruption."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import numpy as np

from service.store import ResultStore


def test_round_trip_and_persistence(tmp_path: Path) -> None:
    path = tmp_path / "store.sqlite3"
    store = ResultStore(path, max_bytes=10**7)
    embedding = np.arange(80, dtype=np.float32).reshape(40, 2)
    store.put("k1", embedding, {"params_used": {"a": 1}})
    store.put_image("k1.png", "image/png", b"\x89PNG...")
    store.close()
    reopened = ResultStore(path, max_bytes=10**7, memory_entries=0)
    got = reopened.get("k1")
    assert got is not None and got.meta == {"params_used": {"a": 1}}
    np.testing.assert_array_equal(got.embedding, embedding)
    assert reopened.get_image("k1.png") == ("image/png", b"\x89PNG...")
    assert reopened.get("missing") is None
    # coordinates are stored compactly, as float32 bytes, not JSON text
    row = sqlite3.connect(path).execute("SELECT coords FROM projections").fetchone()
    assert isinstance(row[0], bytes) and len(row[0]) == 40 * 2 * 4


def test_least_recently_used_entries_are_evicted(tmp_path: Path) -> None:
    store = ResultStore(tmp_path / "s.sqlite3", max_bytes=3000, memory_entries=0)
    embedding = np.zeros((100, 2), dtype=np.float32)  # 800 bytes each
    for key in ["a", "b", "c"]:
        store.put(key, embedding, {})
    assert store.get("a") is not None  # a is now more recent than b
    store.put("d", embedding, {})
    assert store.get("b") is None and store.get("a") is not None and store.get("d") is not None
    assert store.stats()["bytes"] <= 3000


def test_a_corrupt_entry_is_dropped_and_reported_as_a_miss(tmp_path: Path) -> None:
    path = tmp_path / "s.sqlite3"
    store = ResultStore(path, max_bytes=10**7, memory_entries=0)
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
