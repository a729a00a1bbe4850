"""ClusterPlot's hot loops (the large-n path's pair kernels, the leader pass), run as
TorchScript where it is available.

A relaxation step of the large-n path is about 200 small torch ops over 10⁴–10⁵ pairs. Called
from Python each op costs a few microseconds of dispatch with the GIL held: at n = 3000 that
was a third of a step, and it serialised the two lanes (:mod:`.lanes`) on the GIL. The same
functions run as TorchScript execute their ops from C++ with the GIL released: a step's
kernels run on both cores at once and dispatch less (n = 3000 relaxation: see
``scripts/bench_clusterplot.py``).

``torch.jit.script`` is deprecated in favour of ``torch.compile``, which needs a C++ toolchain
at run time and compiles for tens of seconds per shape; if scripting is unavailable or fails,
the very same functions run eagerly (same results, slower). ``CLUSTVIZ_NO_TORCHSCRIPT=1``
forces the eager path. Callers run :func:`prepare` first and call the kernels through this
module (``kernels.pairs(...)``), so they get the scripted versions once made.

Planar layout: coordinates are ``(2, N)``; pairs are given row by row as ``columns (R, M)``
for rows ``0..R-1``; ``flat`` are the columns through :func:`flat_columns` (plane 0 first), so
one 1-D ``scatter_add_`` serves both planes.
"""

import os
import warnings
from typing import Any, Optional, Tuple  # noqa: UP035 (TorchScript reads these annotations)

import torch

__all__ = [
    "EAGER",
    "SCRIPTED",
    "adam_update",
    "add_pair_grad",
    "add_pull",
    "flat_columns",
    "kl_attraction",
    "kl_repulsion",
    "leader_flat",
    "leader_per_cluster",
    "pairs",
    "prepare",
    "soft_overlap_grad",
    "translation_grads",
    "with_anchors",
]


def flat_columns(columns: torch.Tensor, width: int) -> torch.Tensor:
    """Indices into the flat view of a planar ``(2, width)`` tensor for ``columns (...)``:
    ``(2 · numel,)``, plane 0 first."""
    flat = columns.reshape(1, -1) + width * torch.arange(2, device=columns.device).unsqueeze(1)
    return flat.reshape(-1)


def pairs(Zt: torch.Tensor, columns: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:  # noqa: UP006
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
    grad.view(-1).scatter_add_(0, flat, pull.view(-1))


def soft_overlap_grad(
    Zt: torch.Tensor,
    columns: torch.Tensor,
    flat: torch.Tensor,
    radius: torch.Tensor,
    temperature: float,
    weight: Optional[torch.Tensor],  # noqa: UP045
    inverse: torch.Tensor,
    keep: Optional[torch.Tensor],  # noqa: UP045
    pair_a: torch.Tensor,
    cross: torch.Tensor,
    target: torch.Tensor,
    n_groups: int,
    count: float,
    factor: float,
    grad: torch.Tensor,
) -> torch.Tensor:
    """``factor ·`` the soft-kNN overlap loss ``Σ |R - target| / count`` over candidate pairs,
    its gradient added into the planar ``grad``; returns the loss.

    Edge weight of pair (i, j): ``σ((r_i - D_ij) / (T r_i))`` (times ``weight``, the folded
    rows' multiplicities); edges are summed per group pair (``inverse``: pair → key), rows
    normalised over ``pair_a`` (``keep`` zeroes a group's own key), ``cross`` masks the pairs
    that count (different clusters), ``target`` is R_H on the keys (0 off ``cross``)."""
    diff, D = pairs(Zt, columns)
    scale = 1.0 / (temperature * radius)
    s = torch.sigmoid(torch.addcmul(radius * scale, D, scale, value=-1.0))
    w = s if weight is None else s * weight
    edges = torch.zeros_like(target).scatter_add_(0, inverse, w.reshape(-1))
    off = edges if keep is None else edges * keep
    rows = torch.zeros(n_groups, dtype=Zt.dtype, device=Zt.device).scatter_add_(0, pair_a, off)
    # (the clamp stops the row-sum path: rows at 0 get no gradient)
    inv_rows = ((rows > 1e-12) / rows.clamp_min(1e-12)).index_select(0, pair_a)
    R = off * inv_rows * cross
    delta = R - target  # 0 off the counted pairs
    count = max(count, 1.0)
    loss = delta.abs().sum() * (factor / count)
    g_R = torch.sign(delta).mul_(factor / count)
    row_dot = torch.zeros_like(rows).scatter_add_(0, pair_a, g_R * R).index_select(0, pair_a)
    g_off = g_R.sub_(row_dot).mul_(inv_rows)
    if keep is not None:
        g_off = g_off.mul_(keep)
    # -2 dL/dD_ij = -2 g_w · w (s - 1) / (T r): -2 folded into the per-row scale (one pass less)
    pull_per_d = (s - 1.0).mul_(w).mul_(scale * -2.0)
    add_pull(grad, flat, diff.mul_(g_off.index_select(0, inverse).view_as(w).mul_(pull_per_d)))
    return loss


def kl_attraction(
    Yt: torch.Tensor,
    neighbours: torch.Tensor,
    flat_neighbours: torch.Tensor,
    exaggeration: float,
    factor: float,
    grad: torch.Tensor,
) -> torch.Tensor:
    """``factor ·`` the kNN edges' part of the sampled ``KL(P || Q)`` of the planar
    ``Yt (2, n)``, its gradient added into ``grad``; returns the loss.

    P puts ``1 / (2E)`` on both directions of the E kNN edges ``neighbours (n, knn_k)``: the
    two directions contribute equally, so each edge is visited once with twice the weight."""
    diff, D = pairs(Yt, neighbours)
    edge_weight = exaggeration / neighbours.numel()  # both directions of an edge
    add_pair_grad(grad, flat_neighbours, (factor * edge_weight) / (1.0 + D), diff)
    return torch.log1p(D).sum() * (factor * edge_weight)


def kl_repulsion(
    Yt: torch.Tensor, other: torch.Tensor, factor: float, grad: torch.Tensor
) -> torch.Tensor:
    """``factor ·`` the normaliser's part, ``log Σ q``, estimated from the random pairs
    ``other (n, negatives)``, its gradient added into ``grad``; returns the loss."""
    n = Yt.shape[1]
    diff, D = pairs(Yt, other)
    w = 1.0 / (1.0 + D)
    scale = (n - 1) / other.shape[1]  # each sample stands for (n - 1) / negatives pairs
    total = w.sum() * scale
    add_pair_grad(grad, flat_columns(other, n), (w * w) * (-factor * scale) / total, diff)
    return torch.log(total) * factor


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
) -> Tuple[torch.Tensor, torch.Tensor]:  # noqa: UP006
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


