"""t-SNE (scikit-learn), the notebook's ``TSNE(n_components=2, random_state=1871)``."""

from __future__ import annotations

import numpy as np

from clustviz.projectors.base import BaseProjector
from clustviz.projectors.params import TSNEParams

__all__ = ["TSNEProjector"]


class TSNEProjector(BaseProjector):
    name = "tsne"
    Params = TSNEParams

    def _fit(self, X: np.ndarray, labels: np.ndarray | None, params: TSNEParams) -> np.ndarray:
        from sklearn.manifold import TSNE

        model = TSNE(
            n_components=2,
            perplexity=params.perplexity,
            early_exaggeration=params.early_exaggeration,
            learning_rate=params.learning_rate,
            max_iter=params.max_iter,
            metric=params.metric,
            init=params.init,
            random_state=params.random_state,
        )
        return model.fit_transform(X)
