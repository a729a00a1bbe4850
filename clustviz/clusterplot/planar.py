"""Planar coordinates of the sparse strategy: ``(2, N)`` tensors, pairs given row by row.

Inside the sparse strategy's loops a layout is *planar*, ``Zt (2, N)``: pair differences are two
contiguous ``(R, M)`` planes, and gathers, reductions and scatters run on plain rows (the
interleaved ``(R, M, 2)`` form measured 4.6× slower for the same pair gradient on the CPU).
Pairs are given row by row as ``columns (R, M)`` for rows ``0..R-1``; ``flat`` are the columns
through :func:`flat_columns` (plane 0 first), so one 1-D ``scatter_add_`` serves both planes.

Plain torch on any device; both backends (:mod:`.backends`) use these for what they share.
"""

from __future__ import annotations

import torch

__all__ = [
    "add_pair_grad",
    "add_pull",
    "flat_columns",
    "pairs",
    "translation_grads",
    "with_anchors",
]


def flat_columns(columns: torch.Tensor, width: int) -> torch.Tensor:
    """Indices into the flat view of a planar ``(2, width)`` tensor for ``columns (...)``:
    ``(2 · numel,)``, plane 0 first."""
    flat = columns.reshape(1, -1) + width * torch.arange(2, device=columns.device).unsqueeze(1)
    return flat.reshape(-1)


def pairs(Zt: torch.Tensor, columns: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``diff = z_i - z_j (2, R, M)`` and ``D = |diff|² (R, M)`` for rows ``i < R`` of the
    planar ``Zt (2, N)`` and their ``columns (R, M)``."""
    R, M = columns.shape[0], columns.shape[1]
    # in place where it can be: a fresh (2, R, M) buffer per op measured 2-3× slower per
    # element once the planes outgrow the L2 cache
    diff = Zt.index_select(1, columns.reshape(-1)).view(2, R, M)
    torch.sub(Zt[:, :R].unsqueeze(2), diff, out=diff)
    return diff, torch.square(diff[0]).addcmul_(diff[1], diff[1])


def add_pair_grad(
    grad: torch.Tensor, flat: torch.Tensor, coef: torch.Tensor, diff: torch.Tensor
) -> None:
    """Add ``dL/dz`` of ``Σ coef_ij · |z_i - z_j|²`` into the planar ``grad (2, N)``:
    ``coef (R, M)``, ``diff = z_i - z_j (2, R, M)`` (overwritten), ``flat`` the columns j.
    The rows' side is a plain sum; only the columns' side scatters."""
    add_pull(grad, flat, diff.mul_(coef * -2.0))


def add_pull(grad: torch.Tensor, flat: torch.Tensor, pull: torch.Tensor) -> None:
    """Add the pairs' ``pull = -dL/dz_j (2, R, M)`` into the planar ``grad``: ``+pull`` at the
    columns j (``flat``), ``-Σ_j pull`` at the rows (``dL/dz_i = -dL/dz_j``)."""
    grad[:, : pull.shape[1]] -= pull.sum(2)
    grad.view(-1).scatter_add_(0, flat, pull.reshape(-1))


def with_anchors(
    Yt: torch.Tensor, flat_pa: torch.Tensor, members: torch.Tensor, anchor_rows: torch.Tensor
) -> torch.Tensor:
    """The folded planar rows ``[Y; anchors[anchor_rows]]`` ``(2, n + A2)`` of ``Yt (2, n)``:
    an anchor is the mean of its members (``members (A,)`` counts, at least 1; ``flat_pa``: each
    point's anchor through :func:`flat_columns` with ``width = A``)."""
    if anchor_rows.numel() == 0:
        return Yt
    A = members.shape[0]
    sums = torch.zeros(2 * A, dtype=Yt.dtype, device=Yt.device)
    sums = sums.scatter_add_(0, flat_pa, Yt.reshape(-1)).view(2, A)
    return torch.cat([Yt, (sums / members).index_select(1, anchor_rows)], 1)


def translation_grads(
    g_Z: torch.Tensor,
    g_points: torch.Tensor,
    pa: torch.Tensor,
    flat_pa: torch.Tensor,
    members: torch.Tensor,
    flat_rows: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(g_T (2, A), g_Y (2, n))``: the gradients of the sub-cluster translations and of the
    per-point moves, from the planar gradient of the folded rows ``g_Z (2, n + A2)`` plus the
    points' own terms ``g_points (2, n)``. An anchor's row passes its gradient to its members
    (``flat_rows``: the anchors with rows, through :func:`flat_columns`, ``width = A``)."""
    n, A = g_points.shape[1], members.shape[0]
    g_Y = g_Z[:, :n] + g_points
    if flat_rows.numel() > 0:
        g_A = torch.zeros(2 * A, dtype=g_Z.dtype, device=g_Z.device)
        g_A = g_A.scatter_add_(0, flat_rows, g_Z[:, n:].reshape(-1)).view(2, A)
        g_Y = g_Y + (g_A / members).index_select(1, pa)
    g_T = torch.zeros(2 * A, dtype=g_Z.dtype, device=g_Z.device)
    return g_T.scatter_add_(0, flat_pa, g_Y.reshape(-1)).view(2, A), g_Y
