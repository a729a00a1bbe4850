"""The original ClusterPlot's relaxation rule (``mode="greedy"``), vectorised over preambles.

Per iteration, per preamble, draw ``batch_size`` pairs among the ``top_greedy`` largest
``|D| = |R_H - R_L|`` (hard 2-D kNN) and translate sub-cluster ``a`` rigidly by
``sign(D_ab) · lr · |D_ab| · (p_b - p_a)`` (without ``|D_ab|`` if not ``magnitude_step``):
towards ``b`` when it overlaps too little in 2-D, away when too much. Kept so the two modes can
be compared (:mod:`.relaxation` has ours).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from clustviz.clusterplot.discrepancy import hard_R_L
from clustviz.clusterplot.overlap import overlap_pair_mask
from clustviz.clusterplot.targets import OverlapTarget

__all__ = ["GreedySettings", "greedy_layout"]


@dataclass(frozen=True, slots=True)
class GreedySettings:
    """The greedy rule's settings (the original's names: :class:`~.params.ClusterPlotParams`)."""

    n_iter: int
    lr: float
    batch_size: int
    top_greedy: int
    magnitude_step: bool
    seed: int


def _translate(Y0: torch.Tensor, T: torch.Tensor, point_anchor: torch.Tensor) -> torch.Tensor:
    return Y0 + T.gather(1, point_anchor.unsqueeze(-1).expand(*point_anchor.shape, 2))


def greedy_layout(
    Y0: torch.Tensor,
    target: OverlapTarget,
    settings: GreedySettings,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The original's rule; layout and mean-|D| trace ``(n_iter, B)``.

    Each preamble draws its pairs from its own generator seeded with ``settings.seed``: the
    draws do not depend on the batch."""
    n_iter, lr, batch_size = settings.n_iter, settings.lr, settings.batch_size
    top_greedy, magnitude_step, seed = settings.top_greedy, settings.magnitude_step, settings.seed
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
