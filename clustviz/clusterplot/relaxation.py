"""The gradient relaxation (``mode="gradient"``): from an initial layout towards R_L ≈ R_H.

Adam over per-sub-cluster translations ``T`` and per-point moves ``delta``:
``Y = Y0 + T[point_anchor] + delta``, on the loss of :mod:`.losses` (sub-cluster overlap,
cluster overlap, kNN KL) with the soft-kNN radii detached and refreshed every
``radius_every`` steps, plus, where a layout is aligned to a map, the centroid pull
(:class:`~.losses.CentroidPull`, started from the layout being aligned). One loop, two
strategies for the pairs a step visits:

* :func:`gradient_layout` (dense, batched): every pair of every preamble, ``(B, N, N)``
  tensors; losses are summed over preambles, never averaged, so a batch takes exactly the steps
  each preamble would take alone (the numba backend runs the same loop one preamble at a time,
  :mod:`.layout_loops`);
* :func:`sparse_gradient_layout` (one large preamble): candidate pair lists
  (:mod:`.candidates`, refreshed every ``refresh`` steps), the pair terms of
  :mod:`.pair_losses` in the fit's backend, and the KL normaliser estimated from ``negatives``
  random pairs per point and step (a seeded generator: results are deterministic).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from clustviz.clusterplot.backends import TorchBackend
from clustviz.clusterplot.batch import Adam, pair_gradient, pairwise_sq_dists
from clustviz.clusterplot.candidates import candidate_widths, nearest_rows
from clustviz.clusterplot.folding import folded_z
from clustviz.clusterplot.losses import CentroidPull, dense_terms, knn_kl_grad
from clustviz.clusterplot.overlap import nearest_sorted
from clustviz.clusterplot.pair_losses import SparseOverlap
from clustviz.clusterplot.planar import flat_columns, translation_grads, with_anchors
from clustviz.clusterplot.targets import OverlapTarget, SparseTarget
from clustviz.clusterplot.threads import Lanes

__all__ = ["RelaxSettings", "SparseSettings", "gradient_layout", "sparse_gradient_layout"]


@dataclass(frozen=True, slots=True)
class RelaxSettings:
    """The gradient relaxation's settings, from :class:`~.params.ClusterPlotParams`."""

    steps: int
    lr: float
    overlap_weight: float
    label_overlap_weight: float
    knn_weight: float
    temperature: float
    #: steps between two refreshes of the soft-kNN radii
    radius_every: int


@dataclass(frozen=True, slots=True)
class SparseSettings:
    """What only the sparse strategy reads (its init too: ``negatives``)."""

    #: steps between two searches of the 2-D candidate lists
    refresh: int
    #: 2-D candidates per row, in multiples of k (:func:`~.candidates.candidate_widths`)
    candidates_per_k: float
    #: random pairs per point and step that estimate the KL normaliser
    negatives: int


