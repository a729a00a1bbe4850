"""Functions that worker processes run (``"clustviz.tasks:project"`` etc.).

Arguments and results are plain picklable values (numpy arrays, dicts, bytes), so the same
functions serve the local worker pool and remote executors alike.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import numpy as np

from clustviz.projectors import get_projector, get_spec

__all__ = [
    "align",
    "device_name",
    "hulls",
    "project",
    "project_many",
    "render",
    "render_map",
    "warm_up",
]


def device_name(name: str) -> str:
    """The torch device ``name`` resolves to in this (worker) process."""
    from clustviz.device import resolve_device

    return str(resolve_device(name))


def warm_up(names: Sequence[str], *, render_plot: bool = True) -> dict[str, Any]:
    """Import each projector's library and run its small warm-up fits (``warm_sizes`` of its
    spec), so numba compiles now, not later;
    with ``render_plot``, also draw one plot (plotnine's first figure costs about a second).

    Returns ``{"warm": {name: seconds}, "warm_errors": {name: message}}``.
    """
    rng = np.random.default_rng(0)
    seconds: dict[str, float] = {}
    failures: dict[str, str] = {}
    for name in names:
        started = time.perf_counter()
        try:
            spec = get_spec(name)
            for size in spec.warm_sizes:
                X = rng.normal(size=(size, 16)).astype(np.float32)
                labels = rng.integers(0, 4, size=size)
                get_projector(name).fit_transform(X, labels if spec.uses_labels else None)
        except Exception as exc:  # reported by /health; the worker serves the others
            failures[name] = f"{type(exc).__name__}: {exc}"
        seconds[name] = round(time.perf_counter() - started, 2)
    if render_plot:
        started = time.perf_counter()
        n = 40
        xy = rng.normal(size=(n, 2))
        labels = rng.integers(0, 4, size=n)
        try:
            render(
                "png", xy[:, 0], xy[:, 1], [f"w{i}" for i in range(n)], labels, "warm-up", "", []
            )
        except Exception as exc:
            failures["render"] = f"{type(exc).__name__}: {exc}"
        seconds["render"] = round(time.perf_counter() - started, 2)
    return {"warm": seconds, "warm_errors": failures}


def project(
    name: str,
    params: dict[str, Any],
    X: np.ndarray,
    labels: np.ndarray | None,
    with_metrics: bool = True,
) -> dict[str, Any]:
    """Run one projection; the embedding, the parameters actually used, notes, timing and, with
    ``with_metrics``, the quality scores (``metrics`` is None without: a batch item's scores
    are made when it is first viewed).

    A ``lane`` projector's item (one sent to the CPU pool when the service runs without a device
    lane) takes :func:`project_many`'s path, as one item: one producer of its extras."""
    from clustviz.metrics import layout_metrics

    if get_spec(name).runner == "lane":
        if labels is None:
            raise ValueError(f"projector {name!r} needs labels")
        (one,) = project_many(name, params, [(X, labels)], [with_metrics])
        return one
    projector = get_projector(name, **params)
    started = time.perf_counter()
    Y = projector.fit_transform(X, labels if get_spec(name).uses_labels else None)
    seconds = time.perf_counter() - started
    return {
        "embedding": Y,
        "params_used": projector.params_used_.model_dump(mode="json"),
        "notes": list(projector.notes_),
        "seconds": seconds,
        "metrics": (layout_metrics(X, Y, labels) if labels is not None else {})
        if with_metrics
        else None,
        "extras": None,
    }


def align(
    name: str,
    params: dict[str, Any],
    X: np.ndarray,
    labels: np.ndarray,
    layout: np.ndarray,
    map_rows: np.ndarray,
    align_params: dict[str, Any],
    scores: bool = True,
) -> dict[str, Any]:
    """Projector ``name``'s ``layout`` (made with ``params``) aligned to a map's rows
    (:func:`clustviz.alignment.align_layout`), and the aligned layout's scores (``None`` unless
    ``scores``: a batch stores layouts, not scores). In a worker: ClusterPlot's alignment is its
    torch relaxation, which the server process never imports."""
    from clustviz.alignment import AlignParams, align_layout
    from clustviz.metrics import layout_metrics

    coords = align_layout(name, X, labels, layout, map_rows, AlignParams(**align_params), params)
    return {"coords": coords, "metrics": layout_metrics(X, coords, labels) if scores else None}


