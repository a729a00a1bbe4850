"""The JSON body of a projection answer, written directly, with its points memoised.

The cached path skips model validation and re-serialisation: the points (and cluster blobs) of
a projection never change for its key, and serialising 40 points is most of what a cached
answer costs the app. This module owns both the body's shape (that of
:class:`service.schemas.ProjectionResponse`) and that memo.
"""

from __future__ import annotations

import json
from typing import Any

from cachetools import LRUCache
from fastapi import Response

from clustviz.data import preamble_id
from service.alignment import Aligned
from service.engine import Projection

__all__ = ["ProjectionBodies"]

MEMO_ENTRIES = 4096


class ProjectionBodies:
    """Writes projection answers; keeps the serialised points of the ``max_entries`` most
    recently answered keys."""

    def __init__(self, max_entries: int = MEMO_ENTRIES) -> None:
        self._points: LRUCache[str, str] = LRUCache(maxsize=max(1, max_entries))

    def __contains__(self, key: object) -> bool:
        """Whether the points of projection ``key`` are memoised."""
        return key in self._points

    def response(self, projection: Projection, aligned: Aligned | None = None) -> Response:
        """The answer to a projection request, as ``application/json``; with ``aligned``, the
        points are the aligned layout's (in the map's frame, no hulls), never memoised."""
        request = projection.request
        meta = projection.stored.meta
        memo = None if aligned is not None else self._points.get(request.key)  # a hit: recent
        points = memo or _serialised_points(projection, aligned)
        if aligned is None and memo is None:
            self._points[request.key] = points
        view = request.view
        head = {
            "dataset": request.dataset.id,
            "preamble": view.preamble,
            "preamble_id": preamble_id(view.preamble),
            "projector": request.spec.name,
            "seed": request.seed,
            "params": meta["params_used"],
            "notes": request.notes,
            "device": meta.get("device", "cpu"),
            "cached": projection.cached,
            "key": request.key,
            "n_points": view.n_points,
            "n_clusters": view.n_clusters,
            "timings": {
                "compute_ms": round(meta["seconds"] * 1000, 3),
                "total_ms": projection.total_ms,
            },
            "metrics": meta.get("metrics", {}) if aligned is None else aligned.metrics,
            "aligned_to": None if aligned is None else aligned.alignment.describe(),
        }
        body = json.dumps(head, separators=(",", ":"))[:-1] + "," + points + "}"
        return Response(body, media_type="application/json")


def _serialised_points(projection: Projection, aligned: Aligned | None) -> str:
    """``"points": [...], "hulls": ..., "overlap": ...`` (the body's tail, without braces)."""
    return json.dumps(_points_and_hulls(projection, aligned), separators=(",", ":"))[1:-1]


def _points_and_hulls(projection: Projection, aligned: Aligned | None) -> dict[str, Any]:
    view = projection.request.view
    # hulls were drawn for the layout before alignment: an aligned answer has none
    extras = (projection.stored.meta.get("extras") or {}) if aligned is None else {}
    coords = projection.stored.embedding if aligned is None else aligned.coords
    points = [
        {
            "guess": guess,
            "token_id": int(token_id),
            "logit": float(logit),
            "cluster_id": int(cluster_id),
            "label": int(label),
            "x": float(x),
            "y": float(y),
        }
        for guess, token_id, logit, cluster_id, label, (x, y) in zip(
            view.guesses,
            view.token_ids,
            view.logits,
            view.cluster_ids,
            view.labels,
            coords.tolist(),
            strict=True,
        )
    ]
    hulls = None
    overlap = None
    if "hulls" in extras:
        hulls = [
            {"cluster_id": int(view.clusters[hull["label"]]), "polygons": hull["polygons"]}
            for hull in extras["hulls"]
        ]
        overlap = {"before": extras["discrepancy_before"], "after": extras["discrepancy_after"]}
    return {"points": points, "hulls": hulls, "overlap": overlap}
