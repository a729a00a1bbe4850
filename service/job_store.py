"""Batch jobs' persistence: jobs and their items, in the result store's database
(:mod:`service.database`), so a job's item is marked done only after its result is stored.

One repository for every job statement, all of it off the event loop: the ``async`` methods run
their SQL on the result store's thread, and the export's page reader
(:meth:`JobStore.iter_coords`) opens its own read-only connection in the export's thread. An
item's result key pins that result in the store (see :meth:`JobStore.pin`).
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from clustviz.errors import NotFoundError
from service import database
from service.results import ResultStore

__all__ = ["ItemOutcome", "JobCoords", "JobStore"]

_JOB_COORDS_PAGE = (
    "SELECT j.idx, j.preamble, j.projector, p.n, p.coords"
    " FROM job_items j JOIN projections p ON p.key = j.key"
    " WHERE j.job_id = ? AND j.state = 'done' AND j.idx > ? ORDER BY j.idx LIMIT ?"
)


@dataclass(frozen=True, slots=True)
class JobCoords:
    """One finished item of a batch job with its stored coordinates (``JobStore.iter_coords``)."""

    index: int
    preamble: str
    projector: str
    embedding: np.ndarray  # (n, 2) float32, read-only: a view on the row's bytes


@dataclass(frozen=True, slots=True)
class ItemOutcome:
    """How one item of a job ended: its result's key, or the error's message and code."""

    index: int
    key: str | None = None
    error: str | None = None
    code: str | None = None


class JobStore:
    """Batch jobs and their items, in the result store's database: every method but
    :meth:`iter_coords` is ``async`` and runs its SQL on the result store's thread."""

    def __init__(self, results: ResultStore) -> None:
        self._results = results

    def iter_coords(self, job_id: str, *, page_items: int = 2048) -> Iterator[list[JobCoords]]:
        """A job's finished items with their coordinates, in item order, ``page_items`` at a
        time: what an export of a whole-dataset job reads without holding it all.

        Each page is a keyset query on a read-only connection of its own, so the running job's
        writes never wait for a reader. A corrupt row (wrong size, non-finite) is left out, as
        :meth:`ResultStore.get` would drop it. Blocking: run it in a thread of its own."""
        uri = f"{self._results.path.resolve().as_uri()}?mode=ro"
        db = database.connect(uri, uri=True)
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
