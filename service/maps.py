"""Global maps as durable jobs: validated up front, keyed by content, fitted in the warm worker
pool, stored in the service's database, resumed after a restart, served as points.

A map's id is a hash of what shapes it: the dataset's content fingerprint, the plan the request
resolves to for that dataset (:meth:`clustviz.maps.MapPlan.describe`) and the versions of the
libraries that fit it. The same request names the same map: a finished one is answered at once,
a running one is not started twice.

The worker loads the dataset from its files (:func:`clustviz.maps.tasks.fit_source_map`) and
writes its progress to a small file under the state dir, which the server reads while it waits
and copies to the database (what status and the event stream report).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
from cachetools import LRUCache

from clustviz.data import DataCatalog, Dataset
from clustviz.errors import ClustvizError, NotFoundError
from clustviz.keys import map_image_key
from clustviz.maps import MapRequest, get_map_spec, map_library_versions, plan_map
from clustviz.maps.tasks import cancel_path, read_progress
from clustviz.pools import TaskPool
from clustviz.render import plot_title
from service.engine import MEDIA_TYPES, Engine
from service.events import Changes, event_stream, notify
from service.map_store import MapStore, StoredMap
from service.results import ResultStore

__all__ = ["POINTS_SCHEMA", "MapManager", "MapNotReadyError", "MapRows", "end_event_id"]

logger = logging.getLogger("clustviz.maps")
#: How often the server looks at a running map's progress file.
POLL_S = 0.25
#: Maps fitted at once: each holds a pool worker for minutes at clamp scale, so the others wait
#: (queued) and the pool keeps its other workers for projections.
MAP_CONCURRENCY = 1
COORDS_ENTRIES = 4  # finished maps' coordinates kept decoded in memory (preamble GETs)
POINTS_SCHEMA = pa.schema(
    [
        ("preamble", pa.string()),
        ("guess", pa.string()),
        ("token_id", pa.int64()),
        ("cluster_id", pa.int64()),
        ("x", pa.float32()),
        ("y", pa.float32()),
    ]
)
_DATASET_COLUMNS = ("preamble", "guess", "token_id", "cluster_id")


class MapNotReadyError(ClustvizError):
    """A map's points were asked for before it is done (→ 409)."""

    default_code = "map_not_ready"


@dataclass(frozen=True, slots=True)
class MapRows:
    """A done map, its dataset, and the rows asked for: one preamble's (its text, its row
    indices) or every row (``preamble`` and ``rows`` None)."""

    stored: StoredMap
    dataset: Dataset
    preamble: str | None
    rows: np.ndarray | None


@dataclass(slots=True)
class _Live(Changes):
    """In-memory side of a running map: its task, and a change counter for SSE."""

    task: asyncio.Task[None] | None = None


