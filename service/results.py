"""The result store: content-addressed projections and rendered images, in the service's
database (:mod:`service.database`), bounded in bytes, with an in-memory front.

No SQL runs on the event loop: the store owns one thread that runs its statements, and the
service calls its ``async`` methods (the in-memory front is read on the caller's thread, no
SQL). The sync methods are thread-safe, for threads of the caller's own (an export, a test).

Projections are stored by key (a hash of everything that shapes a result, see
:func:`clustviz.keys.projection_key`) with coordinates as raw float32 bytes, metadata as JSON,
and rendered images as blobs. Total size is bounded: least-recently-used rows are evicted,
except the results a batch job still lists (:mod:`service.job_store`). A small in-memory LRU in
front keeps hot answers off the disk; it is bounded by bytes, not entries, since a rendered PNG
weighs a thousand times a 40-point layout. Its hits are uses too: they are noted in memory and
written to ``last_used`` before the disk picks what to evict, so a hot answer is never the
first to go.
"""

from __future__ import annotations

import asyncio
import functools
import json
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple, ParamSpec, TypeVar

import numpy as np
from cachetools import LRUCache

from service import database

__all__ = ["ResultStore", "StoredProjection"]

P = ParamSpec("P")
T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class StoredProjection:
    """A finished projection: coordinates in the view's row order plus its metadata."""

    embedding: np.ndarray  # (n, 2) float32
    meta: dict[str, Any]


class _Remembered(NamedTuple):
    value: StoredProjection | tuple[str, bytes]
    size: int  # its row's ``size`` column: what the front's bound counts


_MAX_TOUCHED = 4096  # memory hits noted before their last_used is written


class ResultStore:
    """Thread-safe SQLite store with an in-memory LRU front and a size bound."""

    def __init__(self, path: Path, *, max_bytes: int, memory_bytes: int = 64 * 2**20) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.max_bytes = max_bytes
        self.memory_bytes = memory_bytes
        self._lock = threading.Lock()  # the connection; taken before _memory_lock, never after
        self._memory_lock = threading.Lock()  # the front alone: held for no SQL
        self._memory: LRUCache[str, _Remembered] = LRUCache(
            maxsize=max(1, memory_bytes), getsizeof=lambda entry: entry.size
        )
        # One thread runs every statement of the async methods: writes never wait on each other
        # in a pool of threads, and the event loop runs none.
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="clustviz-store")
        # memory hits not yet written to last_used (under _memory_lock; written by the disk's
        # side, before it evicts and at close, never on the caller's thread)
        self._touched: dict[str, float] = {}
        self._db = database.connect(self.path, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.executescript(database.SCHEMA)
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
            with self._memory_lock:
                self._memory[key] = _Remembered(value, size)

    def _forget(self, key: str) -> None:
        with self._memory_lock:
            self._memory.pop(key, None)

    def _recall(self, key: str) -> StoredProjection | tuple[str, bytes] | None:
        """What the in-memory front holds for ``key`` (it becomes the most recently used)."""
        with self._memory_lock:
            hit = self._memory.get(key)
            if hit is not None:
                self._touched[key] = time.time()
                if len(self._touched) > _MAX_TOUCHED:  # bounded: the oldest note is dropped
                    del self._touched[next(iter(self._touched))]
        return None if hit is None else hit.value

    async def run(self, call: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        """``call(*args, **kwargs)`` on the store's thread: how the service runs its SQL."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._thread, functools.partial(call, *args, **kwargs))

    async def aget(self, key: str) -> StoredProjection | None:
        """:meth:`get` off the event loop: the in-memory front here, the disk on the store's
        thread (the cached hot path makes no thread hop)."""
        hit = self._recall(key)
        if isinstance(hit, StoredProjection):
            return hit
        return await self.run(self.get, key)

    async def aput(self, key: str, embedding: np.ndarray, meta: dict[str, Any]) -> StoredProjection:
        """:meth:`put` on the store's thread."""
        return await self.run(self.put, key, embedding, meta)

    async def aget_image(self, key: str) -> tuple[str, bytes] | None:
        """:meth:`get_image` off the event loop, as :meth:`aget`."""
        hit = self._recall("img:" + key)
        if isinstance(hit, tuple):
            return hit
        return await self.run(self.get_image, key)

    async def aput_image(self, key: str, media_type: str, body: bytes) -> None:
        """:meth:`put_image` on the store's thread."""
        await self.run(self.put_image, key, media_type, body)

    def get(self, key: str) -> StoredProjection | None:
        """The stored projection, or ``None``. A corrupt row is deleted and reported as a miss."""
        hit = self._recall(key)  # a hit becomes the most recently used
        if isinstance(hit, StoredProjection):
            return hit
        with self._lock:
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
        hit = self._recall(memory_key)
        if isinstance(hit, tuple):
            return hit
        with self._lock:
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

    def _write_touches(self) -> None:
        with self._memory_lock:
            touched, self._touched = self._touched, {}
        if not touched:
            return
        self._db.execute("BEGIN")
        for table, prefix in (("projections", ""), ("images", "img:")):
            rows = [
                (when, key.removeprefix(prefix))
                for key, when in touched.items()
                if key.startswith("img:") == bool(prefix)
            ]
            self._db.executemany(f"UPDATE {table} SET last_used = ? WHERE key = ?", rows)
        self._db.execute("COMMIT")

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
            self._forget(key if table == "projections" else "img:" + key)
            self._bytes -= int(size)

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
        """Finish what the store's thread has queued, then close (a blocking call: from the
        event loop, run it in a thread)."""
        self._thread.shutdown(wait=True)
        with self._lock:
            self._write_touches()
            self._db.close()
