"""Padding many preambles into one batch (``X (B, n, d)``, ``labels (B, n)``, ``mask (B, n)``),
and what the batched stages share: pairwise distances, the pair gradient, Adam."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from clustviz.errors import InvalidInputError

__all__ = ["Adam", "PaddedBatch", "pad_batch", "pair_gradient", "pairwise_sq_dists"]


@dataclass(slots=True)
class PaddedBatch:
    """Preambles padded to the largest one; padding rows are zeros with ``mask`` False."""

    X: torch.Tensor  # (B, n, d) float32
    labels: torch.Tensor  # (B, n) long, local labels 0..C_b-1, 0 at padding
    mask: torch.Tensor  # (B, n) bool
    n_points: torch.Tensor  # (B,) long
    n_clusters: torch.Tensor  # (B,) long
    #: cluster slots of the per-cluster tensors, at least ``n_clusters.max()`` (the extra
    #: ones are padding, masked out)
    max_clusters: int

    @property
    def size(self) -> int:
        return int(self.X.shape[0])


def pad_batch(items: Sequence[tuple[np.ndarray, np.ndarray]], device: torch.device) -> PaddedBatch:
    """Pad ``(X_i (n_i, d), labels_i (n_i,))`` pairs; labels must already be ``0..C_i-1``."""
    if not items:
        raise InvalidInputError("no preambles to lay out", code="invalid_input")
    dims = {int(X.shape[1]) for X, _ in items}
    if len(dims) != 1:
        raise InvalidInputError(
            f"all preambles must share one dimension, got {sorted(dims)}", code="invalid_input"
        )
    B, d = len(items), dims.pop()
    n = max(int(X.shape[0]) for X, _ in items)
    X_pad = np.zeros((B, n, d), dtype=np.float32)
    labels_pad = np.zeros((B, n), dtype=np.int64)
    mask = np.zeros((B, n), dtype=bool)
    for b, (X, labels) in enumerate(items):
        m = X.shape[0]
        X_pad[b, :m] = X
        labels_pad[b, :m] = labels
        mask[b, :m] = True
    n_clusters = np.array([int(labels.max()) + 1 for _, labels in items], dtype=np.int64)
    return PaddedBatch(
        X=torch.from_numpy(X_pad).to(device),
        labels=torch.from_numpy(labels_pad).to(device),
        mask=torch.from_numpy(mask).to(device),
        n_points=torch.from_numpy(mask.sum(1)).to(device),
        n_clusters=torch.from_numpy(n_clusters).to(device),
        max_clusters=int(n_clusters.max()),
    )


def pairwise_sq_dists(A: torch.Tensor, B: torch.Tensor | None = None) -> torch.Tensor:
    """Squared distances ``(batch, n, m)`` between rows of ``A (batch, n, d)`` and ``B``.

    Differences rather than the ``|a|² - 2ab + |b|²`` expansion for 2-D layouts: exact zeros for
    coincident points and no cancellation error in the losses.
    """
    B = A if B is None else B
    if A.shape[-1] <= 3:  # one coordinate at a time: no (batch, n, m, d) temporary
        out = None
        for axis in range(A.shape[-1]):
            diff = A[..., axis].unsqueeze(2) - B[..., axis].unsqueeze(1)
            out = diff * diff if out is None else out.addcmul_(diff, diff)
        assert out is not None
        return out
    sq = (A * A).sum(-1).unsqueeze(2) + (B * B).sum(-1).unsqueeze(1) - 2.0 * A @ B.transpose(1, 2)
    return sq.clamp_min(0.0)


def pair_gradient(coef: torch.Tensor, Z: torch.Tensor) -> torch.Tensor:
    """Gradient ``(batch, N, 2)`` of a loss w.r.t. ``Z`` from ``coef = dL/dD (batch, N, N)``.

    With ``D_ij = |z_i - z_j|²``: ``dL/dz_i = 2 Σ_j (c_ij + c_ji)(z_i - z_j)``, i.e.
    ``2 [(rowsum + colsum)(c) · z_i - ((c + cᵀ) Z)_i]``: two reductions and one small ``bmm``
    instead of an autograd graph over the ``(batch, N, N, 2)`` differences.
    """
    sym = coef + coef.transpose(1, 2)
    # (2, N) @ (N, N) per preamble: several times faster than (N, N) @ (N, 2) with MKL
    mixed = torch.bmm(Z.transpose(1, 2), sym).transpose(1, 2)  # sym is symmetric
    return 2.0 * (sym.sum(2, keepdim=True) * Z - mixed)


class Adam:
    """Adam (the formula of ``torch.optim.Adam``) on tensors whose gradients we compute.

    ``eps`` is absolute, as in torch; the layouts it moves are scaled to unit spread first, so
    one value fits every preamble.
    """

    def __init__(
        self,
        params: Sequence[torch.Tensor],
        lr: float,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
    ) -> None:
        self.params = list(params)
        self.lr, self.betas, self.eps = lr, betas, eps
        self.m = [torch.zeros_like(p) for p in self.params]
        self.v = [torch.zeros_like(p) for p in self.params]
        self.t = 0

    def step(self, grads: Sequence[torch.Tensor]) -> None:
        """One update of every parameter, in place, from ``grads`` (same shapes)."""
        self.t += 1
        beta1, beta2 = self.betas
        step = self.lr / (1.0 - beta1**self.t)
        root_bc2 = (1.0 - beta2**self.t) ** 0.5
        for p, g, m, v in zip(self.params, grads, self.m, self.v, strict=True):
            m.mul_(beta1).add_(g, alpha=1.0 - beta1)
            v.mul_(beta2).addcmul_(g, g, value=1.0 - beta2)
            p.addcdiv_(m, v.sqrt().div_(root_bc2).add_(self.eps), value=-step)
