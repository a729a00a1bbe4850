"""Initial 2-D layouts: a torch one (PCA + kNN neighbour embedding) and UMAP's.

* ``torch``: PCA scores (signs fixed by skewness so the result does not depend on the solver),
  scaled to unit spread, then Adam on a t-SNE-like objective ``KL(P || Q)`` with ``P`` the
  symmetrised uniform kNN graph of X and ``Q`` the normalised Student-t kernel of the layout,
  with early exaggeration for the first quarter. Two strategies, as the relaxation's:

  - dense, batched (:func:`pca_init`: batched ``eigh`` of the ``(n, n)`` Gram matrix;
    :func:`neighbour_embedding`: every pair), masked and summed per preamble, so a batch gives
    what one-by-one runs give;
  - sparse, one large preamble (:func:`power_pca`: block power iteration;
    :func:`sampled_neighbour_embedding`: the kNN edges plus random pairs for the normaliser).
* ``umap``: umap-learn on ``Z = [X; anchors]`` with ``min_dist=1`` and ``n_neighbors``
  (clamped), as the original; CPU only, one preamble at a time (:func:`umap_layouts`).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import torch

from clustviz.clusterplot.batch import Adam, PaddedBatch, pair_gradient, pairwise_sq_dists
from clustviz.clusterplot.overlap import knn_graph

if TYPE_CHECKING:
    from clustviz.clusterplot.anchors import Anchors
    from clustviz.clusterplot.backends import TorchBackend
    from clustviz.clusterplot.targets import PointGraph

__all__ = [
    "EmbedSettings",
    "affinities_from_knn",
    "centred_gram",
    "knn_affinities",
    "neighbour_embedding",
    "pca_init",
    "power_pca",
    "sampled_neighbour_embedding",
    "torch_init",
    "umap_init",
    "umap_layouts",
]


def pca_init(X: torch.Tensor, mask: torch.Tensor, gram: torch.Tensor | None = None) -> torch.Tensor:
    """Top-2 PCA scores ``(B, n, 2)`` of ``X (B, n, d)``, scaled so PC1 has unit std.

    From the centred Gram matrix (``n × n``, not ``d × d``); pass ``gram = X Xᵀ`` if you have
    it, and it is centred without a d-dimensional product."""
    weight = mask.unsqueeze(-1).to(X.dtype)
    count = weight.sum(1, keepdim=True).clamp_min(1.0)
    gram = centred_gram(X @ X.transpose(1, 2) if gram is None else gram, mask)
    values, vectors = torch.linalg.eigh(gram.double())  # ascending
    scores = vectors[..., -2:].flip(-1) * values[..., -2:].flip(-1).clamp_min(0).sqrt().unsqueeze(1)
    scores = scores.float() * weight
    skew = (scores**3).sum(1, keepdim=True)
    scores = scores * torch.where(skew < 0, -1.0, 1.0)
    std = (scores[..., :1] ** 2).sum(1, keepdim=True).div(count).sqrt().clamp_min(1e-12)
    return scores / std


def centred_gram(gram: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """``(B, n, n)`` Gram matrix of the valid points centred on their mean, from ``gram = X Xᵀ``
    (no d-dimensional product): ``x̃_i · x̃_j = G_ij - x_i · μ - x_j · μ + μ · μ``; zero at
    padding."""
    weight = mask.unsqueeze(-1).to(gram.dtype)  # (B, n, 1)
    count = weight.sum(1, keepdim=True).clamp_min(1.0)
    row_means = (gram * weight.transpose(1, 2)).sum(2, keepdim=True) / count  # x_i · μ
    total = (row_means * weight).sum(1, keepdim=True) / count  # μ · μ
    centred = gram - row_means - row_means.transpose(1, 2) + total
    return centred * weight * weight.transpose(1, 2)


def knn_affinities(X: torch.Tensor, mask: torch.Tensor, k: int) -> torch.Tensor:
    """``P (B, n, n)``: symmetrised uniform kNN graph of X, summing to 1 per preamble."""
    idx, edge_mask = knn_graph(X, mask, torch.full((X.shape[0],), k, device=X.device))
    return affinities_from_knn(idx, edge_mask)


def affinities_from_knn(idx: torch.Tensor, edge_mask: torch.Tensor) -> torch.Tensor:
    """:func:`knn_affinities` from a kNN graph (:func:`~.overlap.knn_graph`'s answer)."""
    B, n, _ = idx.shape
    P = torch.zeros(B, n, n, device=idx.device).scatter_(2, idx, edge_mask.float())
    P = P + P.transpose(1, 2)
    return P / P.sum((1, 2), keepdim=True).clamp_min(1e-12)


@dataclass(frozen=True, slots=True)
class EmbedSettings:
    """The neighbour embedding's settings (every backend's, dense or sampled)."""

    steps: int
    lr: float
    #: factor on P over the first quarter of the steps
    exaggeration: float


def neighbour_embedding(
    Y0: torch.Tensor,
    P: torch.Tensor,
    mask: torch.Tensor,
    settings: EmbedSettings,
) -> torch.Tensor:
    """Adam on ``KL(P || Q)`` from ``Y0 (B, n, 2)``; early exaggeration for the first quarter.

    The gradient is written out (the t-SNE one, no autograd): with ``w = 1 / (1 + D)`` and
    ``S = Σ w``, ``dKL/dD_ij = ex · P_ij w_ij - w_ij² / S``.
    """
    steps, lr, exaggeration = settings.steps, settings.lr, settings.exaggeration
    n = Y0.shape[1]
    valid = mask.unsqueeze(1) & mask.unsqueeze(2)
    valid = (valid & ~torch.eye(n, dtype=torch.bool, device=Y0.device)).to(Y0.dtype)
    Y = Y0.detach().clone()
    optimiser = Adam([Y], lr=lr)
    with torch.no_grad():
        for step in range(steps):
            ex = exaggeration if step < steps // 4 else 1.0
            w = valid / (1.0 + pairwise_sq_dists(Y))  # (B, n, n), 0 off the valid pairs
            q = w / w.sum((1, 2), keepdim=True).clamp_min(1e-30)
            coef = (P * ex - q).mul_(w)  # dKL/dD
            optimiser.step([pair_gradient(coef, Y)])
    return Y * mask.unsqueeze(-1)


def torch_init(
    X: torch.Tensor,
    mask: torch.Tensor,
    *,
    k: int,
    settings: EmbedSettings,
    P: torch.Tensor | None = None,
    gram: torch.Tensor | None = None,
) -> torch.Tensor:
    """The batched torch init ``(B, n, 2)``: PCA then a kNN neighbour embedding.

    ``P`` (:func:`knn_affinities` of X with this ``k``) and ``gram`` (``X Xᵀ``): pass them if
    the caller has them already."""
    P = knn_affinities(X, mask, k) if P is None else P
    return neighbour_embedding(pca_init(X, mask, gram), P, mask, settings)


def umap_init(X: np.ndarray, anchors: np.ndarray, *, n_neighbors: int, seed: int) -> np.ndarray:
    """UMAP of ``Z = [X; anchors]`` with ``min_dist=1`` (the original); returns the X rows."""
    from umap import UMAP

    Z = np.concatenate([X, anchors]).astype(np.float32)
    model = UMAP(
        n_components=2,
        n_neighbors=max(2, min(n_neighbors, Z.shape[0] - 1)),
        min_dist=1.0,
        spread=1.0,
        random_state=seed,
        n_jobs=1,
    )
    with warnings.catch_warnings():
        # "n_jobs overridden" and the small-n spectral fallback are expected, not news.
        warnings.simplefilter("ignore", UserWarning)
        embedding = model.fit_transform(Z)
    return np.asarray(embedding[: X.shape[0]], dtype=np.float32)


def power_pca(
    X: torch.Tensor, gram: torch.Tensor, generator: torch.Generator, iterations: int = 30
) -> torch.Tensor:
    """Top-2 PCA scores ``(n, 2)`` of ``X (n, d)`` by block power iteration, signs fixed by
    skewness and PC1 scaled to unit std (as :func:`pca_init`).

    The iteration runs on the smaller of the covariance ``X̃ᵀX̃ (d, d)`` and the centred Gram
    matrix ``X̃X̃ᵀ`` (from ``gram = X Xᵀ``, ``(n, n)``): they share their non-zero spectrum.
    A product with a 6-column block streams the whole matrix from memory each iteration: at
    n = 3000, d = 768 that is 36 MB for the Gram matrix against 2.4 MB, cache-resident, for
    the covariance (one GEMM to make it)."""
    n, d = X.shape
    centred_x = X - X.mean(0) if d < n else None
    if centred_x is not None:
        matrix = centred_x.T @ centred_x
    else:
        matrix = centred_gram(gram[None], torch.ones(1, n, dtype=torch.bool, device=X.device))[0]
    Q = torch.randn(len(matrix), 6, generator=generator, device=X.device, dtype=X.dtype)
    for _ in range(iterations):
        Q, _ = torch.linalg.qr(matrix @ Q)
    values, vectors = torch.linalg.eigh((Q.T @ matrix @ Q).double())
    top = (Q.double() @ vectors[:, -2:].flip(-1)).float()  # top eigenvectors, largest first
    if centred_x is not None:
        scores = centred_x @ top  # projections on the principal axes
    else:
        scores = top * values[-2:].flip(-1).clamp_min(0).sqrt().float()
    skew = (scores**3).sum(0, keepdim=True)
    scores = scores * torch.where(skew < 0, -1.0, 1.0)
    return scores / (scores[:, :1] ** 2).mean().sqrt().clamp_min(1e-12)


def sampled_neighbour_embedding(
    points: PointGraph,
    start: torch.Tensor,
    settings: EmbedSettings,
    *,
    negatives: int,
    generator: torch.Generator,
    backend: TorchBackend,
) -> torch.Tensor:
    """The neighbour embedding of one large preamble, on its kNN edges and ``negatives`` random
    pairs per point and step, from ``start (n, 2)`` (:func:`power_pca`), with early
    exaggeration for the first quarter of the steps."""
    steps, exaggeration = settings.steps, settings.exaggeration
    Yt = start.T.contiguous()  # planar (2, n)
    optimiser = Adam([Yt], lr=settings.lr)
    for step in range(steps):
        grad = torch.zeros_like(Yt)
        backend.kl_grad(
            Yt,
            points.edges,
            negatives=negatives,
            generator=generator,
            exaggeration=exaggeration if step < steps // 4 else 1.0,
            factor=1.0,
            grad=grad,
            with_loss=False,
        )
        optimiser.step([grad])
    return Yt.T.contiguous()


def umap_layouts(
    batch: PaddedBatch, anchors: Anchors, *, n_neighbors: int, seed: int
) -> torch.Tensor:
    """:func:`umap_init` of each preamble of a batch, one at a time on the CPU, padded back to
    ``(B, n, 2)``."""
    centroids, count = anchors.centroids, anchors.count
    Y0 = torch.zeros(batch.size, batch.X.shape[1], 2)
    for b in range(batch.size):
        n, A = int(batch.n_points[b]), int(count[b])
        Y0[b, :n] = torch.from_numpy(
            umap_init(
                batch.X[b, :n].cpu().numpy(),
                centroids[b, :A].cpu().numpy(),
                n_neighbors=n_neighbors,
                seed=seed,
            )
        )
    return Y0.to(batch.X.device)
