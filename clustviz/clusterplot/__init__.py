"""ClusterPlot done right: a cluster-aware 2-D layout in PyTorch, batched over preambles.

>>> from clustviz.clusterplot import ClusterPlot
>>> Y = ClusterPlot().fit_transform(X, labels)          # (n, 2) float32, input order
>>> results = ClusterPlot().fit_transform_many([(X1, l1), (X2, l2)], compute_hulls=False)

A fit: anchors (sub-clusters) → targets (high-D kNN graphs, R_H) → init → relaxation (gradient
or greedy) → hulls. Small preambles run batched with dense ``(B, N, N)`` tensors, a preamble of
more than ``dense_max_rows`` rows of ``[X; anchors]`` alone on neighbour lists (two strategies,
the same stages and losses), on the fit's backend (plain torch on any device, or numba loops on
the CPU), chosen once per fit.

Modules, by concept:

* ``projector`` — :class:`ClusterPlot`: checks, parameters, scheduling, results.
* ``params`` — :class:`ClusterPlotParams`, every knob that changes a layout (no torch).
* ``shapes`` — which preambles may share a fit: only those of one shape (no padding).
* ``pipeline`` — one fit, stage after stage, dense-batched or sparse (one large preamble).
* ``batch`` — padded batches; pairwise distances, the pair gradient, Adam.
* ``gram`` — the Gram matrix ``X Xᵀ`` every high-D stage reads.
* ``anchors`` — sub-clusters per cluster: the leader pass (BIRCH), k-means, points.
* ``overlap`` — overlap matrices R from kNN edges (hard or soft), radii, discrepancy.
* ``folding`` — one-member anchors folded into their member (graphs on ``n + A2`` rows).
* ``targets`` — what a fit matches: high-D kNN graphs, R_H, M_H, P (dense and sparse).
* ``init`` — initial layouts: PCA + neighbour embedding (exact or sampled), UMAP.
* ``losses`` — the loss terms over all pairs (and the centroid pull of a map alignment),
  gradients by hand, and their autograd oracle.
* ``pair_losses`` — the same terms over candidate pair lists (torch).
* ``candidates`` — 2-D candidate lists of the sparse relaxation (k-d tree or blocks).
* ``relaxation`` — the gradient relaxation: settings, the dense and the sparse loop.
* ``greedy`` — the original's greedy relaxation rule.
* ``discrepancy`` — hard 2-D discrepancies of a layout, before and after (dense, sparse).
* ``backends`` — the backend of a fit: its choice, and the torch backend.
* ``numba_backend`` — the numba backend (CPU): the same terms as compiled loops.
* ``layout_loops`` — numba loops fitting one preamble over all its pairs (init, relaxation).
* ``pair_loops`` — numba loops of the pair terms over candidate lists.
* ``planar`` — planar ``(2, N)`` coordinates and pair gradients of the sparse loops.
* ``threads`` — CPU threads: one thread per fit, two lanes of a sparse step.
* ``hulls`` — cluster polygons of a finished layout (alpha shapes, smoothing).
* ``map_alignment`` — a layout aligned to a global map by its own relaxation plus the centroid
  pull (the aligner :func:`clustviz.alignment.align_layout` dispatches to).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from clustviz.clusterplot.params import ClusterPlotParams

if TYPE_CHECKING:
    from clustviz.clusterplot.hulls import ClusterHull
    from clustviz.clusterplot.projector import ClusterPlot, ClusterPlotResult, layout_hulls

# Imported on first use: the service validates ClusterPlotParams in a process that must never
# import torch (hundreds of MB of resident memory for nothing: the fits run in the device
# lane).
_LAZY = {
    "ClusterHull": "clustviz.clusterplot.hulls",
    "ClusterPlot": "clustviz.clusterplot.projector",
    "ClusterPlotResult": "clustviz.clusterplot.projector",
    "layout_hulls": "clustviz.clusterplot.projector",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)


__all__ = ["ClusterHull", "ClusterPlot", "ClusterPlotParams", "ClusterPlotResult", "layout_hulls"]
