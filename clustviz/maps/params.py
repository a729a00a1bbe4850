"""Parameter models of the map methods (light: imports no projection library).

Each model is frozen and rejects unknown fields; ``resolve(n)`` clamps what ``n`` fitted rows
cannot support and notes each change, as the projectors' models do. The seed is not one of
these fields for the caller: a map's ``seed`` fills ``random_state``
(:func:`clustviz.maps.build_map_params`).

Where a projector of the same library exists, its model is reused and extended, so one
library's knobs have one definition: ``umap`` adds the supervised fit's ``target_weight`` to
the projector's UMAP, and ``pacmap`` is the projector's PaCMAP (the notebook's parameters).
"""

from __future__ import annotations

import math
from typing import ClassVar, Literal, Self

from pydantic import Field

from clustviz.projectors.base import ProjectorParams
from clustviz.projectors.params import PaCMAPParams, UMAPParams

__all__ = ["OpenTSNEMapParams", "PaCMAPMapParams", "TorchDRUMAPParams", "UMAPMapParams"]


class UMAPMapParams(UMAPParams):
    """umap-learn ``UMAP`` for a whole dataset; ``target_weight`` weighs the cluster ids in a
    supervised fit (0: the data only, 1: the labels only; umap-learn's default 0.5)."""

    target_weight: float = Field(
        0.5, ge=0, le=1, description="Supervised fits only: weight of the cluster ids."
    )


class OpenTSNEMapParams(ProjectorParams):
    """openTSNE's ``TSNE`` (FFT-accelerated; has ``transform`` for rows it was not fitted on).

    Defaults are openTSNE's own, except ``n_jobs``: one thread, because a map must not depend
    on the thread count (the kNN index and the gradient's sums are split over threads).
    """

    perplexity: float = Field(30.0, gt=0, le=500)
    early_exaggeration: float = Field(12.0, gt=0, le=100)
    early_exaggeration_iter: int = Field(250, ge=0, le=5000)
    n_iter: int = Field(500, ge=10, le=10_000, description="Iterations after the exaggeration.")
    learning_rate: float | Literal["auto"] = "auto"
    metric: Literal["euclidean", "cosine"] = "euclidean"
    initialization: Literal["pca", "spectral", "random"] = "pca"
    dof: float = Field(1.0, gt=0, le=100, description="Degrees of freedom of the kernel.")
    transform_n_iter: int = Field(
        250, ge=0, le=5000, description="Iterations placing the rows not fitted (transform)."
    )
    transform_k: int = Field(
        25, ge=3, le=500, description="Fitted neighbours of each row placed by transform."
    )
    transform_perplexity: float = Field(
        5.0, gt=0, le=100, description="Perplexity of the rows placed by transform."
    )

    min_points: ClassVar[int] = 5

    def resolve(self, n: int) -> tuple[Self, list[str]]:
        """``n`` rows fitted: openTSNE takes 3·perplexity neighbours per point among the other
        ``n - 1``, and a placed row's ``transform_k`` neighbours among the ``n`` (and its
        3·``transform_perplexity`` among the ``n - 1``, openTSNE checks)."""
        notes: list[str] = []
        transform_k = min(self.transform_k, n)
        changes = self._clamp(
            notes,
            n,
            perplexity=min(self.perplexity, _third(n - 1)),
            transform_k=transform_k,
            transform_perplexity=min(self.transform_perplexity, _third(min(transform_k, n - 1))),
        )
        return self.model_copy(update=changes), notes


def _third(count: int) -> float:
    """``count / 3`` rounded *down* to 4 decimals: 3 × it never exceeds ``count``."""
    return math.floor(count / 3 * 10_000) / 10_000


class PaCMAPMapParams(PaCMAPParams):
    """``pacmap.PaCMAP`` with the notebook's parameters (the projector's model)."""


class TorchDRUMAPParams(ProjectorParams):
    """TorchDR's ``UMAP`` (PyTorch): on CUDA when ``device`` resolves to it, else the CPU."""

    n_neighbors: int = Field(15, ge=2, le=200)
    min_dist: float = Field(0.1, ge=0, le=10)
    spread: float = Field(1.0, gt=0, le=10)
    max_iter: int = Field(1000, ge=10, le=10_000, description="Optimisation steps.")
    lr: float = Field(1.0, gt=0, le=100, description="Learning rate of the optimiser.")
    device: Literal["auto", "cpu", "cuda"] = Field(
        "auto", description="Torch device; 'auto' uses CUDA when available."
    )

    min_points: ClassVar[int] = 5

    def resolve(self, n: int) -> tuple[Self, list[str]]:
        notes: list[str] = []
        # TorchDR counts the point itself among its neighbours and wants fewer than n - 1.
        changes = self._clamp(notes, n, n_neighbors=min(self.n_neighbors, n - 2))
        if self.min_dist > self.spread:
            changes |= self._clamp(notes, n, min_dist=self.spread)
        return self.model_copy(update=changes), notes