class MapManager:
    """Creates, runs, resumes, reports, serves and deletes global maps."""

    def __init__(
        self,
        engine: Engine,
        store: ResultStore,
        pool: TaskPool,
        *,
        state_dir: Path,
        timeout: float,
        keepalive: float = 15.0,
    ) -> None:
        self.engine = engine
        self.catalog: DataCatalog = engine.catalog
        self.pool = pool
        self.store = store  # rendered plots
        self.map_store = MapStore(store)
        self.progress_dir = state_dir / "map-progress"
        self.timeout = timeout
        self.keepalive = keepalive
        self._live: dict[str, _Live] = {}
        self._slots = asyncio.Semaphore(MAP_CONCURRENCY)
        self._coords: LRUCache[str, StoredMap] = LRUCache(maxsize=COORDS_ENTRIES)

    # ---- creation ---------------------------------------------------------------------------

    async def create(self, dataset_id: str, request: MapRequest) -> tuple[str, bool]:
        """Validate (404/422), then queue the map unless it exists; ``(id, queued now)``."""
        dataset = await self.engine.dataset(dataset_id)
        # counting clusters and reading library versions: off the event loop
        map_id, spec = await asyncio.to_thread(_map_spec, dataset, request)
        created = await self.map_store.create(map_id, spec, created=time.time())
        if created:
            self._start(map_id)
        return map_id, created

    # ---- running ----------------------------------------------------------------------------

    def _start(self, map_id: str) -> None:
        live = self._live.setdefault(map_id, _Live())
        if live.task is None or live.task.done():
            live.task = asyncio.create_task(self._run(map_id, live), name=f"map-{map_id}")

    async def resume_all(self) -> list[str]:
        """Start again every map that was queued or running when the server stopped."""
        map_ids = await self.map_store.active()
        for map_id in map_ids:
            logger.info("resuming map %s", map_id)
            self._start(map_id)
        return map_ids

    async def _run(self, map_id: str, live: _Live) -> None:
        async with self._slots:  # queued until then
            await self._fit(map_id, live)

    async def _fit(self, map_id: str, live: _Live) -> None:
        try:
            status = await self.map_store.status(map_id)
            spec = status["spec"]
            source = (await asyncio.to_thread(self.catalog.sources)).get(spec["dataset"])
            if source is None:
                raise NotFoundError(
                    f"dataset={spec['dataset']!r} is no longer in the data dir",
                    code="dataset_not_found",
                )
            self.progress_dir.mkdir(parents=True, exist_ok=True)
            progress_path = self.progress_dir / f"{map_id}.json"
            progress_path.unlink(missing_ok=True)  # a killed run's last report
            cancel_path(progress_path).unlink(missing_ok=True)  # a deleted twin's request
            await self.map_store.start(map_id, now=time.time())
            await notify(live)
            future = self.pool.submit(
                "clustviz.maps.tasks:fit_source_map",
                source,
                spec["fingerprint"],
                spec["request"],
                str(progress_path),
                timeout=self.timeout,
            )
            result = await self._follow(map_id, live, asyncio.wrap_future(future), progress_path)
            await self.map_store.finish(
                map_id, result["coords"], result["summary"], now=time.time()
            )
            progress_path.unlink(missing_ok=True)
        except asyncio.CancelledError:  # server shutting down: the map starts again next time
            raise
        except ClustvizError as exc:
            await self.map_store.fail(map_id, exc.message, exc.code, now=time.time())
        except Exception as exc:  # a bug: say so, and keep the map's row telling it
            logger.exception("map %s stopped unexpectedly", map_id)
            message = f"internal error ({type(exc).__name__})"
            await self.map_store.fail(map_id, message, "internal_error", now=time.time())
        await notify(live)

    async def _follow(
        self,
        map_id: str,
        live: _Live,
        result: asyncio.Future[dict[str, Any]],
        progress_path: Path,
    ) -> dict[str, Any]:
        """Wait for the worker's result, copying its progress file to the database."""
        seen = None
        while True:
            done, _ = await asyncio.wait({result}, timeout=POLL_S)
            if done:
                return result.result()
            progress = await asyncio.to_thread(read_progress, progress_path)
            if progress is not None and progress != seen:
                seen = progress
                await self.map_store.progress(map_id, progress.stage, progress.fraction)
                await notify(live)

    # ---- reporting --------------------------------------------------------------------------

    async def status(self, map_id: str) -> dict[str, Any]:
        return await self.map_store.status(map_id)

    async def list(self) -> list[dict[str, Any]]:
        return await self.map_store.list()

    async def delete(self, map_id: str) -> dict[str, Any]:
        """Remove the map and its coordinates. A running fit is asked to stop (at its next
        progress report); whatever it returns is not stored."""
        status = await self.map_store.status(map_id)
        await self.map_store.delete(map_id)
        if status["state"] == "running":
            await asyncio.to_thread(self._request_cancel, map_id)
        self._coords.pop(map_id, None)
        live = self._live.pop(map_id, None)
        if live is not None:
            await notify(live)
        return {**status, "state": "deleted"}

    def _request_cancel(self, map_id: str) -> None:
        self.progress_dir.mkdir(parents=True, exist_ok=True)
        cancel_path(self.progress_dir / f"{map_id}.json").touch()

    async def points(self, map_id: str, preamble: str | None, preamble_id: str | None) -> MapRows:
        """A done map, its dataset, and the rows of the preamble asked for (none: all).

        ``map_not_found`` (404), ``map_not_ready`` (409) before it is done; a dataset whose file
        changed since the map was made is ``map_stale`` (409): its rows are not the map's."""
        stored = self._coords.get(map_id)
        if stored is None:
            found = await self.map_store.coords(map_id)
            if found is None:
                status = await self.map_store.status(map_id)
                raise MapNotReadyError(
                    f"map id={map_id!r} is {status['state']}"
                    + (f" ({status['error']['code']})" if status["error"] else "")
                    + "; its points are served once it is done"
                )
            stored = self._coords[map_id] = found
        dataset = await self.engine.dataset(stored.spec["dataset"])
        if dataset.fingerprint != stored.spec["fingerprint"] or dataset.n_rows != len(
            stored.coords
        ):
            raise MapNotReadyError(
                f"dataset {stored.spec['dataset']!r} changed since map id={map_id!r} was made; "
                "post the map again for the new content",
                code="map_stale",
            )
        if preamble is None and preamble_id is None:
            return MapRows(stored, dataset, None, None)
        text = dataset.resolve_preamble(preamble, preamble_id)
        return MapRows(stored, dataset, text, dataset.row_indices(text))

    def plot_key(
        self, stored: StoredMap, preamble: str, fmt: str, *, width: float, height: float, dpi: int
    ) -> str:
        """The image key (and ETag source) of ``preamble``'s plot on the map."""
        return map_image_key(stored.id, preamble, fmt, width=width, height=height, dpi=dpi)

    async def plot(
        self,
        stored: StoredMap,
        dataset: Dataset,
        preamble: str,
        rows: np.ndarray,
        fmt: str,
        *,
        width: float = 8.0,
        height: float = 6.0,
        dpi: int = 100,
    ) -> tuple[str, bytes]:
        """``(media_type, body)`` of ``preamble``'s guesses on the map (from :meth:`points`):
        rendered in a pool worker, kept in the result store under :meth:`plot_key`."""
        key = self.plot_key(stored, preamble, fmt, width=width, height=height, dpi=dpi)
        hit = await self.store.aget_image(key)
        if hit is not None:
            return hit
        part = dataset.rows[rows]
        method = get_map_spec(stored.spec["plan"]["method"]).title
        title, caption = plot_title(preamble, f"{method} global map", dataset.name)
        body = await asyncio.wrap_future(
            self.pool.submit(
                "clustviz.tasks:render_map",
                fmt,
                stored.coords,
                rows,
                part["guess"].to_list(),
                part["cluster_id"].to_numpy(),
                title,
                caption,
                width,
                height,
                dpi,
                timeout=self.timeout,
            )
        )
        media_type = MEDIA_TYPES[fmt]
        await self.store.aput_image(key, media_type, body)
        return media_type, body

    async def events(self, map_id: str, *, after: int | None = None) -> AsyncIterator[str]:
        """Server-Sent Events: ``progress`` on each stored change, then ``end``.

        A ``progress`` event's id is the map's count of stored changes (``updates``), the same
        on every connection and after a restart; ``end``'s is :func:`end_event_id`. A stream
        resumed ``after`` an id sends only what follows it."""
        await self.status(map_id)  # 404 before the stream
        live = self._live.setdefault(map_id, _Live())

        async def read_status() -> dict[str, Any] | None:
            try:
                return await self.status(map_id)
            except NotFoundError:  # deleted meanwhile
                return None

        async for event in event_stream(
            live,
            read_status,
            progress_id=lambda status: int(status["updates"]),
            end_id=end_event_id,
            keepalive=self.keepalive,
            after=after,
        ):
            yield event

    async def shutdown(self) -> None:
        tasks = [live.task for live in self._live.values() if live.task and not live.task.done()]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


