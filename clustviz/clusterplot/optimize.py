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

from clustviz.clusterplot.batch import Adam, pair_gradient, pairwise_sq_dists
from clustviz.clusterplot.init import knn_kl
from clustviz.clusterplot.overlap import (
    aggregate_edges,
    discrepancy,
    hard_edges,
    knn_from_dists,
    nearest_sorted,
    normalise_overlap,
    overlap_pair_mask,
    radius_from_nearest,
    soft_edges,
)

_INF = float("inf")
_EPS = 1e-12

__all__ = [
    "DenseTerms",
    "FoldedRows",
    "OverlapTarget",
    "SoftOverlap",
    "dense_terms",
    "fold_rows",
    "gradient_layout",
    "greedy_layout",
    "hard_discrepancy",
]


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
    anchor_row_slots: int | None = None  # A2 of the folded rows (FoldedRows); None: the most

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


def reference_loss(
    Y: torch.Tensor,
    target: OverlapTarget,
    *,
    overlap_weight: float,
    label_overlap_weight: float,
    knn_weight: float,
    temperature: float,
) -> torch.Tensor:
    """The gradient mode's loss ``(B,)`` through autograd (what :func:`gradient_layout`
    differentiates by hand; kept as the reference for tests)."""
    overlap, label_overlap = _losses(Y, target, temperature)
    loss = overlap_weight * overlap + label_overlap_weight * label_overlap
    return loss + knn_weight * knn_kl(Y, target.P, target.mask)


