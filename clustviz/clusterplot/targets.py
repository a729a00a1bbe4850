"""What a fit matches, fixed before the layout moves: the high-D kNN graphs and R_H.

``R_H[a, b]``: the share of sub-cluster ``a``'s kNN edges (graph of ``Z = [X; anchors]``, or of
X) that land in sub-cluster ``b`` (:mod:`.overlap`); ``M_H``: the same shares between clusters
on the kNN graph of X (``knn_k``); ``P``: that graph's affinities, for the local-structure term.
Every distance comes from the Gram matrix ``X Xᵀ`` (:mod:`.gram`): an anchor is the mean of its
members, so ``Z Zᵀ`` needs no further d-dimensional product.

Two forms, one per relaxation strategy (:mod:`.relaxation`):

* :class:`OverlapTarget` (:func:`overlap_target`): dense ``(B, A, A)`` matrices for a batch of
  preambles of one shape;
* :class:`SparseTarget` (:func:`sparse_target`): one large preamble, R_H as sorted keys and
  values, the kNN searches by row blocks on folded rows (:mod:`.folding`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch

from clustviz.clusterplot.batch import PaddedBatch
from clustviz.clusterplot.folding import fold_anchor_rows, folded_knn_weights
from clustviz.clusterplot.init import affinities_from_knn
from clustviz.clusterplot.overlap import (
    BLOCK,
    hard_edges,
    knn_from_dists,
    normalise_overlap,
    smallest_others,
    sq_dists_from_dots,
    sq_dists_from_gram,
)
from clustviz.clusterplot.planar import flat_columns

if TYPE_CHECKING:
    from clustviz.clusterplot.anchors import Anchors
    from clustviz.clusterplot.backends import TorchBackend
    from clustviz.clusterplot.params import ClusterPlotParams

__all__ = [
    "KnnEdges",
    "OverlapTarget",
    "PointGraph",
    "SparseTarget",
    "cross_pairs",
    "lookup",
    "overlap_target",
    "point_graph",
    "sparse_overlap_matrix",
    "sparse_target",
]

_EPS = 1e-12


@dataclass(slots=True)
class OverlapTarget:
    """What the dense relaxation matches, for a batch of preambles of one shape."""

    R_H: torch.Tensor  # (B, A, A) sub-cluster overlap in high-D
    M_H: torch.Tensor  # (B, C, C) cluster-level edge shares of the kNN graph of X (knn_k)
    P: torch.Tensor  # (B, n, n) kNN affinities of X (for the local-structure term)
    point_anchor: torch.Tensor  # (B, n) long
    anchor_cluster: torch.Tensor  # (B, A) long
    anchor_mask: torch.Tensor  # (B, A) bool
    cluster_mask: torch.Tensor  # (B, C) bool: clusters present
    mask: torch.Tensor  # (B, n) bool
    labels: torch.Tensor  # (B, n) long
    k: torch.Tensor  # (B,) long: kNN size of the sub-cluster graphs
    knn_k: torch.Tensor  # (B,) long: kNN size of the point graphs (label level, local term)
    anchors_in_graph: bool  # the 2-D graph mirrors the high-D one: [Y; anchors] or Y
    anchor_row_slots: int | None = None  # A2 of the folded rows (FoldedRows); None: the most

    @property
    def n_anchors(self) -> int:
        return int(self.R_H.shape[1])

    @property
    def n_clusters(self) -> int:
        return int(self.M_H.shape[1])


def overlap_target(
    batch: PaddedBatch,
    anchors: Anchors,
    p: ClusterPlotParams,
    gram: torch.Tensor | None = None,
    anchor_row_slots: int | None = None,
) -> OverlapTarget:
    """R_H from the kNN graph of ``Z = [X; anchors]`` (or X), plus the kNN affinities of X.

    Distances come from ``gram = X Xᵀ`` (made here if not given): an anchor is the mean of its
    members, so ``Z Zᵀ`` follows from it with ``n × n × A`` products, none d-dimensional."""
    B, A = anchors.mask.shape
    n = batch.X.shape[1]
    gram = batch.X @ batch.X.transpose(1, 2) if gram is None else gram
    arange_a = torch.arange(A, device=batch.X.device).expand(B, A)
    if p.anchors_in_graph:
        means = torch.zeros(B, A, n, dtype=gram.dtype, device=gram.device)  # (anchor, point)
        means.scatter_(1, anchors.point_anchor.unsqueeze(1), batch.mask.unsqueeze(1).to(gram.dtype))
        means = means / means.sum(2, keepdim=True).clamp_min(1.0)
        cross = gram @ means.transpose(1, 2)  # (B, n, A): x_i · anchor_a
        gram_z = torch.cat(
            [torch.cat([gram, cross], 2), torch.cat([cross.transpose(1, 2), means @ cross], 2)], 1
        )
        dist_z = sq_dists_from_gram(gram_z)  # (B, n + A, n + A)
        Z_mask = torch.cat([batch.mask, anchors.mask], 1)
        group = torch.cat([anchors.point_anchor, arange_a], 1)
    else:
        dist_z, Z_mask, group = sq_dists_from_gram(gram), batch.mask, anchors.point_anchor
    dist_x = dist_z[:, :n, :n]  # the points come first
    k = torch.full((B,), p.k, device=batch.X.device)
    idx, edge_mask = knn_from_dists(dist_z, Z_mask, k)
    edges = hard_edges(idx, edge_mask, group, A)
    C = batch.max_clusters
    knn_k = torch.full((B,), p.knn_k, device=batch.X.device)
    idx, edge_mask = knn_from_dists(dist_x, batch.mask, knn_k)
    label_edges = hard_edges(idx, edge_mask, batch.labels, C)
    return OverlapTarget(
        R_H=normalise_overlap(edges, anchors.cluster, anchors.mask),
        M_H=label_edges / label_edges.sum(2, keepdim=True).clamp_min(1e-12),
        P=affinities_from_knn(idx, edge_mask),
        point_anchor=anchors.point_anchor,
        anchor_cluster=anchors.cluster,
        anchor_mask=anchors.mask,
        cluster_mask=torch.arange(C, device=batch.X.device).expand(B, C)
        < batch.n_clusters.unsqueeze(1),
        mask=batch.mask,
        labels=batch.labels,
        k=k,
        knn_k=knn_k,
        anchors_in_graph=p.anchors_in_graph,
        anchor_row_slots=anchor_row_slots,
    )


@dataclass(slots=True)
class KnnEdges:
    """The kNN edges of X for the sampled ``KL(P || Q)``: P puts ``1 / (2E)`` on both
    directions of the E edges ``neighbours (n, knn_k)``."""

    neighbours: torch.Tensor  # (n, knn_k) long
    flat: torch.Tensor  # neighbours through flat_columns (width n)
    neighbours32: torch.Tensor  # int32, for the numba loops

    @classmethod
    def of(cls, neighbours: torch.Tensor) -> KnnEdges:
        """The edges of ``neighbours (n, knn_k)`` in every form a backend reads."""
        n = neighbours.shape[0]
        return cls(neighbours, flat_columns(neighbours, n), neighbours.int())


@dataclass(slots=True)
class PointGraph:
    """The kNN graph of X alone (one preamble): what the init needs, and M_H."""

    edges: KnnEdges  # kNN of X (knn_k per point); P = 1/(2E) on each direction
    M_H: torch.Tensor  # (C, C)
    knn_k: int  # kNN size (clamped)

    @property
    def neighbours(self) -> torch.Tensor:
        """``(n, knn_k)`` long: each point's kNN in X, nearest first."""
        return self.edges.neighbours