def _map_spec(dataset: Dataset, request: MapRequest) -> tuple[str, dict[str, Any]]:
    """The map's id and stored spec: the request resolved for the dataset (422 if it cannot)."""
    plan = plan_map(request, n_rows=dataset.n_rows, n_clusters=dataset.n_clusters_total())
    described = plan.describe()
    versions = map_library_versions(plan.spec.name)
    spec = {
        "dataset": dataset.id,
        "fingerprint": dataset.fingerprint,
        "request": request.model_dump(mode="json"),
        "plan": described,
        "plan_notes": list(plan.notes),
        "versions": versions,
    }
    return map_key(dataset.fingerprint, described, versions), spec


def map_key(fingerprint: str, plan: dict[str, Any], versions: dict[str, str]) -> str:
    """The id of the map of that content, fitted by that plan with those libraries."""
    payload = json.dumps([fingerprint, plan, versions], sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(payload.encode()).hexdigest()[:24]


def points_table(stored: StoredMap, dataset: Dataset, rows: np.ndarray | None) -> pa.Table:
    """One row per guess: preamble, guess, token_id, cluster_id, x, y (dataset row order)."""
    frame = dataset.rows.select(_DATASET_COLUMNS)
    xy = stored.coords
    if rows is not None:
        frame, xy = frame[rows], xy[rows]
    columns = [frame[name].to_arrow() for name in _DATASET_COLUMNS]
    table = pa.Table.from_arrays(
        [*columns, pa.array(xy[:, 0]), pa.array(xy[:, 1])], names=POINTS_SCHEMA.names
    )
    return table.cast(POINTS_SCHEMA)


def end_event_id(status: dict[str, Any]) -> int:
    """The id of a map's ``end`` event: past every ``progress`` id."""
    return int(status["updates"]) + 1
