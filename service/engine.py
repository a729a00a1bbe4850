"""Request → validated request → cache lookup → executor → store → result.

One engine per app. Identical concurrent requests are computed once (single flight): the
first starts the work, the others await the same future.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import polars as pl
from cachetools import LRUCache

from clustviz.data import DataCatalog, Dataset, PreambleView
from clustviz.errors import InvalidInputError, UnavailableError
from clustviz.keys import image_key, projection_key
from clustviz.lane import DeviceLane
from clustviz.metrics import layout_metrics
from clustviz.pools import TaskPool
from clustviz.projectors import DEFAULT_SEED, ProjectorSpec, build_params, get_spec
from clustviz.render import plot_title
from service.results import ResultStore, StoredProjection

if TYPE_CHECKING:  # service.alignment builds on the engine
    from service.alignment import Aligned

__all__ = ["Engine", "Projection", "ResolvedRequest"]

MEDIA_TYPES = {"png": "image/png", "svg": "image/svg+xml"}
MEMO_ENTRIES = 4096  # resolved requests remembered (the cached hot path skips validation)
TABLE_ENTRIES = 16  # datasets' preamble tables


@dataclass(frozen=True, slots=True)
class ResolvedRequest:
    """A projection request after validation: everything needed to compute or find it."""

    dataset: Dataset
    spec: ProjectorSpec
    view: PreambleView
    params_used: dict[str, Any]
    notes: list[str]
    seed: int
    key: str


@dataclass(frozen=True, slots=True)
class Projection:
    request: ResolvedRequest
    stored: StoredProjection
    cached: bool
    total_ms: float


class Engine:
    """Validates, caches and computes projections and plots."""

    def __init__(
        self,
        *,
        catalog: DataCatalog,
        store: ResultStore,
        pool: TaskPool,
        lane: DeviceLane | None,
        device: str,
        device_setting: str = "auto",
        timeout: float,
        max_queue: int,
        max_points: int,
        memo_entries: int = MEMO_ENTRIES,
    ) -> None:
        self.catalog = catalog
        self.store = store
        self.pool = pool
        self.lane = lane
        self.device = device  # what /health and responses show ("pending" until known)
        self.device_setting = device_setting  # what clusterplot runs with: auto | cpu | cuda
        self.cuda_available: bool | None = None  # as the device lane's worker sees it, once known
        self.timeout = timeout
        self.max_queue = max_queue
        self.max_points = max_points
        self._inflight: dict[str, asyncio.Future[StoredProjection]] = {}
        # threads (the preamble listing runs in one) share this memo: under a lock
        self._preamble_tables: LRUCache[str, pl.DataFrame] = LRUCache(maxsize=TABLE_ENTRIES)
        self._tables_lock = threading.Lock()
        # the event loop alone reads and writes this one
        self._resolved: LRUCache[str, ResolvedRequest] = LRUCache(maxsize=max(1, memo_entries))

    def preamble_table(self, dataset: Dataset) -> pl.DataFrame:
        """The dataset's preamble summaries, computed once per content fingerprint (a blocking
        call: routes run it in a thread)."""
        with self._tables_lock:
            table = self._preamble_tables.get(dataset.fingerprint)
        if table is None:
            table = dataset.preamble_summaries()  # outside the lock: seconds at clamp scale
            with self._tables_lock:
                self._preamble_tables[dataset.fingerprint] = table
        return table

    async def dataset(self, dataset_id: str) -> Dataset:
        # Loading a dataset reads files: never on the event loop (the hot path skips the hop).
        loaded = self.catalog.get_if_loaded(dataset_id)
        if loaded is not None:
            return loaded
        return await asyncio.to_thread(self.catalog.get, dataset_id)

    async def resolve(
        self,
        *,
        dataset_id: str,
        projector: str,
        preamble: str | None = None,
        preamble_id_: str | None = None,
        params: dict[str, Any] | None = None,
        seed: int | None = None,
    ) -> ResolvedRequest:
        """Validate a request (404/422 errors) and compute its cache key; runs nothing heavy.

        Repeated requests (the cached hot path) are answered from a memo of resolved requests,
        valid while the dataset object is the same (a replaced file loads a new one)."""
        signature = json.dumps(
            [dataset_id, projector, preamble, preamble_id_, params, seed],
            sort_keys=True,
            default=str,
        )
        memo = self._resolved.get(signature)  # a hit becomes the most recently used
        if memo is not None:
            loaded = self.catalog.get_if_loaded(dataset_id)
            if loaded is memo.dataset:
                return memo
        resolved = await self._resolve(
            dataset_id=dataset_id,
            projector=projector,
            preamble=preamble,
            preamble_id_=preamble_id_,
            params=params,
            seed=seed,
        )
        self._resolved[signature] = resolved  # the least recently used one leaves past the bound
        return resolved

    async def _resolve(
        self,
        *,
        dataset_id: str,
        projector: str,
        preamble: str | None,
        preamble_id_: str | None,
        params: dict[str, Any] | None,
        seed: int | None,
    ) -> ResolvedRequest:
        spec = get_spec(projector)
        params = dict(params or {})
        if "random_state" in params and seed is not None:
            raise InvalidInputError(
                "give the seed either as 'seed' or as params.random_state, not both",
                code="invalid_params",
            )
        params.setdefault("random_state", DEFAULT_SEED if seed is None else seed)
        if spec.runner == "lane":  # torch work: on the device the service was configured for
            params.setdefault("device", self.device_setting)
            if params["device"] == "cuda" and self.cuda_available is False:
                # refused here, before it queues: the lane's worker would refuse it anyway
                raise UnavailableError(
                    "params.device='cuda' was requested but the device lane has no CUDA; use "
                    "device='auto' or 'cpu'",
                    code="device_unavailable",
                )
        model = build_params(projector, params)
        dataset = await self.dataset(dataset_id)
        text = dataset.resolve_preamble(preamble, preamble_id_)
        view = dataset.view(text)
        if view.n_points < model.min_points:
            raise InvalidInputError(
                f"projector {projector!r} needs at least {model.min_points} points; preamble "
                f"{text!r} has n={view.n_points}",
                code="too_few_points",
            )
        if view.n_points > self.max_points:
            raise InvalidInputError(
                f"preamble {text!r} has n={view.n_points} points; this server projects at most "
                f"{self.max_points} per request (CLUSTVIZ_MAX_POINTS)",
                code="too_many_points",
            )
        used, notes = model.resolve(view.n_points)
        used_dict = used.model_dump(mode="json")
        key = projection_key(
            fingerprint=dataset.fingerprint,
            preamble=text,
            projector=projector,
            params_used=used_dict,
        )
        return ResolvedRequest(dataset, spec, view, used_dict, notes, used.random_state, key)

    async def project(self, request: ResolvedRequest, *, for_view: bool = True) -> Projection:
        """The stored result, computing it once if needed (concurrent twins wait for it).

        ``for_view=False`` (batch items) stores the layout alone: no quality scores, no cluster
        blobs. Most batch results are exported, never viewed, and the scores cost about as much
        as a small library fit. Any later call with ``for_view=True`` makes and stores them."""
        started = time.perf_counter()
        stored = await self.store.aget(request.key)
        cached = stored is not None
        if stored is None:
            stored, cached = await self._single_flight(
                request.key, lambda: self._compute(request, for_view=for_view)
            )
        if for_view and _view_pending(stored):
            stored, _ = await self._single_flight(
                "view:" + request.key, lambda: self._complete_view(request, stored)
            )
        return Projection(request, stored, cached, _ms(started))

    async def project_many(
        self, requests: list[ResolvedRequest], *, for_view: bool = False
    ) -> list[StoredProjection | BaseException]:
        """Many projections at once, in order: lane projectors' ones reach the device lane together
        and run as one batched fit. A failed item is returned as its exception."""

        async def one(request: ResolvedRequest) -> StoredProjection:
            return (await self.project(request, for_view=for_view)).stored

        return await asyncio.gather(*(one(r) for r in requests), return_exceptions=True)

    async def _single_flight(
        self, key: str, work: Callable[[], Awaitable[StoredProjection]]
    ) -> tuple[StoredProjection, bool]:
        """Run ``work`` once per key at a time; ``(result, True)`` for a twin that waited."""
        pending = self._inflight.get(key)
        if pending is not None:
            return await asyncio.shield(pending), True
        future: asyncio.Future[StoredProjection] = asyncio.get_running_loop().create_future()
        self._inflight[key] = future
        try:
            stored = await work()
            future.set_result(stored)
        except BaseException as exc:
            future.set_exception(exc)
            future.exception()  # mark retrieved: twins may not exist
            raise
        finally:
            self._inflight.pop(key, None)
        return stored, False

    async def _compute(self, request: ResolvedRequest, *, for_view: bool) -> StoredProjection:
        view = request.view
        if request.spec.runner == "lane" and self.lane is not None:
            future = self.lane.submit(
                request.spec.name, request.params_used, view.X, view.labels, hulls=for_view
            )
        else:
            future = self.pool.submit(
                "clustviz.tasks:project",
                request.spec.name,
                request.params_used,
                view.X,
                view.labels,
                for_view,
                timeout=self.timeout,
            )
        result = await asyncio.wrap_future(future)
        meta = {
            "params_used": result["params_used"],
            "notes": result["notes"],
            "seconds": result["seconds"],
            "metrics": _finite(result["metrics"]) if result["metrics"] is not None else None,
            "extras": result.get("extras"),
            "device": (result.get("extras") or {}).get("device", "cpu"),
        }
        return await self.store.aput(request.key, result["embedding"], meta)

    async def _complete_view(
        self, request: ResolvedRequest, stored: StoredProjection
    ) -> StoredProjection:
        """Compute the quality scores (and, for clusterplot, draw the cluster blobs) of a layout
        a batch stored without them; store them with it."""
        meta = dict(stored.meta)
        view = request.view
        if meta["extras"] is not None and meta["extras"].get("hulls") is None:
            polygons = await asyncio.wrap_future(
                self.pool.submit(
                    "clustviz.tasks:hulls",
                    request.params_used,
                    stored.embedding,
                    view.labels,
                    timeout=self.timeout,
                )
            )
            meta["extras"] = dict(meta["extras"]) | {"hulls": polygons}
        if meta.get("metrics") is None:  # numpy on 40 points: a thread, not a worker
            scores = await asyncio.to_thread(layout_metrics, view.X, stored.embedding, view.labels)
            meta["metrics"] = _finite(scores)
        return await self.store.aput(request.key, stored.embedding, meta)

    async def render(
        self,
        projection: Projection,
        fmt: str,
        *,
        width: float = 8.0,
        height: float = 6.0,
        dpi: int = 100,
        aligned: Aligned | None = None,
    ) -> tuple[str, bytes, str]:
        """``(media_type, body, image_key)``; rendered in a worker, stored next to the result.

        With ``aligned``, the plot of the layout aligned to a map (in the map's frame; no
        blobs: they were drawn for the layout before alignment), under the aligned key."""
        request = projection.request
        layout_key = request.key if aligned is None else aligned.key
        key = image_key(layout_key, fmt, width=width, height=height, dpi=dpi)
        hit = await self.store.aget_image(key)
        if hit is not None:
            return hit[0], hit[1], key
        view = request.view
        embedding = projection.stored.embedding if aligned is None else aligned.coords
        extras = (projection.stored.meta.get("extras") or {}) if aligned is None else {}
        hulls = [
            (int(view.clusters[hull["label"]]), hull["polygons"])
            for hull in extras.get("hulls") or []
        ]
        method = request.spec.title
        if aligned is not None:
            method += f", aligned to map {aligned.alignment.map_id}"
        title, caption = plot_title(view.preamble, method, request.dataset.name)
        body = await asyncio.wrap_future(
            self.pool.submit(
                "clustviz.tasks:render",
                fmt,
                embedding[:, 0],
                embedding[:, 1],
                view.guesses,
                view.cluster_ids,
                title,
                caption,
                hulls,
                width,
                height,
                dpi,
                timeout=self.timeout,
            )
        )
        media_type = MEDIA_TYPES[fmt]
        await self.store.aput_image(key, media_type, body)
        return media_type, body, key

    def ensure_capacity(self) -> None:
        """503 early when the heavy queue is full, rather than queueing without bound."""
        if self.pool.queued >= self.max_queue:
            raise UnavailableError("too many projections are queued; retry shortly", code="busy")


def _view_pending(stored: StoredProjection) -> bool:
    """A layout stored by a batch: its scores (and clusterplot's blobs) still to make."""
    extras = stored.meta.get("extras")
    blobs_pending = extras is not None and extras.get("hulls", []) is None
    return blobs_pending or stored.meta.get("metrics") is None


def _finite(metrics: dict[str, Any]) -> dict[str, float | None]:
    # JSON has no NaN: an undefined metric (e.g. silhouette of one cluster) becomes null.
    return {
        name: (float(value) if value is not None and np.isfinite(value) else None)
        for name, value in metrics.items()
    }


def _ms(started: float) -> float:
    return round((time.perf_counter() - started) * 1000, 3)
