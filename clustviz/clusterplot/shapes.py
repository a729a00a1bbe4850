"""Batching without changing an answer: preambles are fitted together only when their fit has
one shape, so no tensor of a fit is padded (:func:`shape_keys`).

A padded reduction sums in another order, and the optimisation amplifies that round-off (it
was up to 31 % of a layout's extent): a preamble's shape (points, anchor slots, slots of the
anchors of several members, cluster slots) is a function of the preamble alone, so its fit has
the same tensors alone or batched.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from clustviz.clusterplot.anchors import Anchors
from clustviz.clusterplot.batch import PaddedBatch

__all__ = ["ShapeBatch", "select", "shape_keys", "slots"]


@dataclass(slots=True)
class ShapeBatch:
    """Preambles of one shape, ready to fit."""

    batch: PaddedBatch
    anchors: Anchors
    gram: torch.Tensor  # (B, n, n): X Xᵀ
    anchor_row_slots: int  # A2: width of the folded anchor rows (folding.FoldedRows)


def slots(size: int, exact_below: int = 16) -> int:
    """The padded width of a preamble's per-anchor or per-cluster tensors: the next multiple
    of 8, or its own size up to ``exact_below``. A function of the preamble alone, so its fit
    has the same shape alone or batched."""
    return size if size <= exact_below else -(-size // 8) * 8


def shape_keys(batch: PaddedBatch, anchors: Anchors) -> list[tuple[int, int, int, int]]:
    """Per preamble, the shape of its fit's tensors: points, anchor slots, slots of the
    anchors of several members (the folded rows, :class:`~.folding.FoldedRows`) and cluster
    slots (:func:`slots`)."""
    members = torch.zeros_like(anchors.mask, dtype=torch.long).scatter_add_(
        1, anchors.point_anchor, batch.mask.long()
    )
    several = ((members > 1) & anchors.mask).sum(1)
    sizes = torch.stack([batch.n_points, anchors.count, several, batch.n_clusters], 1)
    # anchors and the folded rows set the sub-cluster graph's neighbour count while they are
    # few (it is min(k, rows - 1)): exact there; no count depends on the clusters
    return [
        (n, slots(A), slots(A2), slots(C, exact_below=0)) for n, A, A2, C in sizes.cpu().tolist()
    ]


def select(
    batch: PaddedBatch,
    anchors: Anchors,
    gram: torch.Tensor,
    index: torch.Tensor,
    key: tuple[int, int, int, int],
) -> ShapeBatch:
    """The preambles ``index`` of a batch, with their anchors and Gram matrices, all of one
    shape ``key`` (:func:`shape_keys`)."""
    _, A, A2, C = key
    part = PaddedBatch(
        X=batch.X[index],
        labels=batch.labels[index],
        mask=batch.mask[index],
        n_points=batch.n_points[index],
        n_clusters=batch.n_clusters[index],
        max_clusters=C,
    )
    width = anchors.size

    def fit(t: torch.Tensor, fill: float | bool = 0) -> torch.Tensor:
        t = t[index, :A]
        if width >= A:
            return t
        pad = t.new_full((len(index), A - width, *t.shape[2:]), fill)
        return torch.cat([t, pad], 1)

    return ShapeBatch(
        batch=part,
        anchors=Anchors(
            centroids=fit(anchors.centroids),
            mask=fit(anchors.mask, False),
            cluster=fit(anchors.cluster),
            point_anchor=anchors.point_anchor[index],
            count=anchors.count[index],
        ),
        gram=gram[index],
        anchor_row_slots=A2,
    )
