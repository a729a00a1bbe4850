"""Relaxation of an initial layout towards R_L ≈ R_H: gradient (ours) and greedy (original).

Both act on ``Y0 (B, n, 2)`` with per-sub-cluster translations ``T (B, A, 2)``:
``Y = Y0 + T[point_anchor] (+ delta)``.

* gradient: Adam on ``overlap_weight · mean|R_H - R_L|`` (sub-clusters, soft R_L)
  ``+ label_overlap_weight · mean|M_H - M_L|`` (the same edges aggregated to clusters)
  ``+ knn_weight · KL(P || Q)`` (the kNN graph of X against a t-kernel: keeps local structure),
  over translations and per-point moves. Losses are summed over preambles, never averaged, so a
  batch takes exactly the steps each preamble would take alone.
* greedy: per iteration, per preamble, draw ``batch_size`` pairs among the ``top_greedy``
  largest ``|D| = |R_H - R_L|`` (hard 2-D kNN) and translate sub-cluster ``a`` rigidly by
  ``sign(D_ab) · lr · |D_ab| · (p_b - p_a)`` (without ``|D_ab|`` if not ``magnitude_step``):
  towards ``b`` when it overlaps too little in 2-D, away when too much.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from clustviz.clusterplot.init import knn_kl
from clustviz.clusterplot.overlap import (
    discrepancy,
    hard_edges,
    knn_graph,
    normalise_overlap,
    overlap_pair_mask,
    soft_edges,
)

__all__ = ["OverlapTarget", "gradient_layout", "greedy_layout", "hard_discrepancy"]


@dataclass(slots=True)
class OverlapTarget:
    """What the relaxation matches, fixed for a fit."""

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

    @property
    def n_anchors(self) -> int:
        return int(self.R_H.shape[1])

    @property
    def n_clusters(self) -> int:
        return int(self.M_H.shape[1])


def _translate(Y0: torch.Tensor, T: torch.Tensor, point_anchor: torch.Tensor) -> torch.Tensor:
    return Y0 + T.gather(1, point_anchor.unsqueeze(-1).expand(*point_anchor.shape, 2))


def low_graph_rows(
    Y: torch.Tensor, target: OverlapTarget
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Rows of the 2-D graph mirroring the high-D one: ``Z_low (B, N, 2)``, mask, group.

    With anchors in the graph, an anchor's 2-D position is the mean of its members.
    """
    if not target.anchors_in_graph:
        return Y, target.mask, target.point_anchor
    B, A = target.anchor_mask.shape
    weight = target.mask.unsqueeze(-1).to(Y.dtype)
    index = target.point_anchor.unsqueeze(-1).expand(-1, -1, 2)
    sums = Y.new_zeros(B, A, 2).scatter_add(1, index, Y * weight)
    members = Y.new_zeros(B, A).scatter_add(1, target.point_anchor, weight.squeeze(-1))
    anchors = sums / members.clamp_min(1).unsqueeze(-1)
    arange = torch.arange(A, device=Y.device).expand(B, A)
    return (
        torch.cat([Y, anchors], 1),
        torch.cat([target.mask, target.anchor_mask], 1),
        torch.cat([target.point_anchor, arange], 1),
    )


def _cluster_pairs(target: OverlapTarget) -> torch.Tensor:
    clusters = torch.arange(target.n_clusters, device=target.mask.device)
    return overlap_pair_mask(clusters.expand_as(target.cluster_mask), target.cluster_mask)


def _losses(Y: torch.Tensor, target: OverlapTarget, temperature: float):
    """Per-preamble ``(sub-cluster overlap, cluster overlap)`` losses, ``(B,)`` each."""
    Z, Z_mask, group = low_graph_rows(Y, target)
    edges = soft_edges(Z, Z_mask, target.k, group, target.n_anchors, temperature)
    R_L = normalise_overlap(edges, target.anchor_cluster, target.anchor_mask)
    pairs = overlap_pair_mask(target.anchor_cluster, target.anchor_mask)
    overlap, _ = discrepancy(target.R_H, R_L, pairs)
    label_edges = soft_edges(
        Y, target.mask, target.knn_k, target.labels, target.n_clusters, temperature
    )
    M_L = label_edges / label_edges.sum(2, keepdim=True).clamp_min(1e-12)
    label_overlap, _ = discrepancy(target.M_H, M_L, _cluster_pairs(target))
    return overlap, label_overlap


