"""The durable store, SQLite (WAL) in the state dir: content-addressed results
(:class:`ResultStore`) and batch jobs (:class:`JobStore`), in one database, so a job's item is
marked done only after its result is stored.

No SQL runs on the event loop: each store owns one thread that runs its statements, and the
service calls their ``async`` methods (the in-memory front is read on the caller's thread, no
SQL). The sync methods are thread-safe, for threads of the caller's own (an export, a test).

Projections are stored by key (a hash of everything that shapes a result, see
:func:`service.keys.projection_key`) with coordinates as raw float32 bytes, metadata as JSON,
and rendered images as blobs. Total size is bounded: least-recently-used rows are evicted.
A small in-memory LRU in front keeps hot answers off the disk; it is bounded by bytes, not
entries, since a rendered PNG weighs a thousand times a 40-point layout. Its hits are uses too:
they are noted in memory and written to ``last_used`` before the disk picks what to evict, so a
hot answer is never the first to go.
"""

from __future__ import annotations

import asyncio
import functools
import json
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple, ParamSpec, TypeVar

import numpy as np
from cachetools import LRUCache

from clustviz.errors import NotFoundError

__all__ = ["ItemOutcome", "JobCoords", "JobStore", "ResultStore", "StoredProjection", "connect"]

P = ParamSpec("P")
T = TypeVar("T")

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


def connect(database: str | Path, **options: Any) -> sqlite3.Connection:
    """The one place the stores open SQLite connections (a test traces what runs on them)."""
    return sqlite3.connect(database, check_same_thread=False, **options)


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
        self._db = connect(self.path, isolation_level=None)
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

    def iter_job_coords(self, job_id: str, *, page_items: int = 2048) -> Iterator[list[JobCoords]]:
        """A job's finished items with their coordinates, in item order, ``page_items`` at a
        time: what an export of a whole-dataset job reads without holding it all.

        Each page is a keyset query on a read-only connection of its own, so the running job's
        writes never wait for a reader. A corrupt row (wrong size, non-finite) is left out, as
        ``get`` would drop it."""
        uri = f"{self.path.resolve().as_uri()}?mode=ro"
        db = connect(uri, uri=True)
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
        """Finish what the store's thread has queued, then close (a blocking call: from the
        event loop, run it in a thread)."""
        self._thread.shutdown(wait=True)
        with self._lock:
            self._write_touches()
            self._db.close()


@dataclass(frozen=True, slots=True)
class ItemOutcome:
    """How one item of a job ended: its result's key, or the error's message and code."""

    index: int
    key: str | None = None
    error: str | None = None
    code: str | None = None


