"""UMAP (umap-learn) for a whole dataset: plain or supervised (``y`` = cluster ids), with
umap-learn's own ``transform`` for rows it was not fitted on."""

from __future__ import annotations

import warnings

import numpy as np

from clustviz.maps.base import MapMethod, StageProgress
from clustviz.maps.params import UMAPMapParams

__all__ = ["UMAPMethod"]


class UMAPMethod(MapMethod):
    name = "umap"
    params: UMAPMapParams

    def _fit(self, X: np.ndarray, y: np.ndarray | None, progress: StageProgress) -> np.ndarray:
        from umap import UMAP

        params = self.params
        self.model_ = UMAP(
            n_components=2,
            n_neighbors=params.n_neighbors,
            min_dist=params.min_dist,
            spread=params.spread,
            metric=params.metric,
            n_epochs=params.n_epochs,
            init=params.init,
            target_metric="categorical",
            target_weight=params.target_weight,
            random_state=params.random_state,
            transform_seed=params.random_state,  # transform's own seed (umap-learn's default 42)
            n_jobs=1,  # a random_state forces one thread anyway; say so instead of being told
        )
        with warnings.catch_warnings():
            # "n_jobs overridden" and the small-n spectral fallback are expected, not news.
            warnings.simplefilter("ignore", UserWarning)
            return self.model_.fit_transform(X, y=y)

    def _transform(self, X: np.ndarray, progress: StageProgress) -> np.ndarray:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            return self.model_.transform(X)
