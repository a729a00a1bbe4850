"""PaCMAP, as the notebook calls it.

``PaCMAP(n_components=2, n_neighbors=8, MN_ratio=0.5, FP_ratio=2.0, random_state=1871)``.
"""

from __future__ import annotations

import logging

import numpy as np

from clustviz.projectors.base import BaseProjector
from clustviz.projectors.params import PaCMAPParams

__all__ = ["PaCMAPProjector", "fit_pacmap"]


class PaCMAPProjector(BaseProjector):
    name = "pacmap"
    Params = PaCMAPParams

    def _fit(self, X: np.ndarray, labels: np.ndarray | None, params: PaCMAPParams) -> np.ndarray:
        return fit_pacmap(X, params)


def fit_pacmap(X: np.ndarray, params: PaCMAPParams) -> np.ndarray:
    """``PaCMAP(...).fit_transform(X, init="pca")`` with these parameters (the projector's and
    the global map's one call)."""
    from pacmap import PaCMAP

    # PaCMAP logs a warning for every small-n reorganisation we already clamped and reported.
    logging.getLogger("pacmap").setLevel(logging.ERROR)
    model = PaCMAP(
        n_components=2,
        n_neighbors=params.n_neighbors,
        MN_ratio=params.MN_ratio,
        FP_ratio=params.FP_ratio,
        lr=params.lr,
        num_iters=params.num_iters,
        apply_pca=params.apply_pca,
        random_state=params.random_state,
        verbose=False,
    )
    return model.fit_transform(X, init="pca")