class SoftOverlap:
    """One soft-kNN overlap term with its gradient written out (no autograd graph).

    Forward (as :func:`~clustviz.clusterplot.overlap.soft_edges` then
    :func:`~clustviz.clusterplot.overlap.normalise_overlap` / row shares and
    :func:`~clustviz.clusterplot.overlap.discrepancy`): ``w_ij = σ((r_i - D_ij) / (τ r_i))`` on
    the valid pairs, ``E = Σ w`` per (group, group), ``R = off(E) / rowsum · pairs``,
    ``loss = mean_pairs |R - R_H|``. Backward: ``dL/dE`` on the small ``(G, G)`` matrix, gathered
    back to the pairs, times ``dw/dD``. Only ``(B, N, N)`` elementwise passes, one scatter and one
    gather per step.
    """

    def __init__(
        self,
        mask: torch.Tensor,  # (B, N) bool
        k: torch.Tensor,  # (B,) long
        group: torch.Tensor | None,  # (B, N) long; None: row i is group i (N = n_groups)
        n_groups: int,
        target: torch.Tensor,  # (B, G, G)
        pairs: torch.Tensor,  # (B, G, G) bool: pairs that count
        temperature: float,
        remove_diagonal: bool,
        multiplicity: torch.Tensor | None = None,  # (B, N): coincident rows folded into one
    ) -> None:
        N = mask.shape[1]
        eye = torch.eye(N, dtype=torch.bool, device=mask.device)
        self.invalid = ~(mask.unsqueeze(1) & mask.unsqueeze(2)) | eye  # (B, N, N)
        self.valid = (~self.invalid).to(target.dtype)
        self.multiplicity = multiplicity
        if multiplicity is None:
            self.pair_weight = self.valid
            rows = mask.sum(1)
        else:
            # a folded row's copies pair with each other on the diagonal group pair (a, a),
            # which the sub-cluster overlap drops: only the cross pairs need weights
            assert remove_diagonal, "folded rows need the diagonal removed"
            self.pair_weight = self.valid * multiplicity.unsqueeze(2) * multiplicity.unsqueeze(1)
            rows = multiplicity.sum(1).round().long()
        self.k = torch.minimum(k, rows - 1).clamp_min(1)
        # pairs inside one group are dropped: give them no weight at all (one row per group:
        # only the diagonal, which is invalid already)
        if remove_diagonal and group is not None:
            self.pair_weight = self.pair_weight * (group.unsqueeze(2) != group.unsqueeze(1))
        # the (group, group) cell each pair's weight adds to; None: the pair's own cell
        self.flat = None if group is None else (group.unsqueeze(2) * n_groups + group.unsqueeze(1))
        self.G = n_groups
        self.pairs = pairs.to(target.dtype)
        self.target = target * self.pairs  # so R - target is 0 wherever a pair does not count
        self.count = self.pairs.sum((1, 2)).clamp_min(1.0)  # (B,)
        self.temperature = temperature

    def radius(self, D: torch.Tensor) -> torch.Tensor:
        """``r (B, N, 1)``: midway between each row's k-th and (k+1)-th squared distance."""
        return self.radius_from(*nearest_sorted(D, self.invalid, self.search_width))

    @property
    def search_width(self) -> int:
        """Nearest columns per row that :meth:`radius_from` needs."""
        return min(int(self.k.max()) + 1, self.invalid.shape[2])

    def radius_from(self, ordered: torch.Tensor, columns: torch.Tensor) -> torch.Tensor:
        """:meth:`radius` from a search of at least :attr:`search_width` columns."""
        return radius_from_nearest(ordered, columns, self.k, self.multiplicity)

    def __call__(self, D: torch.Tensor, radius: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Loss ``(B,)`` and ``dL/dD (B, N, N)`` for squared distances ``D`` and radii."""
        B, N, _ = D.shape
        scale = 1.0 / (self.temperature * radius)  # (B, N, 1)
        s = torch.sigmoid((radius - D) * scale)
        w = s * self.pair_weight
        if self.flat is None:
            off = w
        else:
            edges = D.new_zeros(B, self.G * self.G).scatter_add_(
                1, self.flat.view(B, -1), w.view(B, -1)
            )
            off = edges.view(B, self.G, self.G)  # the diagonal is 0 if removed (pair_weight)
        rows = off.sum(2, keepdim=True)
        inv_rows = 1.0 / rows.clamp_min(_EPS)
        R = off * inv_rows * self.pairs
        diff = R - self.target  # 0 off the pairs: no further masking below
        loss = diff.abs().sum((1, 2)) / self.count
        g_R = torch.sign(diff) / self.count.view(B, 1, 1)
        # R_ab = off_ab p_ab / s_a  →  dL/doff_ab = (g_ab p_ab - Σ_b' g_ab' R_ab') / s_a
        g_off = (g_R - (g_R * R).sum(2, keepdim=True)) * (inv_rows * (rows > _EPS))
        # (the clamp stops the row-sum path; a dropped in-group pair has w = 0 below)
        g_w = (
            g_off
            if self.flat is None
            else g_off.view(B, -1).gather(1, self.flat.view(B, -1)).view(B, N, N)
        )
        # dw/dD = -weight · s (1 - s) / (τ r);  w = weight · s is 0 on invalid pairs
        return loss, g_w.mul_(w).mul_(s - 1.0).mul_(scale)


@dataclass(slots=True)
class FoldedRows:
    """Rows of the 2-D sub-cluster graph with coincident rows folded together.

    ``Z = [Y; anchors]`` repeats every point whose anchor has no other member: in 2-D that
    anchor *is* the point. Real LM-guess data gives such anchors almost only (A ≈ n), so the
    graph is folded to the n points plus the ``A2`` anchors of several members, and a point
    row stands for ``multiplicity`` (1 or 2) rows. Same loss and gradient, ``(n + A2)²``
    pairs instead of ``(n + A)²``.
    """

    anchor_rows: torch.Tensor  # (B, A2) long: anchors that keep a row of their own
    anchor_rows_mask: torch.Tensor  # (B, A2) bool
    multiplicity: torch.Tensor | None  # (B, n + A2) float, 0 at padding; None: no folding


def fold_rows(
    point_anchor: torch.Tensor,
    mask: torch.Tensor,
    anchor_mask: torch.Tensor,
    members: torch.Tensor,
    slots: int | None = None,
) -> FoldedRows:
    """Fold each one-member anchor into its member (see :class:`FoldedRows`); ``slots``: the
    anchor rows' width ``A2`` (at least the most several-member anchors of a preamble; the
    rest is padding), or None for that most."""
    B, A = anchor_mask.shape
    single = (members == 1) & anchor_mask
    multi = (members > 1) & anchor_mask
    n_multi = multi.sum(1, keepdim=True)
    A2 = (int(n_multi.max()) if B else 0) if slots is None else slots
    ids = torch.arange(A, device=mask.device).expand(B, A)
    order = torch.where(multi, ids, ids + A).argsort(1)[:, :A2]  # several-member first
    rows_mask = torch.arange(A2, device=mask.device).expand(B, A2) < n_multi
    point_rows = mask.to(members.dtype) * (1.0 + single.gather(1, point_anchor).to(members.dtype))
    return FoldedRows(
        anchor_rows=torch.where(rows_mask, order, 0),
        anchor_rows_mask=rows_mask,
        multiplicity=torch.cat([point_rows, rows_mask.to(members.dtype)], 1),
    )


def folded_knn_weights(
    counts: torch.Tensor, row_counts: torch.Tensor, k: torch.Tensor | int
) -> torch.Tensor:
    """Edges ``(..., R, K)`` of a hard kNN graph on folded rows: row i's nearest other rows
    stand for ``counts (..., R, K)`` rows each; its own ``row_counts (..., R) - 1`` copies come
    first (distance 0); the first ``k`` rows (an int or a tensor that broadcasts) are the
    unfolded row's neighbours, and the row itself stands for ``row_counts`` rows."""
    before = (row_counts - 1).unsqueeze(-1) + counts.cumsum(-1) - counts
    return (k - before).clamp_min(0).minimum(counts) * row_counts.unsqueeze(-1)


