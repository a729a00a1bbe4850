"""The gradient mode's loss terms, each with its gradient written out, next to the autograd
oracle that tests them (:func:`reference_loss`).

Per preamble, ``overlap_weight · mean|R_H - R_L|`` (sub-clusters, soft 2-D kNN graph)
``+ label_overlap_weight · mean|M_H - M_L|`` (the same edges aggregated to clusters)
``+ knn_weight · KL(P || Q)`` (the kNN graph of X against a t-kernel: keeps local structure),
and, when a layout is aligned to a map (:mod:`.map_alignment`), the centroid pull
``+ weight · mean_c |z̄_c - t_c| / scale`` (:class:`CentroidPull`: each cluster's centroid
held near a target, the same term on every path, dense, sparse and numba).

Here over every pair of a batch of preambles, ``(B, N, N)`` (the dense relaxation and the
numba backend's loops, which read :class:`DenseTerms`); :mod:`.pair_losses` has the same terms
over candidate pair lists (the sparse relaxation). The soft overlap has these two torch forms
and one numba form (:func:`~.pair_loops.normalised_overlap`, which both numba loops call): the
dense form sums its rows as tensor reductions, batched and in a fixed order on any device,
where the pair-list form scatters into its keys (on a GPU atomic adds, whose order varies: a
batch written as pair lists would not give the same answer twice). All are held to the
autograd oracles: :func:`reference_loss` here, ``tests/clusterplot/pair_cases.py`` for the
pair lists.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from clustviz.clusterplot.batch import pairwise_sq_dists
from clustviz.clusterplot.folding import FoldedRows, fold_rows, in_point_order
from clustviz.clusterplot.overlap import (
    discrepancy,
    nearest_sorted,
    normalise_overlap,
    overlap_pair_mask,
    radius_from_nearest,
    soft_edges,
)
from clustviz.clusterplot.targets import OverlapTarget

__all__ = [
    "CentroidPull",
    "DenseTerms",
    "SoftOverlap",
    "centroid_pull",
    "cluster_pairs",
    "dense_terms",
    "knn_kl",
    "knn_kl_grad",
    "low_graph_rows",
    "reference_loss",
]

_EPS = 1e-12


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
        *,
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
        # a row at 0 stays 0 and gets no gradient (as in pair_losses and the numba loops)
        inv_rows = (rows > _EPS) / rows.clamp_min(_EPS)
        R = off * inv_rows * self.pairs
        diff = R - self.target  # 0 off the pairs: no further masking below
        loss = diff.abs().sum((1, 2)) / self.count
        g_R = torch.sign(diff) / self.count.view(B, 1, 1)
        # R_ab = off_ab p_ab / s_a  →  dL/doff_ab = (g_ab p_ab - Σ_b' g_ab' R_ab') / s_a
        g_off = (g_R - (g_R * R).sum(2, keepdim=True)) * inv_rows
        # (a dropped in-group pair has w = 0 below)
        g_w = (
            g_off
            if self.flat is None
            else g_off.view(B, -1).gather(1, self.flat.view(B, -1)).view(B, N, N)
        )
        # dw/dD = -weight · s (1 - s) / (τ r);  w = weight · s is 0 on invalid pairs
        return loss, g_w.mul_(w).mul_(s - 1.0).mul_(scale)


@dataclass(slots=True)
class CentroidPull:
    """The alignment term per preamble, ``factor · Σ_c |z̄_c - t_c|`` with
    ``factor = weight / (C · scale)`` (a mean over the preamble's C clusters, in units of
    ``scale``), its gradient written out; made by :func:`centroid_pull`.

    The distance itself, not its square: it is the alignment's own measure (the mean distance
    of a cluster's centroid from its place in the map), and every cluster is pulled with the
    same force, so the clusters far from their place (the ones that would have to cross the
    others to get there) do not dominate. On the demo set it held 10-NN preservation better at
    the same centroid distance than the square (``scripts/bench_alignment.py``). Padding rows
    have no share and padded cluster slots a zero target: neither adds anything."""

    labels: torch.Tensor  # (B, n) long: each point's cluster, 0..C-1 (0 at padding)
    share: torch.Tensor  # (B, n, 1) float: 1 / |its cluster| on real rows, 0 at padding
    targets: torch.Tensor  # (B, C, 2): where each cluster's centroid is pulled to
    factor: torch.Tensor  # (B,): weight / (C · scale)

    def offsets(self, Y: torch.Tensor) -> torch.Tensor:
        """``z̄_c - t_c`` ``(B, C, 2)`` of the layout ``Y (B, n, 2)``."""
        index = self.labels.unsqueeze(-1).expand(-1, -1, 2)
        centroids = torch.zeros_like(self.targets).scatter_add_(1, index, Y * self.share)
        return centroids - self.targets

    def __call__(self, Y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Loss ``(B,)`` and ``dL/dY (B, n, 2)`` at ``Y (B, n, 2)``."""
        offsets = self.offsets(Y)
        distance = offsets.norm(dim=2, keepdim=True)  # (B, C, 1)
        loss = distance.sum((1, 2)) * self.factor
        # d|Δ_c|/dz̄_c = Δ_c / |Δ_c| (0 for a cluster exactly at its target)
        unit = offsets / distance.clamp_min(_EPS) * self.factor.view(-1, 1, 1)
        index = self.labels.unsqueeze(-1).expand(-1, -1, 2)
        return loss, unit.gather(1, index).mul_(self.share)

    def add_planar(self, Yt: torch.Tensor, grad: torch.Tensor) -> torch.Tensor:
        """The loss (0-d) of one preamble's planar ``Yt (2, n)`` (the sparse relaxation's
        coordinates, :mod:`.planar`), its gradient added into the planar ``grad``."""
        loss, g = self(Yt.T.unsqueeze(0))
        grad.add_(g[0].T)
        return loss[0]

    def reference(self, Y: torch.Tensor) -> torch.Tensor:
        """The loss ``(B,)`` in other ops (a membership matrix), for autograd: the oracle."""
        C = self.targets.shape[1]
        members = torch.nn.functional.one_hot(self.labels, C).to(Y.dtype) * self.share
        centroids = members.transpose(1, 2) @ Y
        distance = torch.linalg.vector_norm(centroids - self.targets, dim=2)
        return distance.sum(1) * self.factor