@dataclass(slots=True)
class SparseTarget:
    """What the sparse relaxation matches (one large preamble)."""

    R_H_keys: torch.Tensor  # (P,) sorted keys a · A + b of R_H's non-zero entries
    R_H_values: torch.Tensor  # (P,) their values (cross-cluster pairs only)
    points: PointGraph
    point_anchor: torch.Tensor  # (n,)
    anchor_cluster: torch.Tensor  # (A,)
    labels: torch.Tensor  # (n,)
    k: int  # kNN size of the sub-cluster graph (clamped)
    anchors_in_graph: bool
    anchor_rows: torch.Tensor  # (A2,) anchors with a row of their own in the folded graph
    multiplicity: torch.Tensor  # (n + A2,) rows of [X; anchors] each folded row stands for

    @property
    def M_H(self) -> torch.Tensor:
        return self.points.M_H

    @property
    def knn_k(self) -> int:
        return self.points.knn_k

    @property
    def n_anchors(self) -> int:
        return int(self.anchor_cluster.shape[0])

    def dense_R_H(self) -> torch.Tensor:
        """R_H as an ``(A, A)`` matrix (A² entries: for tests and small A)."""
        A = self.n_anchors
        dense = self.R_H_values.new_zeros(A * A)
        return dense.index_put_((self.R_H_keys,), self.R_H_values).view(A, A)

    @property
    def n_clusters(self) -> int:
        return int(self.M_H.shape[0])