def _in_point_order(
    point_anchor: torch.Tensor, mask: torch.Tensor, *matrices: torch.Tensor
) -> list[torch.Tensor]:
    """``(B, A, A)`` matrices over one-member anchors, re-indexed by their points ``(B, n, n)``
    (``A = n``; zero on padding)."""
    B, n = point_anchor.shape
    rows = point_anchor.unsqueeze(-1).expand(B, n, n)
    valid = mask.unsqueeze(2) & mask.unsqueeze(1)
    return [
        (M.gather(1, rows).gather(2, point_anchor.unsqueeze(1).expand(B, n, n)) * valid).to(M.dtype)
        for M in matrices
    ]


def _folded_z(
    Y: torch.Tensor,
    mask: torch.Tensor,
    point_anchor: torch.Tensor,
    members: torch.Tensor,
    anchor_rows: torch.Tensor,
) -> torch.Tensor:
    """The folded 2-D rows ``[Y; anchors[anchor_rows]]`` (an anchor: the mean of its valid
    members; padding rows of ``Y`` may hold anything, e.g. a translation)."""
    if not anchor_rows.shape[1]:
        return Y
    B, A = members.shape
    index = point_anchor.unsqueeze(-1).expand(*point_anchor.shape, 2)
    sums = Y.new_zeros(B, A, 2).scatter_add_(1, index, Y * mask.unsqueeze(-1))
    means = sums / members.clamp_min(1.0).unsqueeze(-1)
    return torch.cat([Y, means.gather(1, anchor_rows.unsqueeze(-1).expand(-1, -1, 2))], 1)