class JobStore:
    """Batch jobs and their items, in the result store's database: every method is ``async``
    and runs its SQL on the store's thread (see the module docstring)."""

    def __init__(self, results: ResultStore) -> None:
        self._results = results

    async def create(
        self,
        job_id: str,
        spec: dict[str, Any],
        items: Sequence[tuple[str, str]],
        *,
        created: float,
    ) -> None:
        """A queued job of ``(preamble, projector)`` items, all pending, numbered in order."""
        rows = [
            (job_id, index, text, name, None, "pending", None, None, None)
            for index, (text, name) in enumerate(items)
        ]
        await self._results.run(self._create, job_id, json.dumps(spec), rows, created)

    def _create(self, job_id: str, spec: str, rows: list[tuple[Any, ...]], created: float) -> None:
        self._results.execute(
            "INSERT INTO jobs VALUES (?, ?, 'queued', ?, ?, NULL, NULL)",
            (job_id, spec, len(rows), created),
        )
        self._results.execute_many("INSERT INTO job_items VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)", rows)

    async def active(self) -> list[str]:
        """The ids of the jobs that are queued or running."""
        rows = await self._results.run(
            self._results.query, "SELECT id FROM jobs WHERE state IN ('queued', 'running')"
        )
        return [row[0] for row in rows]

    async def start(self, job_id: str, *, now: float) -> None:
        await self._results.run(
            self._results.execute,
            "UPDATE jobs SET state = 'running', started = COALESCE(started, ?) WHERE id = ?",
            (now, job_id),
        )

    async def pending(self, job_id: str) -> list[tuple[int, str, str]]:
        """``(index, preamble, projector)`` of the items still to run, in order."""
        rows = await self._results.run(
            self._results.query,
            "SELECT idx, preamble, projector FROM job_items"
            " WHERE job_id = ? AND state = 'pending' ORDER BY idx",
            (job_id,),
        )
        return [(int(index), str(preamble), str(projector)) for index, preamble, projector in rows]

    async def pin(self, job_id: str, keys: Sequence[tuple[int, str]]) -> None:
        """Give items ``(index, result key)`` their key before they run: the result is pinned
        from the moment it is stored (in a store full of pinned results it would otherwise be
        evicted before its item is marked done)."""
        rows = [(key, job_id, index) for index, key in keys]
        if rows:
            await self._results.run(
                self._results.execute_many,
                "UPDATE job_items SET key = ? WHERE job_id = ? AND idx = ?",
                rows,
            )

    async def record(self, job_id: str, outcomes: Sequence[ItemOutcome], seconds: float) -> None:
        """Mark items done (with their result's key) or failed (with the reason), one
        transaction per kind; ``seconds`` is each one's share of the time they took."""
        done = [(o.key, seconds, job_id, o.index) for o in outcomes if o.code is None]
        failed = [
            (o.error, o.code, seconds, job_id, o.index) for o in outcomes if o.code is not None
        ]
        await self._results.run(self._record, done, failed)

    def _record(self, done: list[tuple[Any, ...]], failed: list[tuple[Any, ...]]) -> None:
        if done:
            self._results.execute_many(
                "UPDATE job_items SET state = 'done', key = ?, seconds = ?"
                " WHERE job_id = ? AND idx = ?",
                done,
            )
        if failed:
            self._results.execute_many(
                "UPDATE job_items SET state = 'failed', key = NULL, error = ?, code = ?,"
                " seconds = ? WHERE job_id = ? AND idx = ?",
                failed,
            )

    async def finish(self, job_id: str, state: str, *, now: float) -> None:
        """``state`` (done, cancelled) for a job still active; a finished one stays as it is."""
        await self._results.run(
            self._results.execute,
            "UPDATE jobs SET state = ?, finished = ?"
            " WHERE id = ? AND state IN ('queued', 'running')",
            (state, now, job_id),
        )

    async def delete(self, job_id: str) -> None:
        """The job and its items (its results stay in the store, no longer pinned)."""
        await self._results.run(self._delete, job_id)

    def _delete(self, job_id: str) -> None:
        self._results.execute("DELETE FROM job_items WHERE job_id = ?", (job_id,))
        self._results.execute("DELETE FROM jobs WHERE id = ?", (job_id,))

    async def spec(self, job_id: str) -> dict[str, Any]:
        """The job's validated request (``NotFoundError`` for an unknown id)."""
        rows = await self._results.run(
            self._results.query, "SELECT spec FROM jobs WHERE id = ?", (job_id,)
        )
        if not rows:
            raise _unknown_job(job_id)
        return dict(json.loads(rows[0][0]))

    async def status(self, job_id: str, *, max_errors: int = 100) -> dict[str, Any]:
        """State, counts, timings and the first ``max_errors`` failed items."""
        return await self._results.run(self._status, job_id, max_errors)

    def _status(self, job_id: str, max_errors: int) -> dict[str, Any]:
        query = self._results.query
        rows = query(
            "SELECT spec, state, total, created, started, finished FROM jobs WHERE id = ?",
            (job_id,),
        )
        if not rows:
            raise _unknown_job(job_id)
        spec, state, total, created, started, finished = rows[0]
        counts = dict(
            query(
                "SELECT state, COUNT(*) FROM job_items WHERE job_id = ? GROUP BY state", (job_id,)
            )
        )
        errors = query(
            "SELECT preamble, projector, code, error FROM job_items"
            " WHERE job_id = ? AND state = 'failed' ORDER BY idx LIMIT ?",
            (job_id, max_errors),
        )
        end = finished or time.time()
        return {
            "id": job_id,
            "state": state,
            "spec": json.loads(spec),
            "total": total,
            "done": counts.get("done", 0),
            "failed": counts.get("failed", 0),
            "pending": counts.get("pending", 0),
            "created": created,
            "started": started,
            "finished": finished,
            "elapsed_s": round(end - started, 3) if started else None,
            "errors": [
                {"preamble": p, "projector": proj, "code": code, "detail": detail}
                for p, proj, code, detail in errors
            ],
        }


def _unknown_job(job_id: str) -> NotFoundError:
    return NotFoundError(f"batch job_id={job_id!r} is not known", code="job_not_found")
