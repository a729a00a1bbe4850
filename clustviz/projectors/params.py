"""Parameter models of the library projectors (light: imports no projection library).

Defaults are the seed notebook's: ``TSNE(random_state=1871)``, ``UMAP(random_state=1871)``,
``TRIMAP()`` (seeded here too), ``PaCMAP(n_neighbors=8, MN_ratio=0.5, FP_ratio=2.0,
random_state=1871)``. ``resolve(n)`` clamps what small ``n`` cannot support — the libraries
fail or loop forever otherwise (PaCMAP issue #127, TriMAP issue #5).
"""

from __future__ import annotations

from typing import ClassVar, Literal, Self

from pydantic import Field

from clustviz.projectors.base import ProjectorParams

__all__ = ["PaCMAPParams", "TSNEParams", "TriMAPParams", "UMAPParams"]


class TSNEParams(ProjectorParams):
    """scikit-learn ``TSNE``."""

    perplexity: float = Field(30.0, gt=0, le=100)
    early_exaggeration: float = Field(12.0, gt=0, le=100)
    learning_rate: float | Literal["auto"] = "auto"
    max_iter: int = Field(1000, ge=250, le=10_000)
    metric: Literal["euclidean", "cosine"] = "euclidean"
    init: Literal["pca", "random"] = "pca"

    min_points: ClassVar[int] = 5

    def resolve(self, n: int) -> tuple[Self, list[str]]:
        notes: list[str] = []
        # scikit-learn requires perplexity < n.
        changes = self._clamp(notes, n, perplexity=min(self.perplexity, float(n - 1)))
        return self.model_copy(update=changes), notes


class UMAPParams(ProjectorParams):
    """umap-learn ``UMAP``."""

    n_neighbors: int = Field(15, ge=2, le=200)
    min_dist: float = Field(0.1, ge=0, le=10)
    spread: float = Field(1.0, gt=0, le=10)
    metric: Literal["euclidean", "cosine"] = "euclidean"
    n_epochs: int | None = Field(None, ge=10, le=5000)
    init: Literal["spectral", "pca", "random"] = "spectral"

    min_points: ClassVar[int] = 5

    def resolve(self, n: int) -> tuple[Self, list[str]]:
        notes: list[str] = []
        changes = self._clamp(notes, n, n_neighbors=min(self.n_neighbors, n - 1))
        if self.min_dist > self.spread:  # UMAP refuses min_dist > spread
            changes |= self._clamp(notes, n, min_dist=self.spread)
        return self.model_copy(update=changes), notes


class TriMAPParams(ProjectorParams):
    """``trimap.TRIMAP`` (the library has no seed; the adapter seeds numba's generator)."""

    n_inliers: int = Field(12, ge=2, le=100)
    n_outliers: int = Field(4, ge=1, le=100)
    n_random: int = Field(3, ge=0, le=100)
    distance: Literal["euclidean", "manhattan", "angular"] = "euclidean"
    lr: float = Field(0.1, gt=0, le=100)
    n_iters: int = Field(400, ge=10, le=5000)
    apply_pca: bool = True

    min_points: ClassVar[int] = 8

    def resolve(self, n: int) -> tuple[Self, list[str]]:
        notes: list[str] = []
        # Outliers are sampled by rejection among the non-neighbours: with fewer of those than
        # n_outliers the sampler never ends. Keep inliers + outliers + self well below n.
        inliers = min(self.n_inliers, max(2, (n - 1) // 3))
        outliers = min(self.n_outliers, max(1, n - inliers - 2))
        changes = self._clamp(notes, n, n_inliers=inliers, n_outliers=outliers)
        return self.model_copy(update=changes), notes


class PaCMAPParams(ProjectorParams):
    """``pacmap.PaCMAP`` with the notebook's parameters."""

    n_neighbors: int = Field(8, ge=2, le=100)
    MN_ratio: float = Field(0.5, ge=0, le=10)
    FP_ratio: float = Field(2.0, gt=0, le=20)
    lr: float = Field(1.0, gt=0, le=100)
    num_iters: tuple[int, int, int] = (100, 100, 250)
    apply_pca: bool = True

    min_points: ClassVar[int] = 10

    def resolve(self, n: int) -> tuple[Self, list[str]]:
        notes: list[str] = []
        # Far pairs are sampled by rejection among non-neighbours: n_neighbors + n_FP must stay
        # below n or the sampler loops forever (PaCMAP issue #127, e.g. on 8 points).
        neighbors = min(self.n_neighbors, max(2, (n - 1) // 3))
        room = n - neighbors - 2
        fp_ratio = min(self.FP_ratio, room / neighbors)
        mn_ratio = min(self.MN_ratio, room / neighbors)
        changes = self._clamp(
            notes,
            n,
            n_neighbors=neighbors,
            FP_ratio=round(fp_ratio, 4),
            MN_ratio=round(mn_ratio, 4),
        )
        return self.model_copy(update=changes), notes
