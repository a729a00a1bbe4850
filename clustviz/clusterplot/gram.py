"""The Gram matrix ``X Xᵀ`` that every high-D stage reads (leader pass, kNN graphs, PCA).

For one large preamble on the CPU it is the biggest product of a fit (n = 3000, d = 768:
13.8 GFLOP as one general matrix product, 78 ms on this machine's two cores). The matrix is
symmetric, so only its lower triangle is multiplied out, by blocks of rows (each block against
the rows up to its own: 55 % of the flops), and a blockwise copy fills the other triangle:
55 ms in all. BLAS ``ssyrk`` (through scipy) does the triangle in 40 ms, but OpenBLAS's
threads then keep spinning on the cores that torch's next ops need (the kNN graph after it
went from 25 to 52 ms). Batches of small preambles and GPUs keep the plain batched product.
"""

from __future__ import annotations

import torch

__all__ = ["gram_matrix"]

#: From this many points a single CPU preamble takes the triangle (below it the product is a
#: few milliseconds either way).
TRIANGLE_MIN_POINTS = 512
_ROWS = 300  # rows per block: 300–750 measured alike, 1000 slower


def gram_matrix(X: torch.Tensor) -> torch.Tensor:
    """``X Xᵀ`` of ``X (B, n, d)``: ``(B, n, n)``."""
    B, n, _ = X.shape
    if B != 1 or n < TRIANGLE_MIN_POINTS or X.device.type != "cpu":
        return X @ X.transpose(1, 2)
    rows = X[0]
    G = torch.empty(n, n, dtype=X.dtype)
    for start in range(0, n, _ROWS):
        stop = min(start + _ROWS, n)
        G[start:stop, :stop] = rows[start:stop] @ rows[:stop].T  # the lower triangle's rows
    return _mirror_lower(G).unsqueeze(0)


def _mirror_lower(G: torch.Tensor) -> torch.Tensor:
    """Fill the upper triangle of the square ``G`` from its lower one, in place, by blocks of
    rows (each a strided copy that stays in cache)."""
    n = G.shape[0]
    for start in range(0, n, _ROWS):
        stop = min(start + _ROWS, n)
        diagonal = G[start:stop, start:stop]
        diagonal.copy_(diagonal.tril() + diagonal.tril(-1).T)
        G[start:stop, stop:].copy_(G[stop:, start:stop].T)
    return G
