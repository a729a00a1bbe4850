"""ClusterPlot's layout aligned to a global map with its own loss (issue: global maps).

:mod:`clustviz.alignment` aligns any projector's layout by Procrustes and then a relaxation of a
plain kNN KL plus a centroid term. ClusterPlot's objective is not that KL (its overlap terms
match cluster-level neighbourhoods), so that relaxation undoes part of what it optimised. Here
the centroid term is one more term of ClusterPlot's own gradient relaxation
(:class:`~.losses.CentroidPull`, on every path: dense torch, dense numba, sparse):

1. the best similarity transform of the layout onto the map's rows (:class:`Similarity`);
2. each cluster's centroid among the map's rows, taken back into the layout's own frame by the
   inverse transform: the targets (so the relaxation runs in the units ClusterPlot's terms
   were tuned in);
3. :meth:`~.projector.ClusterPlot.relax_many` from the layout: ``AlignParams.steps`` Adam steps
   of ``AlignParams.learning_rate`` on ClusterPlot's loss ``+ weight · mean_c |z̄_c - t_c| / r``
   (``r``: the layout's RMS radius; ``weight``: :data:`DEFAULT_WEIGHT` unless given), with the
   parameters the layout was made with;
4. the result moved into the map's frame by the same transform.

``AlignParams.scale`` and ``n_neighbors`` belong to the generic relaxation; ClusterPlot's kNN
term has its own ``knn_k``. The relaxation runs on the CPU (40 points: dispatch, not arithmetic),
on the backend the parameters name.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from clustviz.alignment import AlignParams, Similarity, cluster_centroids
from clustviz.clusterplot.params import ClusterPlotParams
from clustviz.clusterplot.projector import ClusterPlot, Pull

__all__ = ["DEFAULT_WEIGHT", "align_clusterplot", "align_clusterplot_many"]

#: The centroid term's weight when none is given: on the demo set, clusters ≥ 30 % nearer
#: their map places with 10-NN preservation ≥ 0.95 × the independent layout's
#: (``scripts/bench_alignment.py``).
DEFAULT_WEIGHT = 0.1


def align_clusterplot(
    X: np.ndarray,
    labels: np.ndarray,
    layout: np.ndarray,
    map_rows: np.ndarray,
    params: AlignParams,
    projector_params: ClusterPlotParams,
) -> np.ndarray:
    """One preamble's ClusterPlot ``layout (n, 2)`` aligned to ``map_rows (n, 2)``; ``(n, 2)``
    float32 in the map's coordinates (the aligner of ClusterPlot's registry entry)."""
    (aligned,) = align_clusterplot_many([(X, labels, layout, map_rows)], params, projector_params)
    return aligned


def align_clusterplot_many(
    items: Sequence[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]],
    params: AlignParams,
    projector_params: ClusterPlotParams,
) -> list[np.ndarray]:
    """:func:`align_clusterplot` of many preambles ``(X, labels, layout, map_rows)``, batched
    where that cannot change an answer (:meth:`~.projector.ClusterPlot.relax_many`)."""
    frames = [Similarity.fit(layout, rows) for _, _, layout, rows in items]
    answers = [frame.apply(layout) for frame, (_, _, layout, _) in zip(frames, items, strict=True)]
    relaxed = [
        i
        for i, (frame, (X, _, _, _)) in enumerate(zip(frames, items, strict=True))
        if params.steps > 0 and frame.scale > 0 and len(X) >= ClusterPlotParams.min_points
    ]
    if relaxed:
        model = ClusterPlot(
            projector_params.model_copy(
                update={
                    "mode": "gradient",
                    "n_steps": params.steps,
                    "step_size": params.learning_rate,
                    "device": "cpu",
                }
            )
        )
        pulls = [
            Pull(
                start=np.asarray(items[i][2], np.float64),
                targets=frames[i].invert(cluster_centroids(items[i][3], items[i][1])),
            )
            for i in relaxed
        ]
        results = model.relax_many(
            [(items[i][0], items[i][1]) for i in relaxed],
            pulls,
            weight=params.weight_or(DEFAULT_WEIGHT),
        )
        for i, result in zip(relaxed, results, strict=True):
            answers[i] = frames[i].apply(result.embedding)
    return [answer.astype(np.float32) for answer in answers]