def centroid_pull(
    labels: torch.Tensor,
    mask: torch.Tensor,
    targets: torch.Tensor,
    weight: float,
    scale: torch.Tensor,
) -> CentroidPull:
    """The centroid term of preambles ``labels (B, n)`` (``0..C_b-1``, ``mask (B, n)``) pulled
    to ``targets (B, C, 2)`` (slots past ``C_b`` ignored) with ``weight``, distances measured in
    units of ``scale (B,)``."""
    B, C = targets.shape[:2]
    dtype = targets.dtype
    valid = mask.to(dtype)
    counts = targets.new_zeros(B, C).scatter_add_(1, labels, valid)
    share = (valid / counts.gather(1, labels).clamp_min(1.0)).unsqueeze(-1)
    present = counts > 0
    n_clusters = present.sum(1).clamp_min(1).to(dtype)
    return CentroidPull(
        labels=labels,
        share=share,
        targets=targets * present.unsqueeze(-1),
        factor=weight / (n_clusters * scale.to(dtype)),
    )


def knn_kl_grad(
    D: torch.Tensor, P: torch.Tensor, valid: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`knn_kl` ``(B,)`` and its ``dL/dD (B, n, n)``."""
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
    """The fixed parts of :func:`~.relaxation.gradient_layout`'s loss for layouts shaped like
    ``Y0``."""
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
            *in_point_order(target.point_anchor, mask, target.R_H, sub_pairs),
        )
    else:
        sub_group, sub_target = torch.cat([target.point_anchor, rows.anchor_rows], 1), target.R_H
    sub = SoftOverlap(
        mask=torch.cat([mask, rows.anchor_rows_mask], 1),
        k=target.k,
        group=sub_group,
        n_groups=A,
        target=sub_target,
        pairs=sub_pairs,
        temperature=temperature,
        remove_diagonal=True,
        multiplicity=rows.multiplicity,
    )
    label = SoftOverlap(
        mask=mask,
        k=target.knn_k,
        group=target.labels,
        n_groups=target.n_clusters,
        target=target.M_H,
        pairs=cluster_pairs(target),
        temperature=temperature,
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


def knn_kl(Y: torch.Tensor, P: torch.Tensor, mask: torch.Tensor, exaggeration: float = 1.0):
    """``KL(P || Q)`` up to a constant, per preamble ``(B,)``; Q is the normalised t-kernel."""
    n = Y.shape[1]
    valid = mask.unsqueeze(1) & mask.unsqueeze(2)
    valid = valid & ~torch.eye(n, dtype=torch.bool, device=Y.device)
    log_w = -torch.log1p(pairwise_sq_dists(Y))  # (B, n, n)
    attraction = -(P * log_w).sum((1, 2))
    normaliser = torch.logsumexp(log_w.masked_fill(~valid, -torch.inf), dim=(1, 2))
    return exaggeration * attraction + normaliser


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


def cluster_pairs(target: OverlapTarget) -> torch.Tensor:
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
    label_overlap, _ = discrepancy(target.M_H, M_L, cluster_pairs(target))
    return overlap, label_overlap


def reference_loss(
    Y: torch.Tensor,
    target: OverlapTarget,
    *,
    overlap_weight: float,
    label_overlap_weight: float,
    knn_weight: float,
    temperature: float,
    pull: CentroidPull | None = None,
) -> torch.Tensor:
    """The gradient mode's loss ``(B,)`` through autograd: the oracle of the terms written out
    by hand (:class:`SoftOverlap`, :func:`knn_kl_grad`, :class:`CentroidPull`, and through them
    every relaxation)."""
    overlap, label_overlap = _losses(Y, target, temperature)
    loss = overlap_weight * overlap + label_overlap_weight * label_overlap
    loss = loss + knn_weight * knn_kl(Y, target.P, target.mask)
    return loss if pull is None else loss + pull.reference(Y)