def adam_update(
    param: torch.Tensor,
    grad: torch.Tensor,
    m: torch.Tensor,
    v: torch.Tensor,
    step_size: float,
    root_bc2: float,
    beta1: float,
    beta2: float,
    eps: float,
) -> None:
    """One Adam update of ``param`` in place (``torch.optim.Adam``'s formula; ``step_size`` is
    ``lr`` over the first moment's bias correction, ``root_bc2`` the second's square root)."""
    m.mul_(beta1).add_(grad, alpha=1.0 - beta1)
    v.mul_(beta2).addcmul_(grad, grad, value=1.0 - beta2)
    param.addcdiv_(m, v.sqrt().div_(root_bc2).add_(eps), value=-step_size)


def leader_flat(
    gram: torch.Tensor,
    mask: torch.Tensor,
    labels: torch.Tensor,
    slot_cluster: torch.Tensor,
    point_thr: torch.Tensor,
) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:  # noqa: UP006
    """The leader pass over all points of each preamble in input order (see
    :func:`~.anchors._leader_flat`): ``(GM, count, linear_sq, active)`` of the slots, slot n a
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


def leader_per_cluster(
    present: torch.Tensor, norms: torch.Tensor, block: torch.Tensor, thr_sq: torch.Tensor
) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:  # noqa: UP006
    """The leader pass per cluster (see :func:`~.anchors._leader_per_cluster`):
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


def prepare() -> bool:
    """Script the kernels, once per process (about 0.5 s; done on first use, not on import,
    so importing clustviz stays cheap); True if they run as TorchScript."""
    global SCRIPTED
    if SCRIPTED is None:
        SCRIPTED = _script_all()
    return SCRIPTED


def _script_all() -> bool:
    """Replace this module's kernels by their TorchScript versions; False if that failed."""
    if os.environ.get("CLUSTVIZ_NO_TORCHSCRIPT") == "1":
        return False
    try:
        with warnings.catch_warnings():
            # deprecated, not removed: see the module docstring
            warnings.simplefilter("ignore", DeprecationWarning)
            scripted = {name: torch.jit.script(EAGER[name]) for name in EAGER}
    except Exception:  # any failure to script leaves the eager functions in place
        return False
    globals().update(scripted)
    return True


#: The kernels as Python functions (what runs when scripting is off or failed).
EAGER: dict[str, Any] = {
    name: globals()[name]
    for name in (
        "flat_columns",
        "pairs",
        "add_pull",
        "add_pair_grad",
        "soft_overlap_grad",
        "kl_attraction",
        "kl_repulsion",
        "with_anchors",
        "translation_grads",
        "adam_update",
        "leader_flat",
        "leader_per_cluster",
    )
}
#: Whether the kernels run as TorchScript in this process (None: not prepared yet).
SCRIPTED: bool | None = None