def point_graph(
    gram: torch.Tensor, labels: torch.Tensor, knn_k: int, backend: TorchBackend
) -> PointGraph:
    """The kNN graph of X (``knn_k``, clamped) and M_H, from ``gram = X Xᵀ``, by row blocks."""
    n = gram.shape[0]
    C = int(labels.max()) + 1
    knn_k = min(knn_k, n - 1)
    sq = gram.diagonal()
    label_edges = torch.zeros(C * C, dtype=gram.dtype, device=gram.device)
    neighbours = []
    for start in range(0, n, BLOCK):
        stop = min(start + BLOCK, n)
        rows = torch.arange(start, stop, device=gram.device)
        dist = sq_dists_from_dots(gram[start:stop], sq[start:stop], sq)
        idx = smallest_others(dist, rows, knn_k, backend)
        label_flat = (labels[rows].unsqueeze(1) * C + labels[idx]).reshape(-1)
        label_edges.scatter_add_(0, label_flat, torch.ones_like(label_flat, dtype=gram.dtype))
        neighbours.append(idx)
    label_edges = label_edges.view(C, C)
    neighbours_x = torch.cat(neighbours)
    return PointGraph(
        edges=KnnEdges.of(neighbours_x),
        M_H=label_edges / label_edges.sum(1, keepdim=True).clamp_min(_EPS),
        knn_k=knn_k,
    )