def gradient_layout(
    Y0: torch.Tensor,
    target: OverlapTarget,
    settings: RelaxSettings,
    pull: CentroidPull | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Optimised layout ``(B, n, 2)`` and the loss trace ``(steps, B)``, with torch ops (the
    torch backend's; :mod:`.layout_loops` has the numba backend's).

    Adam over translations ``T (B, A, 2)`` and per-point moves ``delta (B, n, 2)``; the loss
    is ``overlap_weight · mean|R_H - R_L| + label_overlap_weight · mean|M_H - M_L|
    + knn_weight · KL(P || Q)`` (``+`` the centroid ``pull``, if given) per preamble, summed
    (never averaged) over the batch. The
    gradients are written out (:class:`~.losses.SoftOverlap`): same values as autograd on
    :func:`~.losses.reference_loss`, several times faster on the CPU.
    """
    steps, lr, temperature = settings.steps, settings.lr, settings.temperature
    overlap_weight, label_overlap_weight = settings.overlap_weight, settings.label_overlap_weight
    knn_weight, radius_every = settings.knn_weight, settings.radius_every
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
            Z = folded_z(Y, target.mask, target.point_anchor, terms.members, rows.anchor_rows)
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
                kl, kl_coef = knn_kl_grad(D_Y, target.P, terms.valid)
                loss = loss + knn_weight * kl
                coef[:, :n, :n].add_(kl_coef, alpha=knn_weight)
            g_Z = pair_gradient(coef, Z)
            g_Y = g_Z[:, :n]
            if rows.anchor_rows.shape[1]:  # an anchor's gradient flows to its members
                g_A = torch.zeros_like(T).scatter_add_(1, row_index, g_Z[:, n:])
                g_Y = g_Y + (g_A * terms.inv_members).gather(1, anchor_index)
            if pull is not None:
                pull_loss, pull_grad = pull(Y)
                loss = loss + pull_loss
                g_Y = g_Y + pull_grad
            g_Y = g_Y * weight
            g_T = torch.zeros_like(T).scatter_add_(1, anchor_index, g_Y)
            optimiser.step([g_T, g_Y])
            trace[step] = loss
        Y = (Y0 + T.gather(1, anchor_index) + delta * weight) * weight
    return Y, trace


def sparse_gradient_layout(
    Y0: torch.Tensor,
    target: SparseTarget,
    settings: RelaxSettings,
    sparse: SparseSettings,
    *,
    generator: torch.Generator,
    lanes: Lanes,
    backend: TorchBackend,
    candidates: tuple[torch.Tensor, torch.Tensor] | None = None,
    pull: CentroidPull | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The gradient mode over candidate lists; layout ``(n, 2)`` and loss trace ``(steps,)``.
    ``candidates``: :func:`~.candidates.layout_candidates` of ``Y0``, if already made;
    ``pull``: the centroid term of a map alignment (batch dimension 1; torch ops on either
    backend: it is ``O(n)`` a step, next to the pair terms' ``O(n k)``).

    On a multi-core CPU the caller passes two :class:`~.threads.Lanes`: the sub-cluster term
    runs in one, the point terms (label overlap, kNN) in the other."""
    steps, lr, temperature = settings.steps, settings.lr, settings.temperature
    overlap_weight, label_overlap_weight = settings.overlap_weight, settings.label_overlap_weight
    knn_weight, radius_every = settings.knn_weight, settings.radius_every
    refresh, negatives = sparse.refresh, sparse.negatives
    n, A = Y0.shape[0], target.n_anchors
    pa = target.point_anchor
    members = torch.bincount(pa, minlength=A).to(Y0.dtype).clamp_min(1.0)
    anchor_rows = target.anchor_rows  # one-member anchors are folded into their member
    N = n + len(anchor_rows)
    multiplicity = target.multiplicity if target.anchors_in_graph else None
    groups = torch.cat([pa, anchor_rows])
    R_H = target.R_H_keys, target.R_H_values
    sub = SparseOverlap(
        group=groups,
        n_groups=A,
        group_cluster=target.anchor_cluster,
        target=R_H,
        k=target.k,
        temperature=temperature,
        dense_groups=False,
        backend=backend,
        multiplicity=multiplicity,
    )
    C = target.n_clusters
    M_H = target.M_H.reshape(-1)
    label = SparseOverlap(
        group=target.labels,
        n_groups=C,
        group_cluster=torch.arange(C, device=Y0.device),
        target=(torch.arange(C * C, device=Y0.device), M_H),
        k=target.knn_k,
        temperature=temperature,
        dense_groups=True,
        backend=backend,
    )
    m_z, m_y = candidate_widths(target, n, sparse.candidates_per_k)
    # planar (:mod:`.planar`): coordinates (2, ·), translations T (2, A)
    Y0t = Y0.T.contiguous()
    T = Y0t.new_zeros(2, A)
    delta = torch.zeros_like(Y0t)
    flat_pa, flat_rows = flat_columns(pa, A), flat_columns(anchor_rows, A)
    optimiser = Adam([T, delta], lr=lr)
    trace = Y0.new_zeros(steps)
    for step in range(steps):
        Yt = Y0t + T.index_select(1, pa) + delta
        Zt = with_anchors(Yt, flat_pa, members, anchor_rows)
        if step % refresh == 0:
            if step == 0 and candidates is not None:
                cand_z, cand_y = candidates
            else:  # (the lanes' thread is idle meanwhile: the search takes every core)
                cand_z, cand_y = nearest_rows(Zt.T.contiguous(), n, m_z, m_y, lanes.threads)
            sub.set_candidates(cand_z, N)
            label.set_candidates(cand_y, n)
        refresh_radius = step % radius_every == 0

        def sub_cluster_part(Zt=Zt, refresh_radius=refresh_radius):
            g_Z = torch.zeros_like(Zt)
            return sub(Zt, refresh_radius, overlap_weight, g_Z), g_Z

        def point_part(Yt=Yt, refresh_radius=refresh_radius):
            g_Y = torch.zeros_like(Yt)
            loss = label(Yt, refresh_radius, label_overlap_weight, g_Y)
            if knn_weight > 0:
                loss = loss + backend.kl_grad(
                    Yt,
                    target.points.edges,
                    negatives=negatives,
                    generator=generator,
                    exaggeration=1.0,
                    factor=knn_weight,
                    grad=g_Y,
                )
            if pull is not None:
                loss = loss + pull.add_planar(Yt, g_Y)
            return loss, g_Y

        (loss, g_Z), (point_loss, g_points) = lanes.both(sub_cluster_part, point_part)
        optimiser.step(translation_grads(g_Z, g_points, pa, flat_pa, members, flat_rows))
        trace[step] = loss + point_loss
    return (Y0t + T.index_select(1, pa) + delta).T.contiguous(), trace
