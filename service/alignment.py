"""Layouts aligned to global maps, for ``POST /projections`` and ``POST /batches``.

Any projector's layout of a preamble is brought into the frame of a finished map of its dataset
(:func:`clustviz.alignment.align_layout`: clusters held near their places in the map, the
preamble's own neighbours kept; ClusterPlot by its own relaxation). Both routes check the map
the same way before any work (:meth:`Aligner.target`) and align through the same call, in a pool
worker.

An aligned layout is a function of the layout (its key), the map (its id names its content)
and the alignment's parameters: :meth:`Alignment.key`. A batch stores it under that key, next to
the layout's own, so an aligned and an unaligned batch share layouts and never results.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, cast

import numpy as np

from clustviz.alignment import AlignParams
from clustviz.errors import ClustvizError, InvalidInputError
from clustviz.keys import aligned_key
from service.engine import Projection, ResolvedRequest
from service.map_store import StoredMap
from service.maps import MapManager
from service.results import ResultStore, StoredProjection

__all__ = ["Aligned", "Aligner", "Alignment", "Layout"]

#: A batch item's layout as the jobs hand it over: stored, or why it failed.
Layout = StoredProjection | ClustvizError
#: Batch items aligned at once: a lane chunk's thousands of items wait their turn here, so the
#: inputs in flight stay bounded (and the pool's queue free for other work).
ALIGN_CONCURRENCY = 4


@dataclass(frozen=True, slots=True)
class Alignment:
    """What a request asks to be aligned to: a map's id and the alignment's parameters."""

    map_id: str
    params: AlignParams

    @classmethod
    def of(cls, fields: dict[str, Any]) -> Alignment:
        """From a request's ``align`` object, ``{"map": id, **AlignParams}``."""
        params = {name: value for name, value in fields.items() if name != "map"}
        return cls(str(fields["map"]), AlignParams(**params))

    def describe(self) -> dict[str, Any]:
        """``{"map": id, "params": {...}}``: what an aligned answer's ``aligned_to`` says."""
        return {"map": self.map_id, "params": self.params.model_dump(mode="json")}

    def key(self, layout_key: str) -> str:
        """The result key of the layout ``layout_key`` aligned this way."""
        return aligned_key(layout_key, self.map_id, self.params.model_dump(mode="json"))


@dataclass(frozen=True, slots=True)
class Aligned:
    """A layout aligned to a map: how, its key, its coordinates, its scores."""

    alignment: Alignment
    key: str
    coords: np.ndarray  # (n, 2) float32, the preamble's rows in order
    metrics: dict[str, Any]


class Aligner:
    """Checks the maps asked for, aligns layouts to them, stores batch items' aligned layouts."""

    def __init__(self, maps: MapManager, store: ResultStore) -> None:
        self.maps = maps
        self.store = store  # batch items' aligned layouts
        self._slots = asyncio.Semaphore(ALIGN_CONCURRENCY)

    async def target(self, map_id: str, dataset_id: str) -> StoredMap:
        """A finished, current map of ``dataset_id`` to align layouts to: ``map_not_found``
        (404), ``map_not_ready`` / ``map_stale`` (409), another dataset's map (422). Both
        ``POST /projections`` and ``POST /batches`` check ``align.map`` here before any work."""
        stored = (await self.maps.points(map_id, None, None)).stored
        if stored.spec["dataset"] != dataset_id:
            raise InvalidInputError(
                f"align.map={map_id!r} is a map of dataset {stored.spec['dataset']!r}, not of "
                f"{dataset_id!r}",
                code="invalid_request",
            )
        return stored

    async def aligned_coords(
        self,
        request: ResolvedRequest,
        layout: np.ndarray,
        stored: StoredMap,
        params: AlignParams,
    ) -> np.ndarray:
        """``layout`` of the request's preamble aligned to its rows of the map (``(n, 2)``
        float32, map coordinates): a batch item's alignment."""
        return (await self._aligned(request, layout, stored, params, scores=False))["coords"]

    async def align(
        self, projection: Projection, stored: StoredMap, alignment: Alignment
    ) -> Aligned:
        """A projection's layout aligned to a map (from :meth:`target`), with the aligned
        layout's scores."""
        request = projection.request
        layout = projection.stored.embedding
        done = await self._aligned(request, layout, stored, alignment.params, scores=True)
        return Aligned(alignment, alignment.key(request.key), done["coords"], done["metrics"])

    async def _aligned(
        self,
        request: ResolvedRequest,
        layout: np.ndarray,
        stored: StoredMap,
        params: AlignParams,
        *,
        scores: bool,
    ) -> dict[str, Any]:
        """The one alignment call of the service, for both routes: the projector's aligner
        (:func:`clustviz.alignment.align_layout`) in a pool worker, since ClusterPlot's is its
        own torch relaxation, which the server process never imports."""
        view = request.view
        rows = stored.coords[request.dataset.row_indices(view.preamble)]
        future = self.maps.pool.submit(
            "clustviz.tasks:align",
            request.spec.name,
            request.params_used,
            view.X,
            view.labels,
            layout,
            rows,
            params.model_dump(mode="json"),
            scores,
            timeout=self.maps.timeout,
        )
        return cast(dict[str, Any], await asyncio.wrap_future(future))

    async def align_layouts(
        self,
        alignment: Alignment,
        requests: Sequence[ResolvedRequest],
        layouts: Sequence[Layout],
    ) -> list[ClustvizError | None]:
        """Batch items' layouts aligned to the map and stored under :meth:`Alignment.key`:
        each item's error (its layout's, or the alignment's), ``None`` where it is stored.

        The map is checked again first: one deleted (or made stale) since the batch was
        accepted fails the items with its reason (``map_not_found``, ...). An aligned layout
        already stored is not aligned again."""
        errors = [layout if isinstance(layout, ClustvizError) else None for layout in layouts]
        if all(errors):
            return errors
        try:  # a batch's items are of one dataset
            stored = await self.target(alignment.map_id, requests[0].dataset.id)
        except ClustvizError as exc:
            gone = type(exc)(
                f"align.map={alignment.map_id!r} can no longer be aligned to: {exc.message}",
                code=exc.code,
            )
            return [error or gone for error in errors]

        async def align_one(request: ResolvedRequest, layout: Layout) -> ClustvizError | None:
            if isinstance(layout, ClustvizError):
                return layout
            key = alignment.key(request.key)
            if await self.store.aget(key) is not None:  # aligned by an earlier batch
                return None
            async with self._slots:
                started = time.perf_counter()
                try:
                    coords = await self.aligned_coords(
                        request, layout.embedding, stored, alignment.params
                    )
                except ClustvizError as exc:
                    return exc
                seconds = time.perf_counter() - started
            meta = {
                **layout.meta,
                "seconds": seconds,
                "metrics": None,
                "extras": None,
                "layout": request.key,
                "aligned_to": alignment.describe(),
            }
            await self.store.aput(key, coords, meta)
            return None

        pairs = zip(requests, layouts, strict=True)
        return list(await asyncio.gather(*(align_one(r, layout) for r, layout in pairs)))
