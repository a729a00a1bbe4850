"""Hard 2-D kNN discrepancies of a layout: how far its cluster overlap is from high-D's.

``mean``/``max`` of ``|R_H - R_L|`` over the sub-cluster pairs in different clusters, and
``label_mean``/``label_max`` of ``|M_H - M_L|`` over the cluster pairs, with ``R_L`` and ``M_L``
from the *hard* kNN graphs of the layout (the measure the relaxation's soft graphs stand in
for): a fit reports them before and after its relaxation. Dense for a batch
(:func:`hard_discrepancy`), sparse for one large preamble (:func:`sparse_hard_discrepancy`):
the same numbers (tested).
"""

from __future__ import annotations

import torch

from clustviz.clusterplot.batch import pairwise_sq_dists
from clustviz.clusterplot.candidates import folded_layout, nearest_rows
from clustviz.clusterplot.folding import fold_rows, folded_knn_weights, folded_z
from clustviz.clusterplot.losses import cluster_pairs
from clustviz.clusterplot.overlap import (
    aggregate_edges,
    discrepancy,
    hard_edges,
    knn_from_dists,
    normalise_overlap,
    overlap_pair_mask,
)
from clustviz.clusterplot.targets import (
    OverlapTarget,
    SparseTarget,
    cross_pairs,
    lookup,
    sparse_overlap_matrix,
)

__all__ = ["hard_R_L", "hard_discrepancy", "sparse_hard_discrepancy"]

_EPS = 1e-12


def hard_R_L(Y: torch.Tensor, target: OverlapTarget) -> tuple[torch.Tensor, torch.Tensor]:
    """Hard 2-D ``R_L (B, A, A)`` and cluster shares ``M_L (B, C, C)`` of a layout.

    The graph of ``[Y; anchors]`` is built on folded rows (:class:`FoldedRows`): the same
    edges as :func:`~.losses.low_graph_rows` then :func:`~.overlap.knn_graph`, from ``(n + A2)²``
    distances instead of ``(n + A)²``."""
    B, n, _ = Y.shape
    A = target.n_anchors
    mask = target.mask
    if target.anchors_in_graph:
        members = Y.new_zeros(B, A).scatter_add_(1, target.point_anchor, mask.to(Y.dtype))
        rows = fold_rows(
            target.point_anchor, mask, target.anchor_mask, members, target.anchor_row_slots
        )
        assert rows.multiplicity is not None
        Z = folded_z(Y, mask, target.point_anchor, members, rows.anchor_rows)
        Z_mask = torch.cat([mask, rows.anchor_rows_mask], 1)
        group = torch.cat([target.point_anchor, rows.anchor_rows], 1)
        multiplicity = rows.multiplicity
        unfolded = mask.sum(1) + target.anchor_mask.sum(1)  # rows of [Y; anchors]
    else:
        Z, Z_mask, group, multiplicity = Y, mask, target.point_anchor, mask.to(Y.dtype)
        unfolded = mask.sum(1)
    dist = pairwise_sq_dists(Z)  # its first n × n block is Y's
    # at most k folded rows hold a row's k nearest (each stands for one row or more)
    idx, edge_mask = knn_from_dists(dist, Z_mask, target.k)
    flat_idx = idx.reshape(B, -1)
    counts = multiplicity.gather(1, flat_idx).view_as(idx) * edge_mask
    k = torch.minimum(target.k, unfolded - 1).view(B, 1, 1)
    edges = aggregate_edges(
        group.unsqueeze(-1).expand_as(idx),
        group.gather(1, flat_idx).view_as(idx),
        folded_knn_weights(counts, multiplicity, k),
        A,
    )
    R_L = normalise_overlap(edges, target.anchor_cluster, target.anchor_mask)
    idx, edge_mask = knn_from_dists(dist[:, :n, :n], mask, target.knn_k)
    label_edges = hard_edges(idx, edge_mask, target.labels, target.n_clusters)
    return R_L, label_edges / label_edges.sum(2, keepdim=True).clamp_min(1e-12)


def hard_discrepancy(Y: torch.Tensor, target: OverlapTarget) -> dict[str, torch.Tensor]:
    """Hard 2-D kNN discrepancies, ``(B,)`` each: sub-cluster ``mean``/``max`` |R_H - R_L| and
    label-level ``label_mean``/``label_max`` |M_H - M_L|."""
    R_L, M_L = hard_R_L(Y, target)
    pairs = overlap_pair_mask(target.anchor_cluster, target.anchor_mask)
    mean, max_ = discrepancy(target.R_H, R_L, pairs)
    label_mean, label_max = discrepancy(target.M_H, M_L, cluster_pairs(target))
    return {"mean": mean, "max": max_, "label_mean": label_mean, "label_max": label_max}


def sparse_hard_discrepancy(
    Y: torch.Tensor,
    target: SparseTarget,
    candidates: tuple[torch.Tensor, torch.Tensor] | None = None,
) -> dict[str, float]:
    """Hard 2-D kNN discrepancies (as :func:`hard_discrepancy`) of ``Y (n, 2)``;
    ``candidates``: :func:`~.candidates.layout_candidates` of ``Y`` if already made."""
    n, A, C = Y.shape[0], target.n_anchors, target.n_clusters
    pa = target.point_anchor
    groups = torch.cat([pa, target.anchor_rows])
    if candidates is None:
        Z = folded_layout(Y, target)
        candidates = nearest_rows(Z, n, min(target.k, len(groups) - 1), target.knn_k)
    cand_z = candidates[0][:, : min(target.k, len(groups) - 1)]
    cand_y = candidates[1][:, : target.knn_k]
    weight = folded_knn_weights(target.multiplicity[cand_z], target.multiplicity, target.k)
    rows = torch.arange(len(groups), device=Y.device).unsqueeze(1).expand_as(cand_z)
    keys = (groups[rows] * A + groups[cand_z]).reshape(-1)
    pair_keys, R_L = sparse_overlap_matrix(
        keys, weight.reshape(-1), A, target.anchor_cluster, target.R_H_keys
    )
    diff = (lookup(target.R_H_keys, target.R_H_values, pair_keys) - R_L).abs()
    n_cross = cross_pairs(target.anchor_cluster)
    labels = target.labels
    rows = torch.arange(n, device=Y.device).unsqueeze(1).expand_as(cand_y)
    label_edges = torch.zeros(C * C, dtype=Y.dtype, device=Y.device)
    label_edges.scatter_add_(
        0,
        (labels[rows] * C + labels[cand_y]).reshape(-1),
        torch.ones(cand_y.numel(), dtype=Y.dtype, device=Y.device),
    )
    label_edges = label_edges.view(C, C)
    M_L = label_edges / label_edges.sum(1, keepdim=True).clamp_min(_EPS)
    cluster_pairs = ~torch.eye(C, dtype=torch.bool, device=Y.device)
    label_diff = (target.M_H - M_L).abs() * cluster_pairs
    return {
        "mean": float(diff.sum()) / max(n_cross, 1.0),
        "max": float(diff.max()) if len(diff) else 0.0,
        "label_mean": float(label_diff.sum() / cluster_pairs.sum().clamp_min(1)),
        "label_max": float(label_diff.max()) if C else 0.0,
    }