def gradient_layout(
    Y0: torch.Tensor,
    target: OverlapTarget,
    *,
    steps: int,
    lr: float,
    overlap_weight: float,
    label_overlap_weight: float,
    knn_weight: float,
    temperature: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Optimised layout ``(B, n, 2)`` and the loss trace ``(steps, B)``."""
    B, A = target.R_H.shape[:2]
    T = Y0.new_zeros(B, A, 2, requires_grad=True)
    delta = torch.zeros_like(Y0, requires_grad=True)
    optimiser = torch.optim.Adam([T, delta], lr=lr)
    trace = Y0.new_zeros(steps, B)
    weight = target.mask.unsqueeze(-1).to(Y0.dtype)
    for step in range(steps):
        optimiser.zero_grad(set_to_none=True)
        Y = _translate(Y0, T, target.point_anchor) + delta * weight
        overlap, label_overlap = _losses(Y, target, temperature)
        loss = overlap_weight * overlap + label_overlap_weight * label_overlap
        if knn_weight > 0:
            loss = loss + knn_weight * knn_kl(Y, target.P, target.mask)
        loss.sum().backward()
        optimiser.step()
        trace[step] = loss.detach()
    with torch.no_grad():
        Y = (_translate(Y0, T, target.point_anchor) + delta * weight) * weight
    return Y, trace


def hard_R_L(Y: torch.Tensor, target: OverlapTarget) -> tuple[torch.Tensor, torch.Tensor]:
    """Hard 2-D ``R_L (B, A, A)`` and cluster shares ``M_L (B, C, C)`` of a layout."""
    Z, Z_mask, group = low_graph_rows(Y, target)
    idx, edge_mask = knn_graph(Z, Z_mask, target.k)
    edges = hard_edges(idx, edge_mask, group, target.n_anchors)
    R_L = normalise_overlap(edges, target.anchor_cluster, target.anchor_mask)
    idx, edge_mask = knn_graph(Y, target.mask, target.knn_k)
    label_edges = hard_edges(idx, edge_mask, target.labels, target.n_clusters)
    return R_L, label_edges / label_edges.sum(2, keepdim=True).clamp_min(1e-12)


def hard_discrepancy(Y: torch.Tensor, target: OverlapTarget) -> dict[str, torch.Tensor]:
    """Hard 2-D kNN discrepancies, ``(B,)`` each: sub-cluster ``mean``/``max`` |R_H - R_L| and
    label-level ``label_mean``/``label_max`` |M_H - M_L|."""
    R_L, M_L = hard_R_L(Y, target)
    pairs = overlap_pair_mask(target.anchor_cluster, target.anchor_mask)
    mean, max_ = discrepancy(target.R_H, R_L, pairs)
    label_mean, label_max = discrepancy(target.M_H, M_L, _cluster_pairs(target))
    return {"mean": mean, "max": max_, "label_mean": label_mean, "label_max": label_max}


def greedy_layout(
    Y0: torch.Tensor,
    target: OverlapTarget,
    *,
    n_iter: int,
    lr: float,
    batch_size: int,
    top_greedy: int,
    magnitude_step: bool,
    generator: torch.Generator,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The original's rule, vectorised over preambles; layout and mean-|D| trace ``(n_iter, B)``."""
    B, A = target.R_H.shape[:2]
    pairs = overlap_pair_mask(target.anchor_cluster, target.anchor_mask)
    n_top = min(max(top_greedy, batch_size), A * A)
    n_pick = min(batch_size, n_top)
    T = Y0.new_zeros(B, A, 2)
    trace = Y0.new_zeros(n_iter, B)
    members = Y0.new_zeros(B, A).scatter_add_(1, target.point_anchor, target.mask.to(Y0.dtype))
    for it in range(n_iter):
        Y = _translate(Y0, T, target.point_anchor)
        R_L, _ = hard_R_L(Y, target)
        D = (target.R_H - R_L) * pairs  # (B, A, A)
        trace[it] = D.abs().sum((1, 2)) / pairs.sum((1, 2)).clamp_min(1)
        top = D.abs().view(B, -1).topk(n_top, dim=1)  # (B, n_top)
        choice = torch.rand(B, n_top, generator=generator, device=Y0.device).argsort(1)
        chosen = top.indices.gather(1, choice[:, :n_pick])  # (B, n_pick) flat pair indices
        a, b = chosen // A, chosen % A
        d_ab = D.view(B, -1).gather(1, chosen)  # (B, n_pick), 0 for padding pairs
        weighted = target.mask.unsqueeze(-1) * Y
        sums = Y0.new_zeros(B, A, 2).scatter_add_(
            1, target.point_anchor.unsqueeze(-1).expand(B, -1, 2), weighted
        )
        positions = sums / members.clamp_min(1).unsqueeze(-1)  # (B, A, 2) anchors in 2-D
        p_a = positions.gather(1, a.unsqueeze(-1).expand(-1, -1, 2))
        p_b = positions.gather(1, b.unsqueeze(-1).expand(-1, -1, 2))
        scale = d_ab if magnitude_step else torch.sign(d_ab)
        move = lr * scale.unsqueeze(-1) * (p_b - p_a)  # (B, n_pick, 2)
        T = T.scatter_add(1, a.unsqueeze(-1).expand(-1, -1, 2), move)
    Y = _translate(Y0, T, target.point_anchor) * target.mask.unsqueeze(-1)
    return Y, trace
