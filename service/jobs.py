"""Batch jobs: many preambles × several projectors, durable, resumable, with progress.

A job and its items live in the result store's SQLite file (:class:`service.job_store.JobStore`:
its statements run on the store's thread, never on the event loop). An item is marked done
only after its result is stored, in the same database: after a SIGKILL, a restarted server
finds every finished item intact and resumes the job from the pending ones on its own.

Items already in the cache are not recomputed; a failing item is recorded with its reason and
does not fail the job. clusterplot items go through the device lane, which gathers the many
concurrently pending items into batched ``fit_transform_many`` calls.

A job with ``align`` gives each item's layout (computed or cached as without it) aligned to a
global map: the aligned layout is the item's result, stored under its own key
(:meth:`service.alignment.Alignment.key`), while the layout stays cached under its own.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import AsyncIterator, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from clustviz.errors import ClustvizError, InvalidInputError, NotFoundError
from clustviz.projectors import DEFAULT_SEED, get_spec
from service.alignment import Aligner, Alignment, Layout
from service.engine import Engine, ResolvedRequest
from service.events import ACTIVE, Changes, event_stream, notify
from service.export import ExportRequest, ResultFormat, export_results
from service.job_store import ItemOutcome, JobStore
from service.memory import release_unused_memory
from service.results import ResultStore

__all__ = ["JobManager", "end_event_id"]

logger = logging.getLogger("clustviz.jobs")
WINDOW_ITEMS = 2048  # items resolved and in flight at once (several lane chunks)
# Longest stretch the event loop spends resolving a window's items before it serves others: a
# budget in time, not in items (an item's cost varies with the machine's load).
RESOLVE_SLICE_S = 0.002


@dataclass(slots=True)
class _Live(Changes):
    """In-memory side of a running job: its task, a change counter for SSE, a cancel flag."""

    task: asyncio.Task[None] | None = None
    cancelled: bool = False
    ended: bool = False  # its final state is stored: streams say so without delay


class JobManager:
    """Creates, runs, resumes, reports and cancels batch jobs."""

    def __init__(
        self,
        engine: Engine,
        store: ResultStore,
        aligner: Aligner,
        *,
        max_items: int,
        library_concurrency: int,
        lane_chunk: int,  # clusterplot items sent to the lane at once (one batched fit)
        keepalive: float = 15.0,  # seconds of silence before an event stream's keep-alive
    ) -> None:
        self.engine = engine
        self.store = store
        self.aligner = aligner  # aligned jobs' maps
        self.job_store = JobStore(store)  # every job statement, off the event loop
        self.max_items = max_items
        self.library_concurrency = library_concurrency
        self.lane_chunk = lane_chunk
        self.keepalive = keepalive
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
        align: dict[str, Any] | None = None,
    ) -> str:
        """Validate everything up front (404/409/422), persist the job, start it; return its
        id. ``align`` (``{"map": id, **AlignParams}``) aligns every item to that map."""
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
        if align is not None:  # as POST /projections checks it: done, current, this dataset's
            await self.aligner.target(Alignment.of(align).map_id, dataset)
        job_id = uuid.uuid4().hex[:16]
        spec = {
            "dataset": dataset,
            "projectors": list(projectors),
            "params": params,
            "seed": DEFAULT_SEED if seed is None else seed,
            "align": align,
        }
        items = [(text, name) for text in texts for name in projectors]
        await self.job_store.create(job_id, spec, items, created=time.time())
        self._start(job_id)
        return job_id

    # ---- running ----------------------------------------------------------------------------

    def _start(self, job_id: str) -> None:
        live = self._live.setdefault(job_id, _Live())
        live.task = asyncio.create_task(self._run(job_id), name=f"job-{job_id}")

    async def resume_all(self) -> list[str]:
        """Restart every job that was queued or running when the server stopped."""
        job_ids = await self.job_store.active()
        for job_id in job_ids:
            logger.info("resuming job %s", job_id)
            self._start(job_id)
        return job_ids

    async def _run(self, job_id: str) -> None:
        live = self._live[job_id]
        spec = await self.job_store.spec(job_id)
        await self.job_store.start(job_id, now=time.time())
        pending = await self.job_store.pending(job_id)
        library = asyncio.Semaphore(self.library_concurrency)
        alignment = None if spec.get("align") is None else Alignment.of(spec["align"])

        def result_key(request: ResolvedRequest) -> str:
            """What an item's result is stored under: its layout's key, or the aligned one's."""
            return request.key if alignment is None else alignment.key(request.key)

        async def finish(
            items: list[tuple[int, ResolvedRequest]], layouts: list[Layout], started: float
        ) -> None:
            """Record items done with their layouts (aligned first, when the job asks) or
            failed with their errors."""
            errors: Sequence[ClustvizError | None] = [
                layout if isinstance(layout, ClustvizError) else None for layout in layouts
            ]
            if alignment is not None:
                requests = [request for _, request in items]
                errors = await self.aligner.align_layouts(alignment, requests, layouts)
            rows = [
                (index, result_key(request), error)
                for (index, request), error in zip(items, errors, strict=True)
            ]
            await self._record(job_id, rows, started)
            await notify(live)

        async def run_item(index: int, request: ResolvedRequest) -> None:
            async with library:
                if live.cancelled:
                    return
                started = time.perf_counter()
                layout: Layout
                try:
                    layout = (await self.engine.project(request, for_view=False)).stored
                except ClustvizError as exc:
                    layout = exc
                await finish([(index, request)], [layout], started)

        async def run_lane_chunk(chunk: list[tuple[int, ResolvedRequest]]) -> None:
            # submitted together, so the device lane runs them as one batched fit
            if live.cancelled:
                return
            started = time.perf_counter()
            outcomes = await self.engine.project_many([request for _, request in chunk])
            layouts: list[Layout] = []
            for outcome in outcomes:
                if isinstance(outcome, BaseException) and not isinstance(outcome, ClustvizError):
                    raise outcome
                layouts.append(outcome)
            await finish(chunk, layouts, started)

        async def run_window(window: list[tuple[int, str, str]]) -> None:
            work = []
            lane_items: list[tuple[int, ResolvedRequest]] = []
            pins: list[tuple[int, str]] = []
            paused = time.perf_counter()
            for index, preamble, projector in window:
                if time.perf_counter() - paused > RESOLVE_SLICE_S:
                    await asyncio.sleep(0)  # resolving thousands of items: let requests in
                    paused = time.perf_counter()
                try:
                    request = await self.engine.resolve(
                        dataset_id=spec["dataset"],
                        projector=projector,
                        preamble=preamble,
                        params=spec["params"].get(projector),
                        seed=spec["seed"],
                    )
                except ClustvizError as exc:
                    await self._record(job_id, [(index, None, exc)], time.perf_counter())
                    await notify(live)
                    continue
                pins.append((index, result_key(request)))
                if request.spec.runner == "lane":
                    lane_items.append((index, request))
                else:
                    work.append(run_item(index, request))
            await self.job_store.pin(job_id, pins)
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
        await self.job_store.finish(job_id, final, now=time.time())
        live.ended = True
        await asyncio.to_thread(release_unused_memory)  # back near idle after a big job
        await notify(live)

    async def _record(
        self,
        job_id: str,
        rows: Sequence[tuple[int, str | None, ClustvizError | None]],
        started: float,
    ) -> None:
        """Mark items done (with their result key) or failed (with the reason); ``seconds`` is
        the elapsed time shared out over the items."""
        seconds = (time.perf_counter() - started) / max(1, len(rows))
        outcomes = [
            ItemOutcome(index, key)
            if exc is None
            else ItemOutcome(index, error=exc.message, code=exc.code)
            for index, key, exc in rows
        ]
        await self.job_store.record(job_id, outcomes, seconds)

    # ---- reporting --------------------------------------------------------------------------

    async def status(self, job_id: str, *, max_errors: int = 100) -> dict[str, Any]:
        """State, counts, timings and the first ``max_errors`` failed items."""
        return await self.job_store.status(job_id, max_errors=max_errors)

    async def events(self, job_id: str, *, after: int | None = None) -> AsyncIterator[str]:
        """Server-Sent Events: ``progress`` as items finish (at most ~10/s), then ``end``.

        Every event has an id from the job's stored state, the same on every connection and
        after a restart: a ``progress`` event's id is the number of items finished (done +
        failed, the count its data shows), ``end``'s is :func:`end_event_id`. A stream resumed
        ``after`` an id (the client's ``Last-Event-ID``) sends only what comes after it: no event
        twice, no progress missed, and ``end`` if the job has finished meanwhile. A comment
        (``: keep-alive``) goes out when nothing happened for ``keepalive`` seconds."""
        await self.status(job_id, max_errors=0)  # 404 before the stream
        live = self._live.setdefault(job_id, _Live())

        async def read_status() -> dict[str, Any] | None:
            try:
                return await self.status(job_id, max_errors=0)
            except NotFoundError:  # deleted meanwhile
                return None

        async def settle() -> None:
            if not live.ended:
                await asyncio.sleep(0.1)  # coalesce bursts of item completions

        async for event in event_stream(
            live,
            read_status,
            progress_id=lambda status: status["done"] + status["failed"],
            end_id=end_event_id,
            keepalive=self.keepalive,
            after=after,
            settle=settle,
        ):
            yield event

    async def cancel(self, job_id: str) -> dict[str, Any]:
        """Cancel an active job: its items not yet run are not run, the finished ones stay
        (and export). A job that has ended is answered as it is."""
        status = await self.status(job_id, max_errors=0)
        if status["state"] not in ACTIVE:
            return status
        live = self._live.get(job_id)
        if live is not None:
            live.cancelled = True
        await self.job_store.finish(job_id, "cancelled", now=time.time())
        if live is not None:
            await notify(live)
        return await self.status(job_id, max_errors=0)

    async def delete(self, job_id: str) -> dict[str, Any]:
        """Remove a job and its items, stopping it first if it is active: afterwards every
        route answers 404 for it. Its stored results stay in the store, no longer pinned."""
        status = await self.status(job_id, max_errors=0)
        live = self._live.pop(job_id, None)
        if live is not None:
            live.cancelled = True
            if live.task is not None and not live.task.done():
                live.task.cancel()  # its pool work finishes in the workers, unrecorded
                await asyncio.wait({live.task})  # (asyncio.wait: this handler's own
                # cancellation is not swallowed)
        await self.job_store.delete(job_id)
        if live is not None:  # streams following it end
            live.ended = True
            await notify(live)
        return {**status, "state": "deleted"}

    async def results(self, job_id: str, fmt: ResultFormat) -> Iterator[bytes]:
        """One row per point of every finished item: preamble, guess, token_id, cluster_id,
        projector, x, y (and aligned_to, for a job aligned to a map) — as Parquet, Arrow IPC
        or NDJSON, streamed (see service.export)."""
        spec = await self.job_store.spec(job_id)
        dataset = await self.engine.dataset(spec["dataset"])
        aligned_to = None if spec.get("align") is None else Alignment.of(spec["align"]).map_id
        return export_results(ExportRequest(self.job_store, job_id, dataset, aligned_to), fmt)

    async def shutdown(self) -> None:
        tasks = [live.task for live in self._live.values() if live.task and not live.task.done()]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


def end_event_id(status: dict[str, Any]) -> int:
    """The id of a job's ``end`` event: past every ``progress`` id (at most ``total``)."""
    return int(status["total"]) + 1