def project_many(
    name: str,
    params: dict[str, Any],
    items: Sequence[tuple[np.ndarray, np.ndarray]],
    hulls: Sequence[bool] | None = None,
) -> list[dict[str, Any]]:
    """Many preambles through one batched fit (``fit_transform_many``), one result dict each.

    ``hulls[i]`` False leaves item i's cluster blobs and quality scores for later
    (``extras["hulls"]`` and ``metrics`` are None; see :func:`hulls`): a batch stores layouts,
    and blobs and scores are made only for the ones viewed.
    """
    from clustviz.metrics import layout_metrics

    projector = get_projector(name, **params)
    started = time.perf_counter()
    results = projector.fit_transform_many(items, compute_hulls=False)  # type: ignore[attr-defined]
    seconds = (time.perf_counter() - started) / max(1, len(items))
    wanted = [True] * len(items) if hulls is None else list(hulls)
    return [
        {
            "embedding": result.embedding,
            "params_used": _as_dict(result.params_used),
            "notes": list(result.notes),
            "seconds": seconds,
            "metrics": layout_metrics(X, result.embedding, labels) if want else None,
            "extras": _clusterplot_extras(
                result, _blobs(result.embedding, labels, result.params_used) if want else None
            ),
        }
        for (X, labels), result, want in zip(items, results, wanted, strict=True)
    ]


def hulls(params: dict[str, Any], embedding: np.ndarray, labels: np.ndarray) -> list[dict]:
    """The cluster blobs of a stored clusterplot layout (as ``extras["hulls"]``)."""
    from clustviz.clusterplot import ClusterPlotParams

    return _blobs(embedding, labels, ClusterPlotParams(**params))


def _blobs(embedding: np.ndarray, labels: np.ndarray, params: Any) -> list[dict[str, Any]]:
    """The one producer of a layout's cluster blobs in the service (fits are run without them:
    ``compute_hulls=False``), as JSON-ready dicts with the point labels they outline."""
    from clustviz.clusterplot import layout_hulls

    return [
        {"label": int(hull.label), "polygons": [np.asarray(p).tolist() for p in hull.polygons]}
        for hull in layout_hulls(embedding, labels, params)
    ]


def _as_dict(params: Any) -> dict[str, Any]:
    return params.model_dump(mode="json") if hasattr(params, "model_dump") else dict(params)


def _clusterplot_extras(result: Any, hulls: list[dict[str, Any]] | None) -> dict[str, Any]:
    return {
        "hulls": hulls,  # None: not drawn yet
        "discrepancy_before": dict(result.discrepancy_before),
        "discrepancy_after": dict(result.discrepancy_after),
        "n_anchors": len(result.anchors),
        "device": str(result.device),
    }


def render(
    fmt: str,
    x: np.ndarray,
    y: np.ndarray,
    guesses: Sequence[str],
    cluster_ids: np.ndarray,
    title: str,
    caption: str,
    hulls: Sequence[tuple[int, Sequence[Any]]],
    width: float = 8.0,
    height: float = 6.0,
    dpi: int = 100,
) -> bytes:
    """PNG or SVG bytes of one projection (see :mod:`clustviz.render`)."""
    from clustviz.render import make_plot, render_plot

    polygons = [(cid, [np.asarray(p, dtype=float) for p in polys]) for cid, polys in hulls]
    plot = make_plot(x, y, guesses, cluster_ids, title=title, caption=caption, hulls=polygons)
    return render_plot(plot, fmt, width=width, height=height, dpi=dpi)  # type: ignore[arg-type]


def render_map(
    fmt: str,
    coords: np.ndarray,
    rows: np.ndarray,
    guesses: Sequence[str],
    cluster_ids: np.ndarray,
    title: str,
    caption: str,
    width: float = 8.0,
    height: float = 6.0,
    dpi: int = 100,
) -> bytes:
    """PNG or SVG bytes of one preamble (``rows``) on a global map (``coords``, (n, 2))."""
    from clustviz.render import make_map_plot, render_plot

    plot = make_map_plot(
        coords[:, 0], coords[:, 1], rows, guesses, cluster_ids, title=title, caption=caption
    )
    return render_plot(plot, fmt, width=width, height=height, dpi=dpi)  # type: ignore[arg-type]