def _knn_kl_grad(
    D: torch.Tensor, P: torch.Tensor, valid: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`~clustviz.clusterplot.init.knn_kl` ``(B,)`` and its ``dL/dD (B, n, n)``."""
    log1p = torch.log1p(D)
    w = valid / (1.0 + D)
    total = w.sum((1, 2))
    loss = (P * log1p).sum((1, 2)) + torch.log(total.clamp_min(1e-30))
    coef = (P - w / total.clamp_min(1e-30).view(-1, 1, 1)).mul_(w)
    return loss, coef


@dataclass(slots=True)
class DenseTerms:
    """What the dense relaxation's every step reads, made once per fit (:func:`dense_terms`):
    the two soft overlap terms, the kNN term's valid pairs, and how points, anchors and folded
    rows map onto each other."""

    sub: SoftOverlap  # sub-cluster overlap on the folded rows [Y; anchors[anchor_rows]]
    label: SoftOverlap  # cluster-level overlap on Y
    valid: torch.Tensor  # (B, n, n) float: pairs of the kNN term
    weight: torch.Tensor  # (B, n, 1) float: the mask
    members: torch.Tensor  # (B, A) float: points per anchor
    inv_members: torch.Tensor  # (B, A, 1)
    anchor_index: torch.Tensor  # (B, n, 2) long: each point's anchor, per coordinate
    rows: FoldedRows


def dense_terms(Y0: torch.Tensor, target: OverlapTarget, temperature: float) -> DenseTerms:
    """The fixed parts of :func:`gradient_layout`'s loss for layouts shaped like ``Y0``."""
    B, n, _ = Y0.shape
    A = target.n_anchors
    mask = target.mask
    weight = mask.unsqueeze(-1).to(Y0.dtype)
    members = Y0.new_zeros(B, A).scatter_add_(1, target.point_anchor, weight.squeeze(-1))
    if target.anchors_in_graph:
        rows = fold_rows(
            target.point_anchor, mask, target.anchor_mask, members, target.anchor_row_slots
        )
    else:
        rows = FoldedRows(target.point_anchor.new_zeros(B, 0), mask.new_zeros(B, 0), None)
    sub_pairs = overlap_pair_mask(target.anchor_cluster, target.anchor_mask)
    if n == A and bool(((members == 1) | ~target.anchor_mask).all()):
        # one point per anchor (real LM guesses: always): the sub-clusters are the points, so
        # R_H goes to point order once and the per-step (group, group) sums need no scatter
        sub_group, sub_target, sub_pairs = (
            None,
            *_in_point_order(target.point_anchor, mask, target.R_H, sub_pairs),
        )
    else:
        sub_group, sub_target = torch.cat([target.point_anchor, rows.anchor_rows], 1), target.R_H
    sub = SoftOverlap(
        torch.cat([mask, rows.anchor_rows_mask], 1),
        target.k,
        sub_group,
        A,
        sub_target,
        sub_pairs,
        temperature,
        remove_diagonal=True,
        multiplicity=rows.multiplicity,
    )
    label = SoftOverlap(
        mask,
        target.knn_k,
        target.labels,
        target.n_clusters,
        target.M_H,
        _cluster_pairs(target),
        temperature,
        remove_diagonal=False,
    )
    return DenseTerms(
        sub=sub,
        label=label,
        valid=label.valid,
        weight=weight,
        members=members,
        inv_members=(1.0 / members.clamp_min(1.0)).unsqueeze(-1),
        anchor_index=target.point_anchor.unsqueeze(-1).expand(B, n, 2),
        rows=rows,
    )


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
    radius_every: int = 8,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Optimised layout ``(B, n, 2)`` and the loss trace ``(steps, B)``, with torch ops (the
    torch backend's; :mod:`.dense_loops` has the numba backend's).

    Adam over translations ``T (B, A, 2)`` and per-point moves ``delta (B, n, 2)``; the loss
    is ``overlap_weight · mean|R_H - R_L| + label_overlap_weight · mean|M_H - M_L|
    + knn_weight · KL(P || Q)`` per preamble, summed (never averaged) over the batch. The
    gradients are written out (see :class:`SoftOverlap`): same values as autograd on
    :func:`reference_loss`, several times faster on the CPU. The soft-kNN radii are detached
    and recomputed every ``radius_every`` steps.
    """
    B, n, _ = Y0.shape
    terms = dense_terms(Y0, target, temperature)
    sub, label, rows, weight = terms.sub, terms.label, terms.rows, terms.weight
    anchor_index = terms.anchor_index
    row_index = rows.anchor_rows.unsqueeze(-1).expand(-1, -1, 2)  # (B, A2, 2)
    T = Y0.new_zeros(B, target.n_anchors, 2)
    delta = torch.zeros_like(Y0)
    optimiser = Adam([T, delta], lr=lr)
    trace = Y0.new_zeros(steps, B)
    with torch.no_grad():
        for step in range(steps):
            Y = Y0 + T.gather(1, anchor_index) + delta * weight
            Z = _folded_z(Y, target.mask, target.point_anchor, terms.members, rows.anchor_rows)
            D = pairwise_sq_dists(Z)  # (B, N, N); its first n × n block is Y's
            D_Y = D[:, :n, :n]
            # radii are detached and move slowly, and a topk over rows of 40 costs as much as
            # some 30 elementwise passes. Every 8 steps: the demo preambles' overlap and kNN
            # preservation as every 4 (0.0219 / 0.700) in a tenth less time; |R_H - R_L|
            # lowered on 82 % of 40 overlapping-blob sets (every 4: 85 %, every 16: 78 %)
            if step % radius_every == 0 and rows.anchor_rows.shape[1]:
                radius_sub, radius_label = sub.radius(D), label.radius(D_Y)
            elif step % radius_every == 0:  # Z is Y: one search serves both terms
                width = max(sub.search_width, label.search_width)
                nearest = nearest_sorted(D, label.invalid, width)
                radius_sub, radius_label = sub.radius_from(*nearest), label.radius_from(*nearest)
            loss, coef = sub(D, radius_sub)
            loss = loss * overlap_weight
            coef.mul_(overlap_weight)
            label_loss, label_coef = label(D_Y, radius_label)
            loss = loss + label_overlap_weight * label_loss
            coef[:, :n, :n].add_(label_coef, alpha=label_overlap_weight)
            if knn_weight > 0:
                kl, kl_coef = _knn_kl_grad(D_Y, target.P, terms.valid)
                loss = loss + knn_weight * kl
                coef[:, :n, :n].add_(kl_coef, alpha=knn_weight)
            g_Z = pair_gradient(coef, Z)
            g_Y = g_Z[:, :n]
            if rows.anchor_rows.shape[1]:  # an anchor's gradient flows to its members
                g_A = torch.zeros_like(T).scatter_add_(1, row_index, g_Z[:, n:])
                g_Y = g_Y + (g_A * terms.inv_members).gather(1, anchor_index)
            g_Y = g_Y * weight
            g_T = torch.zeros_like(T).scatter_add_(1, anchor_index, g_Y)
            optimiser.step([g_T, g_Y])
            trace[step] = loss
        Y = (Y0 + T.gather(1, anchor_index) + delta * weight) * weight
    return Y, trace


def hard_R_L(Y: torch.Tensor, target: OverlapTarget) -> tuple[torch.Tensor, torch.Tensor]:
    """Hard 2-D ``R_L (B, A, A)`` and cluster shares ``M_L (B, C, C)`` of a layout.

    The graph of ``[Y; anchors]`` is built on folded rows (:class:`FoldedRows`): the same
    edges as :func:`low_graph_rows` then :func:`~.overlap.knn_graph`, from ``(n + A2)²``
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
        Z = _folded_z(Y, mask, target.point_anchor, members, rows.anchor_rows)
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
    seed: int,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The original's rule, vectorised over preambles; layout and mean-|D| trace ``(n_iter, B)``.

    Each preamble draws its pairs from its own generator seeded with ``seed``: the draws do
    not depend on the batch."""
    B, A = target.R_H.shape[:2]
    pairs = overlap_pair_mask(target.anchor_cluster, target.anchor_mask)
    n_top = min(max(top_greedy, batch_size), A * A)
    n_pick = min(batch_size, n_top)
    T = Y0.new_zeros(B, A, 2)
    trace = Y0.new_zeros(n_iter, B)
    members = Y0.new_zeros(B, A).scatter_add_(1, target.point_anchor, target.mask.to(Y0.dtype))
    generators = [torch.Generator(Y0.device).manual_seed(seed) for _ in range(B)]
    for it in range(n_iter):
        Y = _translate(Y0, T, target.point_anchor)
        R_L, _ = hard_R_L(Y, target)
        D = (target.R_H - R_L) * pairs  # (B, A, A)
        trace[it] = D.abs().sum((1, 2)) / pairs.sum((1, 2)).clamp_min(1)
        top = D.abs().view(B, -1).topk(n_top, dim=1)  # (B, n_top)
        draws = [torch.rand(n_top, generator=g, device=Y0.device) for g in generators]
        choice = torch.stack(draws).argsort(1)
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
