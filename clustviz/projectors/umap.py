"""UMAP (umap-learn), the notebook's ``UMAP(random_state=1871)``."""

from __future__ import annotations

import warnings

import numpy as np

from clustviz.projectors.base import BaseProjector
from clustviz.projectors.params import UMAPParams

__all__ = ["UMAPProjector"]


class UMAPProjector(BaseProjector):
    name = "umap"
    Params = UMAPParams

    def _fit(self, X: np.ndarray, labels: np.ndarray | None, params: UMAPParams) -> np.ndarray:
        from umap import UMAP

        model = UMAP(
            n_components=2,
            n_neighbors=params.n_neighbors,
            min_dist=params.min_dist,
            spread=params.spread,
            metric=params.metric,
            n_epochs=params.n_epochs,
            init=params.init,
            random_state=params.random_state,
            n_jobs=1,  # a random_state forces one thread anyway; say so instead of being told
        )
        with warnings.catch_warnings():
            # "n_jobs overridden" and the small-n spectral fallback are expected, not news.
            warnings.simplefilter("ignore", UserWarning)
            return model.fit_transform(X)