def sparse_target(
    X: torch.Tensor,
    labels: torch.Tensor,
    point_anchor: torch.Tensor,
    anchor_cluster: torch.Tensor,
    *,
    k: int,
    knn_k: int,
    anchors_in_graph: bool,
    backend: TorchBackend,
    gram: torch.Tensor | None = None,
    points: PointGraph | None = None,
) -> SparseTarget:
    """High-D kNN graph of ``[X; anchors]`` and R_H (sparse) through the Gram matrix ``X Xᵀ``
    (given, or made here), with the kNN graph of X (:func:`point_graph`, given or made
    here)."""
    n, A = X.shape[0], anchor_cluster.shape[0]
    gram = X @ X.T if gram is None else gram  # (n, n): the only d-dimensional product
    points = point_graph(gram, labels, knn_k, backend) if points is None else points
    N = n + A if anchors_in_graph else n
    k = min(k, N - 1)
    # rows of Z = [X; anchors] with one-member anchors folded into their member (an anchor of
    # one member *is* that point): n + A2 rows, a point row standing for 1 or 2 rows
    anchor_rows, multiplicity = fold_anchor_rows(point_anchor, A, anchors_in_graph)
    A2, N2 = len(anchor_rows), n + len(anchor_rows)
    # x_i · c_a and c_a · c_b for the anchors with rows only (an anchor is the mean of its
    # members): with near-singleton anchors that is a few columns, not an (n, A) matrix
    # (points of the other anchors go to a spare column A2, dropped after)
    column_of_anchor = torch.full((A,), A2, dtype=torch.long, device=X.device)
    column_of_anchor[anchor_rows] = torch.arange(A2, device=X.device)
    column = column_of_anchor[point_anchor]
    members = torch.bincount(point_anchor, minlength=A).to(X.dtype)[anchor_rows]
    cross_z = torch.zeros(n, A2 + 1, dtype=X.dtype, device=X.device)
    cross_z = cross_z.index_add_(1, column, gram)[:, :A2].div_(members)  # (n, A2): x_i · c_a
    anchor_gram_z = torch.zeros(A2 + 1, A2, dtype=X.dtype, device=X.device)
    anchor_gram_z = anchor_gram_z.index_add_(0, column, cross_z)[:A2].div_(members.unsqueeze(1))
    sq_z = torch.cat([gram.diagonal(), anchor_gram_z.diagonal()])
    group = torch.cat([point_anchor, anchor_rows])
    keys, weights = [], []
    for start in range(0, N2, BLOCK):
        stop = min(start + BLOCK, N2)
        rows = torch.arange(start, stop, device=X.device)
        blocks = []
        if start < n:  # point rows start..min(stop, n)
            blocks.append(torch.cat([gram[start:stop], cross_z[start:stop]], 1))
        if stop > n:  # anchor rows
            own = slice(max(start, n) - n, stop - n)
            blocks.append(torch.cat([cross_z[:, own].T, anchor_gram_z[own]], 1))
        dots = torch.cat(blocks) if len(blocks) > 1 else blocks[0]  # a fresh block
        dist = sq_dists_from_dots(dots, sq_z[start:stop], sq_z, in_place=True)
        idx = smallest_others(dist, rows, min(k, N2 - 1), backend)
        weights.append(folded_knn_weights(multiplicity[idx], multiplicity[rows], k).reshape(-1))
        keys.append((group[rows].unsqueeze(1) * A + group[idx]).reshape(-1))
    R_keys, R_values = sparse_overlap_matrix(torch.cat(keys), torch.cat(weights), A, anchor_cluster)
    nonzero = R_values > 0
    return SparseTarget(
        R_H_keys=R_keys[nonzero],
        R_H_values=R_values[nonzero],
        points=points,
        point_anchor=point_anchor,
        anchor_cluster=anchor_cluster,
        labels=labels,
        k=k,
        anchors_in_graph=anchors_in_graph,
        anchor_rows=anchor_rows,
        multiplicity=multiplicity,
    )


def sparse_overlap_matrix(
    keys: torch.Tensor,
    weight: torch.Tensor,
    n_groups: int,
    group_cluster: torch.Tensor,
    support: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """An overlap matrix (R_H, or a hard R_L) from weighted kNN edges between groups, sparse:
    ``(pair_keys, R)``, keys ``a · G + b`` sorted, each edge's key in them (and ``support``'s
    keys, if given). R is the row-normalised edge weight, 0 on a group's own pair (not counted
    in its row either) and within a cluster: the dense ``(G, G)`` definition, at the edges'
    cost rather than G²'s (G = 3000 anchors: 9 M entries)."""
    all_keys = keys if support is None else torch.cat([keys, support])
    pair_keys, inverse = torch.unique(all_keys, return_inverse=True)
    a, b = pair_keys // n_groups, pair_keys % n_groups
    edges = torch.zeros(len(pair_keys), dtype=weight.dtype, device=weight.device)
    edges.scatter_add_(0, inverse[: len(keys)], weight).mul_(a != b)
    rows = torch.zeros(n_groups, dtype=weight.dtype, device=weight.device)
    rows.scatter_add_(0, a, edges)
    return pair_keys, edges / rows[a].clamp_min(_EPS) * (group_cluster[a] != group_cluster[b])


def cross_pairs(group_cluster: torch.Tensor) -> float:
    """How many ordered pairs of groups lie in different clusters (``group_cluster (G,)``)."""
    sizes = torch.bincount(group_cluster).double()
    return float(len(group_cluster) ** 2 - (sizes**2).sum())


def lookup(keys: torch.Tensor, values: torch.Tensor, queries: torch.Tensor) -> torch.Tensor:
    """``values`` at ``queries`` in the sorted ``keys``, 0 where a query is not a key."""
    if len(keys) == 0:
        return values.new_zeros(queries.shape)
    at = torch.searchsorted(keys, queries).clamp_max_(len(keys) - 1)
    return torch.where(keys[at] == queries, values[at], values.new_zeros(()))
