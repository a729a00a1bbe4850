"""ClusterPlot done right: a cluster-aware 2-D layout in PyTorch, batched over preambles.

>>> from clustviz.clusterplot import ClusterPlot
>>> Y = ClusterPlot().fit_transform(X, labels)          # (n, 2) float32, input order
>>> results = ClusterPlot().fit_transform_many([(X1, l1), (X2, l2)], compute_hulls=False)

Stages, one module each: ``anchors`` (sub-clusters), ``overlap`` (R_H, R_L, discrepancy),
``init`` (torch or UMAP), ``optimize`` (gradient or greedy), ``hulls`` (cluster polygons).
Small preambles run batched with dense ``(B, N, N)`` tensors in cache-sized chunks, gradients
written out by hand (``optimize``); a preamble of more than ``large.DENSE_MAX_ROWS`` rows of
``[X; anchors]`` runs alone on neighbour lists (``large``), its pair terms in the fit's
backend (``backends``: plain torch on any device, or numba loops on the CPU).
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
