"""The gradient mode's loss terms over candidate pair lists (the sparse relaxation), in torch,
gradients written out: the same terms as :mod:`.losses` (there over every pair of a batch),
for one large preamble whose rows each keep their ``M`` nearest rows in 2-D.

* the soft-kNN overlap (:func:`soft_overlap_grad`; its pairs' bookkeeping is
  :class:`SparseOverlap`), for the sub-cluster graph and for the cluster level;
* the sampled ``KL(P || Q)`` (:func:`sampled_kl_grad`): the kNN edges attract, random pairs
  estimate the normaliser.

Planar layout (:mod:`.planar`): coordinates ``(2, N)``, pairs row by row as ``columns (R, M)``.
These are the torch backend's; the numba backend (:mod:`.numba_backend`) computes the same
formulas in loops. Both are held to autograd oracles (``tests/clusterplot/pair_cases.py``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch

from clustviz.clusterplot.overlap import radius_from_sorted
from clustviz.clusterplot.planar import add_pair_grad, add_pull, flat_columns, pairs
from clustviz.clusterplot.targets import KnnEdges, cross_pairs, lookup

if TYPE_CHECKING:
    from clustviz.clusterplot.backends import TorchBackend

__all__ = ["Loss", "OverlapPairs", "SparseOverlap", "sampled_kl_grad", "soft_overlap_grad"]

#: A term's loss: a tensor where the backend keeps it on the device (no sync per step).
Loss = float | torch.Tensor


@dataclass(slots=True)
class OverlapPairs:
    """The candidate pairs of one soft-kNN overlap term and the group pairs they add to.

    Edge weight of pair (i, j): ``σ((r_i - D_ij) / (T r_i))`` times ``weight`` (the folded
    rows' multiplicities, or None); edges are summed per group pair (``inverse``: pair → key),
    rows normalised over ``pair_a`` (``keep`` zeroes a group's own key, or None), ``cross``
    masks the keys that count (different clusters), ``target`` is R_H on the keys (0 off
    ``cross``); the loss is ``Σ |R - target| / count``."""

    columns: torch.Tensor  # (R, M) long: row i's candidate columns
    inverse: torch.Tensor  # (R · M,) long: each pair's key
    pair_a: torch.Tensor  # (P,) long: a key's row group
    cross: torch.Tensor  # (P,) float
    target: torch.Tensor  # (P,) float
    keep: torch.Tensor | None  # (P,) float
    weight: torch.Tensor | None  # (R, M) float
    n_groups: int
    count: float
    temperature: float
    width: int  # columns of the planar gradient the pairs scatter into
    # what a backend streams every step, made once per candidate set (prepare)
    flat: torch.Tensor | None = None  # torch: columns through flat_columns
    columns32: torch.Tensor | None = None  # numba: int32 (fewer bytes to stream)
    inverse32: torch.Tensor | None = None


def soft_overlap_grad(
    Zt: torch.Tensor,
    pairs_: OverlapPairs,
    radius: torch.Tensor,
    factor: float,
    grad: torch.Tensor,
) -> Loss:
    """``factor ·`` the soft-kNN overlap loss of the planar rows ``Zt (2, N)`` over
    ``pairs_`` (radii ``(R, 1)``); its gradient added into the planar ``grad``."""
    p = pairs_
    assert p.flat is not None, "prepare() the pairs first"
    diff, D = pairs(Zt, p.columns)
    scale = 1.0 / (p.temperature * radius)
    s = torch.sigmoid(torch.addcmul(radius * scale, D, scale, value=-1.0))
    w = s if p.weight is None else s * p.weight
    edges = torch.zeros_like(p.target).scatter_add_(0, p.inverse, w.reshape(-1))
    off = edges if p.keep is None else edges * p.keep
    rows = torch.zeros(p.n_groups, dtype=Zt.dtype, device=Zt.device)
    rows.scatter_add_(0, p.pair_a, off)
    # (the clamp stops the row-sum path: rows at 0 get no gradient)
    inv_rows = ((rows > 1e-12) / rows.clamp_min(1e-12)).index_select(0, p.pair_a)
    R = off * inv_rows * p.cross
    delta = R - p.target  # 0 off the counted pairs
    per_pair = factor / max(p.count, 1.0)
    loss = delta.abs().sum() * per_pair
    g_R = torch.sign(delta).mul_(per_pair)
    row_dot = torch.zeros_like(rows).scatter_add_(0, p.pair_a, g_R * R)
    g_off = g_R.sub_(row_dot.index_select(0, p.pair_a)).mul_(inv_rows)
    if p.keep is not None:
        g_off = g_off.mul_(p.keep)
    # -2 dL/dD_ij = -2 g_w · w (s - 1) / (T r): -2 folded into the per-row scale
    pull_per_d = (s - 1.0).mul_(w).mul_(scale * -2.0)
    g_w = g_off.index_select(0, p.inverse).view_as(w)
    add_pull(grad, p.flat, diff.mul_(g_w.mul_(pull_per_d)))
    return loss


def sampled_kl_grad(
    Yt: torch.Tensor,
    edges: KnnEdges,
    other: torch.Tensor,
    *,
    exaggeration: float,
    factor: float,
    grad: torch.Tensor,
    with_loss: bool = True,
) -> Loss:
    """``factor ·`` the sampled ``KL(P || Q)`` of the planar ``Yt (2, n)``, its gradient
    added into ``grad``: the kNN edges attract (each visited once with twice the weight:
    both directions count alike), the random pairs ``other (n, negatives)`` estimate the
    normaliser ``log Σ q``. The loss, or 0.0 when not ``with_loss``."""
    n, negatives = Yt.shape[1], other.shape[1]
    diff, D = pairs(Yt, edges.neighbours)
    edge_weight = exaggeration / edges.neighbours.numel()
    add_pair_grad(grad, edges.flat, (factor * edge_weight) / (1.0 + D), diff)
    if with_loss:
        attraction = torch.log1p(D).sum() * (factor * edge_weight)
    diff, D = pairs(Yt, other)
    w = 1.0 / (1.0 + D)
    scale = (n - 1) / negatives  # each sample stands for (n - 1) / negatives pairs
    total = w.sum() * scale
    add_pair_grad(grad, flat_columns(other, n), (w * w) * (-factor * scale) / total, diff)
    return attraction + torch.log(total) * factor if with_loss else 0.0


class SparseOverlap:
    """A soft-kNN overlap term over candidate lists, in the fit's backend: the pairs'
    bookkeeping for each new candidate set and the detached radii (the same term as
    :class:`~.losses.SoftOverlap`, sparse in pairs)."""

    def __init__(
        self,
        *,
        group: torch.Tensor,  # (N,) long: each row's group
        n_groups: int,
        group_cluster: torch.Tensor,  # (G,) long
        target: tuple[torch.Tensor, torch.Tensor],  # R_H (or M_H) sparse: sorted keys, values
        k: int,
        temperature: float,
        dense_groups: bool,  # every (group, group) key exists (the cluster level)
        backend: TorchBackend,
        multiplicity: torch.Tensor | None = None,  # (N,) folded rows (folding) or None
    ) -> None:
        self.backend = backend
        self.group, self.G, self.k, self.temperature = group, n_groups, k, temperature
        self.group_cluster, self.dense = group_cluster, dense_groups
        self.target_keys, self.target_values = target
        self.multiplicity = multiplicity
        self.count = cross_pairs(group_cluster)
        self.radius: torch.Tensor | None = None

    def set_candidates(self, cand: torch.Tensor, width: int) -> None:
        """Pair bookkeeping for new candidates ``(R, M)``: the union of the candidates' group
        pairs and the target's support (elsewhere both sides are 0); ``width``: columns of the
        planar gradient the pairs scatter into."""
        rows = torch.arange(cand.shape[0], device=cand.device).unsqueeze(1).expand_as(cand)
        keys = self.group[rows] * self.G + self.group[cand]
        # a row's pairs sorted by group pair: the numba loops sum equal keys in a register
        keys, order = keys.sort(dim=1)
        keys, cand = keys.reshape(-1), cand.gather(1, order)
        if self.dense:
            inverse, pair_keys = keys, torch.arange(self.G * self.G, device=keys.device)
        else:
            pair_keys, inverse = torch.unique(
                torch.cat([keys, self.target_keys]), return_inverse=True
            )
            inverse = inverse[: len(keys)]
        pair_a, pair_b = pair_keys // self.G, pair_keys % self.G
        dtype = self.target_values.dtype
        cross = (self.group_cluster[pair_a] != self.group_cluster[pair_b]).to(dtype)
        multiplicity = self.multiplicity
        self.counts = None if multiplicity is None else multiplicity[cand]  # (R, M)
        self.pairs = self.backend.prepare(
            OverlapPairs(
                columns=cand,
                inverse=inverse,
                pair_a=pair_a,
                cross=cross,
                # 0 where a pair does not count, as R is: R - target needs no masking
                target=lookup(self.target_keys, self.target_values, pair_keys) * cross,
                keep=(pair_a != pair_b).to(dtype) if not self.dense else None,
                weight=None
                if multiplicity is None or self.counts is None
                else multiplicity[: cand.shape[0], None] * self.counts,
                n_groups=self.G,
                count=self.count,
                temperature=self.temperature,
                width=width,
            )
        )
        self.radius = None

    def __call__(
        self, Zt: torch.Tensor, refresh_radius: bool, factor: float, grad: torch.Tensor
    ) -> Loss:
        """``factor ·`` the loss of the planar rows ``Zt (2, N)``, its gradient added into the
        planar ``grad`` (:meth:`~.backends.TorchBackend.soft_overlap_grad`)."""
        if refresh_radius or self.radius is None:
            R, M = self.pairs.columns.shape
            ordered, where = self.backend.smallest(Zt, self.pairs, min(self.k + 1, M))
            counts = None if self.counts is None else self.counts.gather(1, where)
            multiplicity = None if self.multiplicity is None else self.multiplicity[:R]
            self.radius = radius_from_sorted(ordered, self.k, counts, multiplicity)
        return self.backend.soft_overlap_grad(Zt, self.pairs, self.radius, factor, grad)
