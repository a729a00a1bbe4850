"""Batch jobs: many preambles × several projectors, durable, resumable, with progress.

A job and its items live in the result store's SQLite file. An item is marked done only after
its result is stored, in the same database: after a SIGKILL, a restarted server finds every
finished item intact and resumes the job from the pending ones on its own.

Items already in the cache are not recomputed; a failing item is recorded with its reason and
does not fail the job. clusterplot items go through the device lane, which gathers the many
concurrently pending items into batched ``fit_transform_many`` calls.
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
import time
import uuid
from collections.abc import AsyncIterator, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from clustviz.errors import ClustvizError, InvalidInputError, NotFoundError
from clustviz.projectors import DEFAULT_SEED, get_spec
from service.engine import Engine, ResolvedRequest
from service.export import ExportRequest, ResultFormat, export_results
from service.memory import release_unused_memory
from service.store import ResultStore

__all__ = ["JobManager"]

logger = logging.getLogger("clustviz.jobs")
ACTIVE = ("queued", "running")
WINDOW_ITEMS = 2048  # items resolved and in flight at once (several lane chunks)


@dataclass(slots=True)
class _Live:
    """In-memory side of a running job: its task, a change counter for SSE, a cancel flag."""

    task: asyncio.Task[None] | None = None
    version: int = 0
    changed: asyncio.Condition = field(default_factory=asyncio.Condition)
    cancelled: bool = False
    ended: bool = False  # its final state is stored: streams say so without delay


class JobManager:
    """Creates, runs, resumes, reports and cancels batch jobs."""

    def __init__(
        self,
        engine: Engine,
        store: ResultStore,
        *,
        max_items: int,
        library_concurrency: int,
        lane_chunk: int,  # clusterplot items sent to the lane at once (one batched fit)
    ) -> None:
        self.engine = engine
        self.store = store
        self.max_items = max_items
        self.library_concurrency = library_concurrency
        self.lane_chunk = lane_chunk
        self._live: dict[str, _Live] = {}

    # ---- creation ---------------------------------------------------------------------------

    async def create(
        self,
        *,
        dataset: str,
        preambles: list[str] | Literal["all"],
        projectors: Sequence[str],
        params: dict[str, dict[str, Any]],
        seed: int | None,
    ) -> str:
        """Validate everything up front (404/422), persist the job, start it; return its id."""
        loaded = await self.engine.dataset(dataset)
        if not projectors:
            raise InvalidInputError(
                "projectors must name at least one projector", code="invalid_request"
            )
        for name in projectors:
            get_spec(name)
        unknown_params = sorted(set(params) - set(projectors))
        if unknown_params:
            raise InvalidInputError(
                f"params given for projector(s) {unknown_params} not in projectors={projectors}",
                code="invalid_params",
            )
        texts = loaded.preambles if preambles == "all" else list(dict.fromkeys(preambles))
        known = set(loaded.preambles)
        unknown = [text for text in texts if text not in known]
        if unknown:
            shown = ", ".join(repr(text) for text in unknown[:10])
            more = f" and {len(unknown) - 10} more" if len(unknown) > 10 else ""
            raise NotFoundError(
                f"{len(unknown)} preamble(s) are not in dataset {dataset!r}: {shown}{more}",
                code="unknown_preambles",
            )
        total = len(texts) * len(projectors)
        if total == 0:
            raise InvalidInputError("the batch has no items", code="invalid_request")
        if total > self.max_items:
            raise InvalidInputError(
                f"the batch has {total} items (preambles × projectors); the limit is "
                f"{self.max_items}",
                code="batch_too_large",
            )
        # Validate each projector's params once, on the first preamble (same model for all n).
        for name in projectors:
            await self.engine.resolve(
                dataset_id=dataset,
                projector=name,
                preamble=texts[0],
                params=params.get(name),
                seed=seed,
            )
        job_id = uuid.uuid4().hex[:16]
        spec = {
            "dataset": dataset,
            "projectors": list(projectors),
            "params": params,
            "seed": DEFAULT_SEED if seed is None else seed,
        }
        rows = [
            (job_id, index, text, name, None, "pending", None, None, None)
            for index, (text, name) in enumerate((t, p) for t in texts for p in projectors)
        ]
        now = time.time()
        await asyncio.to_thread(
            self.store.execute,
            "INSERT INTO jobs VALUES (?, ?, 'queued', ?, ?, NULL, NULL)",
            (job_id, json.dumps(spec), total, now),
        )
        await asyncio.to_thread(
            self.store.execute_many,
            "INSERT INTO job_items VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            rows,
        )
        self._start(job_id)
        return job_id

    # ---- running ----------------------------------------------------------------------------

    def _start(self, job_id: str) -> None:
        live = self._live.setdefault(job_id, _Live())
        live.task = asyncio.create_task(self._run(job_id), name=f"job-{job_id}")

    async def resume_all(self) -> list[str]:
        """Restart every job that was queued or running when the server stopped."""
        rows = await asyncio.to_thread(
            self.store.query, "SELECT id FROM jobs WHERE state IN ('queued', 'running')"
        )
        for (job_id,) in rows:
            logger.info("resuming job %s", job_id)
            self._start(job_id)
        return [row[0] for row in rows]

    async def _run(self, job_id: str) -> None:
        live = self._live[job_id]
        spec = self._spec(job_id)
        self.store.execute(
            "UPDATE jobs SET state = 'running', started = COALESCE(started, ?) WHERE id = ?",
            (time.time(), job_id),
        )
        pending = await asyncio.to_thread(
            self.store.query,
            "SELECT idx, preamble, projector FROM job_items"
            " WHERE job_id = ? AND state = 'pending' ORDER BY idx",
            (job_id,),
        )
        library = asyncio.Semaphore(self.library_concurrency)

        async def run_item(index: int, request: ResolvedRequest) -> None:
            async with library:
                if live.cancelled:
                    return
                started = time.perf_counter()
                try:
                    await self.engine.project(request, for_view=False)
                except ClustvizError as exc:
                    self._record(job_id, [(index, request.key, exc)], started)
                else:
                    self._record(job_id, [(index, request.key, None)], started)
                await self._notify(live)

        async def run_lane_chunk(chunk: list[tuple[int, ResolvedRequest]]) -> None:
            # submitted together, so the device lane runs them as one batched fit
            if live.cancelled:
                return
            started = time.perf_counter()
            outcomes = await self.engine.project_many([request for _, request in chunk])
            for outcome in outcomes:
                if isinstance(outcome, BaseException) and not isinstance(outcome, ClustvizError):
                    raise outcome
            rows = [
                (index, request.key, outcome if isinstance(outcome, ClustvizError) else None)
                for (index, request), outcome in zip(chunk, outcomes, strict=True)
            ]
            self._record(job_id, rows, started)
            await self._notify(live)

        async def run_window(window: list[tuple[Any, ...]]) -> None:
            work = []
            lane_items: list[tuple[int, ResolvedRequest]] = []
            pins: list[tuple[str, str, int]] = []
            for position, (index, preamble, projector) in enumerate(window):
                if position % 64 == 63:
                    await asyncio.sleep(0)  # resolving thousands of items: let requests in
                try:
                    request = await self.engine.resolve(
                        dataset_id=spec["dataset"],
                        projector=projector,
                        preamble=preamble,
                        params=spec["params"].get(projector),
                        seed=spec["seed"],
                    )
                except ClustvizError as exc:
                    self._record(job_id, [(index, None, exc)], time.perf_counter())
                    await self._notify(live)
                    continue
                pins.append((request.key, job_id, index))
                if request.spec.runner == "lane":
                    lane_items.append((index, request))
                else:
                    work.append(run_item(index, request))
            # Pinned before they run: in a store full of pinned results, a result would be
            # evicted as soon as it is stored, before its item is marked done with its key.
            await asyncio.to_thread(
                self.store.execute_many,
                "UPDATE job_items SET key = ? WHERE job_id = ? AND idx = ?",
                pins,
            )
            size = max(1, self.lane_chunk)
            work += [
                run_lane_chunk(lane_items[start : start + size])
                for start in range(0, len(lane_items), size)
            ]
            await asyncio.gather(*work)

        try:
            # A window of items at a time: what the job holds (resolved requests, pending
            # coroutines) stays bounded however many items the job has.
            for start in range(0, len(pending), WINDOW_ITEMS):
                if live.cancelled:
                    break
                await run_window(pending[start : start + WINDOW_ITEMS])
        except asyncio.CancelledError:  # server shutting down: the job resumes at next start
            raise
        except Exception:  # a bug, not an item failure: leave the job resumable, say so
            logger.exception("job %s stopped unexpectedly", job_id)
            return
        final = "cancelled" if live.cancelled else "done"
        self.store.execute(
            "UPDATE jobs SET state = ?, finished = ?"
            " WHERE id = ? AND state IN ('queued', 'running')",
            (final, time.time(), job_id),
        )
        live.ended = True
        await asyncio.to_thread(release_unused_memory)  # back near idle after a big job
        await self._notify(live)

    def _record(
        self,
        job_id: str,
        rows: Sequence[tuple[int, str | None, ClustvizError | None]],
        started: float,
    ) -> None:
        """Mark items done (with their result key) or failed (with the reason), in one
        transaction; ``seconds`` is the elapsed time shared out over the items."""
        seconds = (time.perf_counter() - started) / max(1, len(rows))
        done = [(key, seconds, job_id, index) for index, key, exc in rows if exc is None]
        failed = [
            (exc.message, exc.code, seconds, job_id, index)
            for index, _, exc in rows
            if exc is not None
        ]
        if done:
            self.store.execute_many(
                "UPDATE job_items SET state = 'done', key = ?, seconds = ?"
                " WHERE job_id = ? AND idx = ?",
                done,
            )
        if failed:
            self.store.execute_many(
                "UPDATE job_items SET state = 'failed', key = NULL, error = ?, code = ?,"
                " seconds = ? WHERE job_id = ? AND idx = ?",
                failed,
            )

    async def _notify(self, live: _Live) -> None:
        async with live.changed:
            live.version += 1
            live.changed.notify_all()

    # ---- reporting --------------------------------------------------------------------------

    def _spec(self, job_id: str) -> dict[str, Any]:
        rows = self.store.query("SELECT spec FROM jobs WHERE id = ?", (job_id,))
        if not rows:
            raise NotFoundError(f"batch job_id={job_id!r} is not known", code="job_not_found")
        return json.loads(rows[0][0])

    def status(self, job_id: str, *, max_errors: int = 100) -> dict[str, Any]:
        """State, counts, timings and the first ``max_errors`` failed items."""
        rows = self.store.query(
            "SELECT spec, state, total, created, started, finished FROM jobs WHERE id = ?",
            (job_id,),
        )
        if not rows:
            raise NotFoundError(f"batch job_id={job_id!r} is not known", code="job_not_found")
        spec, state, total, created, started, finished = rows[0]
        counts = dict(
            self.store.query(
                "SELECT state, COUNT(*) FROM job_items WHERE job_id = ? GROUP BY state", (job_id,)
            )
        )
        errors = self.store.query(
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

    async def events(self, job_id: str) -> AsyncIterator[str]:
        """Server-Sent Events: a ``progress`` event per change (at most ~10/s), then ``end``."""
        self.status(job_id)  # 404 before the stream starts
        live = self._live.setdefault(job_id, _Live())
        seen = -1

        def changed_since(version: int) -> bool:
            return live.version != version

        while True:
            status = await asyncio.to_thread(self.status, job_id, max_errors=0)
            if live.version != seen:
                seen = live.version
                yield _sse("progress", status)
            if status["state"] not in ACTIVE:
                yield _sse("end", status)
                return
            async with live.changed:
                try:
                    await asyncio.wait_for(
                        live.changed.wait_for(functools.partial(changed_since, seen)), 15
                    )
                except TimeoutError:
                    yield ": keep-alive\n\n"
            if not live.ended:
                await asyncio.sleep(0.1)  # coalesce bursts of item completions

    async def cancel(self, job_id: str) -> dict[str, Any]:
        """Cancel an active job (finished items stay); remove a finished one (unpins results)."""
        status = self.status(job_id, max_errors=0)
        live = self._live.get(job_id)
        if status["state"] in ACTIVE:
            if live is not None:
                live.cancelled = True
            self.store.execute(
                "UPDATE jobs SET state = 'cancelled', finished = ? WHERE id = ?",
                (time.time(), job_id),
            )
            if live is not None:
                await self._notify(live)
            return self.status(job_id, max_errors=0)
        self.store.execute("DELETE FROM job_items WHERE job_id = ?", (job_id,))
        self.store.execute("DELETE FROM jobs WHERE id = ?", (job_id,))
        self._live.pop(job_id, None)
        return {**status, "state": "deleted"}

    async def results(self, job_id: str, fmt: ResultFormat) -> Iterator[bytes]:
        """One row per point of every finished item: preamble, guess, token_id, cluster_id,
        projector, x, y — as Parquet, Arrow IPC or NDJSON, streamed (see service.export)."""
        spec = await asyncio.to_thread(self._spec, job_id)
        dataset = await self.engine.dataset(spec["dataset"])
        return export_results(ExportRequest(self.store, job_id, dataset), fmt)

    async def shutdown(self) -> None:
        tasks = [live.task for live in self._live.values() if live.task and not live.task.done()]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


def _sse(event: str, data: dict[str, Any]) -> str:
    return f"event: {event}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n"
