"""The durable, content-addressed result store: SQLite (WAL) in the state dir.

Projections are stored by key (a hash of everything that shapes a result, see
:func:`service.keys.projection_key`) with coordinates as raw float32 bytes, metadata as JSON,
and rendered images as blobs. Total size is bounded: least-recently-used rows are evicted.
A small in-memory LRU in front keeps hot answers off the disk; it is bounded by bytes, not
entries, since a rendered PNG weighs a thousand times a 40-point layout. Its hits are uses too:
they are noted in memory and written to ``last_used`` before the disk picks what to evict, so a
hot answer is never the first to go.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
from cachetools import LRUCache

__all__ = ["JobCoords", "ResultStore", "StoredProjection"]

SCHEMA = """
CREATE TABLE IF NOT EXISTS projections (
    key TEXT PRIMARY KEY,
    n INTEGER NOT NULL,
    coords BLOB NOT NULL,          -- float32 little-endian, (n, 2) row-major
    meta TEXT NOT NULL,            -- JSON: params_used, notes, metrics, extras, seconds
    size INTEGER NOT NULL,
    created REAL NOT NULL,
    last_used REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS images (
    key TEXT PRIMARY KEY,          -- projection key + format + size
    media_type TEXT NOT NULL,
    body BLOB NOT NULL,
    size INTEGER NOT NULL,
    last_used REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS jobs (
    id TEXT PRIMARY KEY,
    spec TEXT NOT NULL,            -- JSON: the validated request
    state TEXT NOT NULL,           -- queued | running | done | cancelled
    total INTEGER NOT NULL,
    created REAL NOT NULL,
    started REAL,
    finished REAL
);
CREATE TABLE IF NOT EXISTS job_items (
    job_id TEXT NOT NULL,
    idx INTEGER NOT NULL,
    preamble TEXT NOT NULL,
    projector TEXT NOT NULL,
    key TEXT,                      -- projection key once resolved; pins the result
    state TEXT NOT NULL,           -- pending | done | failed
    error TEXT,
    code TEXT,
    seconds REAL,
    PRIMARY KEY (job_id, idx)
);
CREATE INDEX IF NOT EXISTS job_items_key ON job_items(key);
CREATE INDEX IF NOT EXISTS projections_lru ON projections(last_used);
CREATE INDEX IF NOT EXISTS images_lru ON images(last_used);
"""


@dataclass(frozen=True, slots=True)
class StoredProjection:
    """A finished projection: coordinates in the view's row order plus its metadata."""

    embedding: np.ndarray  # (n, 2) float32
    meta: dict[str, Any]


@dataclass(frozen=True, slots=True)
class JobCoords:
    """One finished item of a batch job with its stored coordinates (see ``iter_job_coords``)."""

    index: int
    preamble: str
    projector: str
    embedding: np.ndarray  # (n, 2) float32, read-only: a view on the row's bytes


class _Remembered(NamedTuple):
    value: StoredProjection | tuple[str, bytes]
    size: int  # its row's ``size`` column: what the front's bound counts


_MAX_TOUCHED = 4096  # memory hits noted before their last_used is written

_JOB_COORDS_PAGE = (
    "SELECT j.idx, j.preamble, j.projector, p.n, p.coords"
    " FROM job_items j JOIN projections p ON p.key = j.key"
    " WHERE j.job_id = ? AND j.state = 'done' AND j.idx > ? ORDER BY j.idx LIMIT ?"
)


class ResultStore:
    """Thread-safe SQLite store with an in-memory LRU front and a size bound."""

    def __init__(self, path: Path, *, max_bytes: int, memory_bytes: int = 64 * 2**20) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.max_bytes = max_bytes
        self.memory_bytes = memory_bytes
        self._lock = threading.Lock()
        self._memory: LRUCache[str, _Remembered] = LRUCache(
            maxsize=max(1, memory_bytes), getsizeof=lambda entry: entry.size
        )
        self._touched: dict[str, float] = {}  # memory hits not yet written to last_used
        self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.executescript(SCHEMA)
        self._bytes = self._total_bytes()

    def _total_bytes(self) -> int:
        row = self._db.execute(
            "SELECT (SELECT COALESCE(SUM(size), 0) FROM projections)"
            " + (SELECT COALESCE(SUM(size), 0) FROM images)"
        ).fetchone()
        return int(row[0])

    def _size_of(self, table: str, key: str) -> int:
        # a running total, not a SUM over the table per write (thousands of rows per batch)
        row = self._db.execute(f"SELECT size FROM {table} WHERE key = ?", (key,)).fetchone()
        return int(row[0]) if row else 0

    def _remember(self, key: str, value: StoredProjection | tuple[str, bytes], size: int) -> None:
        if size <= self.memory_bytes:  # larger than the whole front: served from disk
            self._memory[key] = _Remembered(value, size)

    def get(self, key: str) -> StoredProjection | None:
        """The stored projection, or ``None``. A corrupt row is deleted and reported as a miss."""
        with self._lock:
            hit = self._memory.get(key)  # a hit becomes the most recently used
            if hit is not None and isinstance(hit.value, StoredProjection):
                self._touch(key)
                return hit.value
            row = self._db.execute(
                "SELECT n, coords, meta, size FROM projections WHERE key = ?", (key,)
            ).fetchone()
            if row is None:
                return None
            n, coords, meta, size = row
            try:
                embedding = np.frombuffer(coords, dtype="<f4").reshape(n, 2).copy()
                stored = StoredProjection(embedding, json.loads(meta))
                if not np.isfinite(embedding).all():
                    raise ValueError("non-finite coordinates")
            except (ValueError, TypeError) as exc:  # corrupt entry: drop it, recompute
                del exc
                self._db.execute("DELETE FROM projections WHERE key = ?", (key,))
                self._bytes = self._total_bytes()
                return None
            self._db.execute(
                "UPDATE projections SET last_used = ? WHERE key = ?", (time.time(), key)
            )
            self._remember(key, stored, int(size))
            return stored

    def put(self, key: str, embedding: np.ndarray, meta: dict[str, Any]) -> StoredProjection:
        """Store a projection (idempotent) and evict least-recently-used rows past the bound."""
        embedding = np.ascontiguousarray(embedding, dtype="<f4")
        coords = embedding.tobytes()
        meta_text = json.dumps(meta, separators=(",", ":"))
        size = len(coords) + len(meta_text) + len(key)
        now = time.time()
        with self._lock:
            replaced = self._size_of("projections", key)
            self._db.execute(
                "INSERT OR REPLACE INTO projections VALUES (?, ?, ?, ?, ?, ?, ?)",
                (key, embedding.shape[0], coords, meta_text, size, now, now),
            )
            self._bytes += size - replaced
            self._evict()
            stored = StoredProjection(embedding.astype(np.float32), meta)
            self._remember(key, stored, size)
            return stored

    def get_image(self, key: str) -> tuple[str, bytes] | None:
        """``(media_type, body)`` of a rendered image, or ``None``."""
        memory_key = "img:" + key
        with self._lock:
            hit = self._memory.get(memory_key)
            if hit is not None and isinstance(hit.value, tuple):
                self._touch(memory_key)
                return hit.value
            row = self._db.execute(
                "SELECT media_type, body, size FROM images WHERE key = ?", (key,)
            ).fetchone()
            if row is None:
                return None
            self._db.execute("UPDATE images SET last_used = ? WHERE key = ?", (time.time(), key))
            image = (str(row[0]), bytes(row[1]))
            self._remember(memory_key, image, int(row[2]))
            return image

    def put_image(self, key: str, media_type: str, body: bytes) -> None:
        size = len(body) + len(key)
        with self._lock:
            replaced = self._size_of("images", key)
            self._db.execute(
                "INSERT OR REPLACE INTO images VALUES (?, ?, ?, ?, ?)",
                (key, media_type, body, size, time.time()),
            )
            self._bytes += size - replaced
            self._evict()
            self._remember("img:" + key, (media_type, body), size)

    def _touch(self, memory_key: str) -> None:
        self._touched[memory_key] = time.time()
        if len(self._touched) >= _MAX_TOUCHED:  # bounded: written in one go now and then
            self._write_touches()

    def _write_touches(self) -> None:
        if not self._touched:
            return
        self._db.execute("BEGIN")
        for table, prefix in (("projections", ""), ("images", "img:")):
            rows = [
                (when, key.removeprefix(prefix))
                for key, when in self._touched.items()
                if key.startswith("img:") == bool(prefix)
            ]
            self._db.executemany(f"UPDATE {table} SET last_used = ? WHERE key = ?", rows)
        self._db.execute("COMMIT")
        self._touched.clear()

    def _evict(self) -> None:
        # Oldest first across both tables until under the bound (images go first: cheap to redo).
        if self._bytes > self.max_bytes:
            self._write_touches()
        while self._bytes > self.max_bytes:
            # Results that a batch job still lists are pinned: its client has not fetched them.
            row = (
                self._db.execute(
                    "SELECT 'images', key, size FROM images ORDER BY last_used LIMIT 1"
                ).fetchone()
                or self._db.execute(
                    "SELECT 'projections', key, size FROM projections"
                    " WHERE key NOT IN (SELECT key FROM job_items WHERE key IS NOT NULL)"
                    " ORDER BY last_used LIMIT 1"
                ).fetchone()
            )
            if row is None:
                break
            table, key, size = row
            self._db.execute(f"DELETE FROM {table} WHERE key = ?", (key,))
            self._memory.pop(key if table == "projections" else "img:" + key, None)
            self._bytes -= int(size)

    def iter_job_coords(self, job_id: str, *, page_items: int = 2048) -> Iterator[list[JobCoords]]:
        """A job's finished items with their coordinates, in item order, ``page_items`` at a
        time: what an export of a whole-dataset job reads without holding it all.

        Each page is a keyset query on a read-only connection of its own, so the running job's
        writes never wait for a reader. A corrupt row (wrong size, non-finite) is left out, as
        ``get`` would drop it."""
        uri = f"{self.path.resolve().as_uri()}?mode=ro"
        db = sqlite3.connect(uri, uri=True, check_same_thread=False)
        try:
            after = -1
            while True:
                rows = db.execute(_JOB_COORDS_PAGE, (job_id, after, page_items)).fetchall()
                if not rows:
                    return
                after = int(rows[-1][0])
                page = []
                for index, preamble, projector, n, blob in rows:
                    xy = np.frombuffer(blob, dtype="<f4")
                    if xy.size == 2 * n and np.isfinite(xy).all():
                        page.append(JobCoords(index, preamble, projector, xy.reshape(n, 2)))
                yield page
        finally:
            db.close()

    def execute(self, sql: str, params: tuple[Any, ...] | list[Any] = ()) -> None:
        """Run one write statement (jobs share this database and its lock)."""
        with self._lock:
            self._db.execute(sql, params)

    def execute_many(self, sql: str, rows: list[tuple[Any, ...]]) -> None:
        with self._lock:
            self._db.execute("BEGIN")
            try:
                self._db.executemany(sql, rows)
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise

    def query(self, sql: str, params: tuple[Any, ...] | list[Any] = ()) -> list[tuple[Any, ...]]:
        with self._lock:
            return self._db.execute(sql, params).fetchall()

    def stats(self) -> dict[str, Any]:
        with self._lock:
            counts = self._db.execute(
                "SELECT (SELECT COUNT(*) FROM projections), (SELECT COUNT(*) FROM images)"
            ).fetchone()
        return {
            "projections": counts[0],
            "images": counts[1],
            "bytes": self._bytes,
            "max_bytes": self.max_bytes,
        }

    def close(self) -> None:
        with self._lock:
            self._write_touches()
            self._db.close()
