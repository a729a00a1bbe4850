"""Anchors: sub-clusters inside each cluster, batched over preambles.

Three methods, all ending the same way (as the original): every point is reassigned to the
nearest final centroid of its own cluster, empty sub-clusters are dropped and centroids are the
means of their members. Anchors are ordered by (cluster, first member).

* ``birch`` — the original's BIRCH with a branching factor that never splits is a sequential
  *leader* pass: a point joins the nearest sub-cluster of its cluster if the merged radius
  ``sqrt(SS/N - |LS/N|²)`` stays ≤ threshold, else it opens a new one. The pass is sequential in
  the position of a point inside its cluster; it runs vectorised over all clusters of all
  preambles at once (so ``max cluster size`` small steps, not ``n``).
* ``kmeans`` — ``anchors_per_cluster`` centres per cluster, farthest-point init (deterministic)
  then Lloyd iterations, all clusters at once.
* ``points`` — every point is its own anchor.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch

from clustviz.clusterplot.batch import PaddedBatch, pairwise_sq_dists

__all__ = ["Anchors", "compute_anchors"]

_INF = float("inf")


@dataclass(slots=True)
class Anchors:
    """Sub-clusters of a batch. Padding anchors have ``mask`` False and cluster 0."""

    centroids: torch.Tensor  # (B, A, d) high-D means of the members
    mask: torch.Tensor  # (B, A) bool
    cluster: torch.Tensor  # (B, A) long: sub-cluster -> cluster
    point_anchor: torch.Tensor  # (B, n) long: point -> sub-cluster (0 at padding points)
    count: torch.Tensor  # (B,) long: anchors per preamble

    @property
    def size(self) -> int:
        return int(self.mask.shape[1])


def compute_anchors(
    batch: PaddedBatch,
    method: Literal["birch", "kmeans", "points"],
    *,
    threshold: float = 0.3,
    threshold_mode: Literal["absolute", "relative"] = "absolute",
    per_cluster: int = 3,
    kmeans_iter: int = 20,
    gram: torch.Tensor | None = None,
) -> Anchors:
    """Anchors of every preamble of ``batch`` (see the module docstring for the methods).

    ``gram`` (``(B, n, n)``, ``X Xᵀ``): the leader pass works on it; pass it when the caller
    needs it too (the large-n path), so the ``n² d`` product is made once."""
    if method == "points":
        slot = torch.arange(batch.X.shape[1], device=batch.X.device).expand_as(batch.labels)
        return _finish(batch, slot.contiguous(), batch.labels.clone(), batch.X.shape[1])
    if method == "birch":  # reassigned already
        return _finish(batch, *_birch_slots(batch, threshold, threshold_mode, gram))
    if method == "kmeans":
        slot, slot_cluster, n_slots = _kmeans_slots(batch, per_cluster, kmeans_iter)
    else:
        raise ValueError(f"unknown anchors method {method!r}")
    centroids = _means(batch, slot, n_slots)
    slot = _reassign(batch, centroids, slot_cluster, _slot_used(batch, slot, n_slots))
    return _finish(batch, slot, slot_cluster, n_slots)


def _rank_in_cluster(batch: PaddedBatch) -> torch.Tensor:
    """Position of each point among the points of its cluster, in input order: ``(B, n)``."""
    B, n = batch.labels.shape
    onehot = torch.zeros(B, n, batch.max_clusters, device=batch.X.device)
    onehot.scatter_(2, batch.labels.unsqueeze(-1), batch.mask.unsqueeze(-1).float())
    rank = onehot.cumsum(1).gather(2, batch.labels.unsqueeze(-1)).squeeze(-1) - 1
    return rank.long()


def _birch_slots(
    batch: PaddedBatch,
    threshold: float,
    mode: Literal["absolute", "relative"],
    gram: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor, int]:
    """Leader pass, then every point to the nearest final centroid of its cluster. Slot ``i``
    is the sub-cluster opened by point ``i``; returns ``(slot (B, n), slot_cluster, n)``.

    ``x · LS_s = Σ_{j in s} x · x_j`` is kept from the Gram matrix and updated one column per
    join, so the final reassignment needs no d-dimensional product. Clusters never interact,
    so the pass runs either per cluster (:func:`_leader_per_cluster`: m steps for the largest
    cluster's m points, ``(B, C, m, m)`` state) or over all points at once
    (:func:`_leader_flat`: n steps, ``(B, n, n)`` state); the smaller state wins. One large
    preamble (n = 3000, C = 30) takes the first, many preambles of 40 guesses the second
    (61 demo preambles on one thread: 42–59 → 12–14 ms).
    """
    X, labels, mask = batch.X, batch.labels, batch.mask
    n = X.shape[1]
    C = batch.max_clusters
    rank = _rank_in_cluster(batch)  # (B, n)
    m = int(rank[mask].max()) + 1
    thr_sq = _thresholds_sq(batch, threshold, mode)  # (B, C)
    if gram is None:
        gram = X @ X.transpose(1, 2)
    if n * n <= C * m * m:
        return _leader_flat(batch, thr_sq, gram), labels.clone(), n
    return _leader_per_cluster(batch, thr_sq, gram, rank, m), labels.clone(), n


def _leader_flat(batch: PaddedBatch, thr_sq: torch.Tensor, gram: torch.Tensor) -> torch.Tensor:
    """:func:`_birch_slots` over all points at once, in input order: a point only looks at the
    open slots of its own cluster. Slot n is a dummy for padding points."""
    labels, mask = batch.labels, batch.mask
    B = labels.shape[0]
    norms = gram.diagonal(dim1=1, dim2=2)  # (B, n): |x|²
    point_thr = thr_sq.gather(1, labels)  # (B, n)
    slot_cluster = torch.cat([labels, labels.new_full((B, 1), -1)], 1)  # slot s: point s's
    GM, count, linear_sq, active = _leader_flat_loop(gram, mask, labels, slot_cluster, point_thr)
    # each point to the nearest final centroid LS/N of its cluster
    safe = count.clamp_min(1.0).unsqueeze(1)  # (B, 1, n + 1)
    dist_sq = norms.unsqueeze(-1) - 2 * GM / safe + linear_sq.unsqueeze(1) / safe**2
    allowed = active.unsqueeze(1) & (slot_cluster.unsqueeze(1) == labels.unsqueeze(2))
    slot = dist_sq.masked_fill(~allowed, _INF).argmin(-1)  # (B, n)
    return torch.where(mask, slot, 0)


def _leader_per_cluster(
    batch: PaddedBatch, thr_sq: torch.Tensor, gram: torch.Tensor, rank: torch.Tensor, m: int
) -> torch.Tensor:
    """:func:`_birch_slots` per cluster, on each cluster's own block of the Gram matrix:
    ``GM (B, C, m, m + 1)`` (slot m: a dummy for absent points), a step costs ``O(C m)`` per
    preamble."""
    X, labels, mask = batch.X, batch.labels, batch.mask
    B, n, _ = X.shape
    C = batch.max_clusters
    device = X.device
    # order[b, c, t]: index of the t-th point of cluster c (n where absent); padding points
    # are written to one extra column that is dropped.
    width = C * m
    order = torch.full((B, width + 1), n, dtype=torch.long, device=device)
    flat = torch.where(mask, labels * m + rank, width)
    order.scatter_(1, flat, torch.where(mask, _arange_like(labels, n), n))
    order = order[:, :width].view(B, C, m)
    present = order < n  # (B, C, m)
    rows = order.clamp_max(n - 1)
    block_index = (rows.unsqueeze(-1) * n + rows.unsqueeze(-2)).view(B, -1)
    block = gram.reshape(B, n * n).gather(1, block_index).view(B, C, m, m)
    block = block * (present.unsqueeze(-1) & present.unsqueeze(-2))  # absent points: zeros
    norms = block.diagonal(dim1=2, dim2=3)  # (B, C, m): |x|²

    GM, count, linear_sq, active = _leader_per_cluster_loop(present, norms, block, thr_sq)
    # each point to the nearest final centroid LS/N of its cluster
    safe = count.clamp_min(1.0).unsqueeze(2)
    dist_sq = norms.unsqueeze(-1) - 2 * GM / safe + (linear_sq.unsqueeze(2) / safe**2)
    local = dist_sq.masked_fill(~active.unsqueeze(2), _INF).argmin(-1)  # (B, C, m)
    opener = order.gather(2, local.clamp_max(m - 1))  # a slot is named by its first point
    point_slot = torch.zeros(B, n + 1, dtype=torch.long, device=device)
    point_slot.scatter_(1, order.view(B, -1), opener.view(B, -1))  # absent: column n
    return torch.where(mask, point_slot[:, :n], 0)


def _arange_like(labels: torch.Tensor, n: int) -> torch.Tensor:
    return torch.arange(n, device=labels.device).expand_as(labels).contiguous()


def _thresholds_sq(
    batch: PaddedBatch, threshold: float, mode: Literal["absolute", "relative"]
) -> torch.Tensor:
    """Squared radius threshold per cluster ``(B, C)``; relative: times the cluster's RMS radius."""
    B, C = batch.size, batch.max_clusters
    if mode == "absolute":
        return batch.X.new_full((B, C), threshold**2)
    onehot = torch.zeros(B, batch.X.shape[1], C, device=batch.X.device)
    onehot.scatter_(2, batch.labels.unsqueeze(-1), batch.mask.unsqueeze(-1).float())
    sizes = onehot.sum(1).clamp_min(1.0)  # (B, C)
    means = onehot.transpose(1, 2) @ batch.X / sizes.unsqueeze(-1)  # (B, C, d)
    centred = batch.X - means.gather(1, batch.labels.unsqueeze(-1).expand_as(batch.X))
    sq = (centred * centred).sum(-1) * batch.mask  # (B, n)
    mean_sq = (onehot * sq.unsqueeze(-1)).sum(1) / sizes  # (B, C)
    return threshold**2 * mean_sq


def _kmeans_slots(
    batch: PaddedBatch, per_cluster: int, n_iter: int
) -> tuple[torch.Tensor, torch.Tensor, int]:
    """Slots ``c * m + j``: farthest-point init from the point nearest the cluster mean, Lloyd."""
    X, labels, mask = batch.X, batch.labels, batch.mask
    B, n, d = X.shape
    C, m = batch.max_clusters, per_cluster
    device = X.device
    same = labels.unsqueeze(2) == labels.unsqueeze(1)  # (B, n, n)
    valid_pair = same & mask.unsqueeze(2) & mask.unsqueeze(1)
    dists = pairwise_sq_dists(X)  # (B, n, n)
    onehot = torch.zeros(B, n, C, device=device)
    onehot.scatter_(2, labels.unsqueeze(-1), mask.unsqueeze(-1).float())
    sizes = onehot.sum(1)  # (B, C)
    means = onehot.transpose(1, 2) @ X / sizes.clamp_min(1.0).unsqueeze(-1)
    to_mean = ((X - means.gather(1, labels.unsqueeze(-1).expand_as(X))) ** 2).sum(-1)
    # first centre of each cluster: its point nearest the mean
    score = to_mean.masked_fill(~mask, _INF).unsqueeze(-1).expand(B, n, C)
    score = score.masked_fill(onehot == 0, _INF)
    centres = [score.argmin(1)]  # list of (B, C) point indices
    nearest = dists.gather(2, _point_of_cluster(labels, centres[0])).clone()  # (B, n, 1)
    for _ in range(1, m):  # m small; vectorised over clusters and preambles
        far = nearest.squeeze(-1).masked_fill(~mask, -1.0).unsqueeze(-1).expand(B, n, C)
        far = far.masked_fill(onehot == 0, -1.0)
        centres.append(far.argmax(1))
        nearest = torch.minimum(nearest, dists.gather(2, _point_of_cluster(labels, centres[-1])))
    centre_idx = torch.stack(centres, 2).view(B, C * m)  # (B, C*m)
    slot_cluster = torch.arange(C, device=device).repeat_interleave(m).expand(B, -1).clone()
    # a cluster of size s < m gets s distinct centres only: the others are marked unused
    slot_rank = torch.arange(m, device=device).repeat(C).expand(B, -1)
    slot_ok = slot_rank < sizes.gather(1, slot_cluster).long()
    centroids = X.gather(1, centre_idx.unsqueeze(-1).expand(B, C * m, d))
    del valid_pair
    slot = torch.zeros_like(labels)
    for _ in range(n_iter):
        slot = _reassign(batch, centroids, slot_cluster, slot_ok)
        new = _means(batch, slot, C * m)
        used = _slot_used(batch, slot, C * m)
        centroids = torch.where(used.unsqueeze(-1), new, centroids)
    return slot, slot_cluster, C * m


def _point_of_cluster(labels: torch.Tensor, centre: torch.Tensor) -> torch.Tensor:
    """For each point, the index of its cluster's centre: ``(B, n, 1)``."""
    return centre.gather(1, labels).unsqueeze(-1)


def _means(batch: PaddedBatch, slot: torch.Tensor, n_slots: int) -> torch.Tensor:
    """Mean of the members of each slot ``(B, S, d)`` (zeros for empty slots)."""
    B, n, d = batch.X.shape
    weight = batch.mask.float()
    sums = batch.X.new_zeros(B, n_slots, d).scatter_add_(
        1, slot.unsqueeze(-1).expand(B, n, d), batch.X * weight.unsqueeze(-1)
    )
    counts = batch.X.new_zeros(B, n_slots).scatter_add_(1, slot, weight)
    return sums / counts.clamp_min(1.0).unsqueeze(-1)


def _slot_used(batch: PaddedBatch, slot: torch.Tensor, n_slots: int) -> torch.Tensor:
    counts = batch.X.new_zeros(batch.size, n_slots).scatter_add_(1, slot, batch.mask.float())
    return counts > 0


def _reassign(
    batch: PaddedBatch, centroids: torch.Tensor, slot_cluster: torch.Tensor, slot_ok: torch.Tensor
) -> torch.Tensor:
    """Each point to the nearest usable centroid of its own cluster: ``(B, n)``."""
    dist = pairwise_sq_dists(batch.X, centroids)  # (B, n, S)
    allowed = (batch.labels.unsqueeze(2) == slot_cluster.unsqueeze(1)) & slot_ok.unsqueeze(1)
    slot = dist.masked_fill(~allowed, _INF).argmin(-1)
    return torch.where(batch.mask, slot, 0)


def _finish(
    batch: PaddedBatch, slot: torch.Tensor, slot_cluster: torch.Tensor, n_slots: int
) -> Anchors:
    """Drop empty slots, order anchors by (cluster, slot), recompute centroids as means."""
    B = batch.size
    used = _slot_used(batch, slot, n_slots)  # (B, S)
    slots = torch.arange(n_slots, device=slot.device).expand(B, n_slots)
    key = torch.where(used, slot_cluster * n_slots + slots, (batch.max_clusters + 1) * n_slots)
    order = key.argsort(1)  # used slots first, by (cluster, slot)
    count = used.sum(1)
    A = int(count.max())
    new_id = torch.empty_like(order).scatter_(1, order, slots.contiguous())
    point_anchor = torch.where(batch.mask, new_id.gather(1, slot), 0)
    anchor_mask = torch.arange(A, device=slot.device).expand(B, A) < count.unsqueeze(1)
    cluster = torch.where(anchor_mask, slot_cluster.gather(1, order[:, :A]), 0)
    centroids = _means(batch, point_anchor, A)
    return Anchors(
        centroids=centroids,
        mask=anchor_mask,
        cluster=cluster,
        point_anchor=point_anchor,
        count=count,
    )


def _leader_flat_loop(
    gram: torch.Tensor,
    mask: torch.Tensor,
    labels: torch.Tensor,
    slot_cluster: torch.Tensor,
    point_thr: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """The leader pass over all points of each preamble in input order (see
    :func:`_leader_flat`): ``(GM, count, linear_sq, active)`` of the slots, slot n a
    dummy for padding. ``gram (B, n, n)``, ``mask``/``labels``/``point_thr (B, n)``,
    ``slot_cluster (B, n + 1)``."""
    B, n = labels.shape[0], labels.shape[1]
    norms = gram.diagonal(dim1=1, dim2=2)  # (B, n): |x|²
    GM = torch.zeros(B, n, n + 1, dtype=gram.dtype, device=gram.device)  # x_j · LS_s
    count = torch.zeros(B, n + 1, dtype=gram.dtype, device=gram.device)
    linear_sq = torch.zeros_like(count)  # |LS|²
    squares = torch.zeros_like(count)  # SS
    active = torch.zeros(B, n + 1, dtype=torch.bool, device=gram.device)
    for t in range(n):  # sequential by definition; vectorised over preambles
        here = mask[:, t : t + 1]  # (B, 1)
        xx = norms[:, t : t + 1]
        dot = GM[:, t]  # (B, n + 1)
        safe = count.clamp_min(1.0)
        dist_sq = xx - 2 * dot / safe + linear_sq / safe**2
        allowed = active & (slot_cluster == labels[:, t : t + 1])
        nearest = dist_sq.masked_fill(~allowed, float("inf")).argmin(-1, keepdim=True)
        n_new = count.gather(1, nearest) + 1
        ls_sq_new = linear_sq.gather(1, nearest) + 2 * dot.gather(1, nearest) + xx
        radius_sq = (squares.gather(1, nearest) + xx) / n_new - ls_sq_new / n_new**2
        merge = allowed.any(-1, keepdim=True) & here & (radius_sq <= point_thr[:, t : t + 1])
        opened = torch.full_like(nearest, t).masked_fill_(~here, n)
        target = torch.where(merge, nearest, opened)  # (B, 1)
        count.scatter_add_(1, target, here.to(gram.dtype))
        GM.scatter_add_(2, target.unsqueeze(1).expand(B, n, 1), gram[:, :, t : t + 1])
        squares.scatter_add_(1, target, xx)
        linear_sq.scatter_(1, target, torch.where(merge, ls_sq_new, xx))
        active.scatter_(1, target, here)
        active[:, n] = False
    return GM, count, linear_sq, active


def _leader_per_cluster_loop(
    present: torch.Tensor, norms: torch.Tensor, block: torch.Tensor, thr_sq: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """The leader pass per cluster (see :func:`_leader_per_cluster`):
    ``(GM, count, linear_sq, active)`` of the slots, slot m a dummy for absent points.
    ``present``/``norms (B, C, m)``, ``block (B, C, m, m)`` the clusters' Gram blocks,
    ``thr_sq (B, C)``."""
    B, C, m = present.shape[0], present.shape[1], present.shape[2]
    GM = torch.zeros(B, C, m, m + 1, dtype=block.dtype, device=block.device)  # x_t · LS_u
    count = torch.zeros(B, C, m + 1, dtype=block.dtype, device=block.device)
    linear_sq = torch.zeros_like(count)  # |LS|²
    squares = torch.zeros_like(count)  # SS
    active = torch.zeros(B, C, m + 1, dtype=torch.bool, device=block.device)
    for t in range(m):  # sequential by definition; vectorised over clusters and preambles
        here = present[:, :, t].unsqueeze(-1)  # (B, C, 1)
        xx = norms[:, :, t].unsqueeze(-1)
        dot = GM[:, :, t]  # (B, C, m + 1)
        safe = count.clamp_min(1.0)
        dist_sq = xx - 2 * dot / safe + linear_sq / safe**2
        nearest = dist_sq.masked_fill(~active, float("inf")).argmin(-1, keepdim=True)
        n_new = count.gather(2, nearest) + 1
        ls_sq_new = linear_sq.gather(2, nearest) + 2 * dot.gather(2, nearest) + xx
        radius_sq = (squares.gather(2, nearest) + xx) / n_new - ls_sq_new / n_new**2
        merge = active.any(-1, keepdim=True) & here & (radius_sq <= thr_sq.unsqueeze(-1))
        opened = torch.full_like(nearest, t).masked_fill_(~here, m)
        target = torch.where(merge, nearest, opened)  # (B, C, 1)
        count.scatter_add_(2, target, here.to(block.dtype))
        # GM[..., s] += Gram column of x for the slot s that x joins (the block is symmetric)
        GM.scatter_add_(3, target.unsqueeze(-1).expand(B, C, m, 1), block[:, :, :, t : t + 1])
        squares.scatter_add_(2, target, xx)
        linear_sq.scatter_(2, target, torch.where(merge, ls_sq_new, xx))
        active.scatter_(2, target, here)
        active[:, :, m] = False
    return GM, count, linear_sq, active
