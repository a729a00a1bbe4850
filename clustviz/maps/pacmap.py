"""PaCMAP for a whole dataset, with the notebook's parameters; fitted on every row only.

PaCMAP's ``transform`` is not a placement in a fixed frame: it runs the optimisation again over
the new rows and the fitted embedding (its docstring warns that the same point can land
elsewhere), so it is not offered here: ``fit_on`` cluster_means and sample are refused.
"""

from __future__ import annotations

import logging

import numpy as np

from clustviz.maps.base import MapMethod, StageProgress
from clustviz.maps.params import PaCMAPMapParams

__all__ = ["PaCMAPMethod"]


class PaCMAPMethod(MapMethod):
    name = "pacmap"
    params: PaCMAPMapParams

    def _fit(self, X: np.ndarray, y: np.ndarray | None, progress: StageProgress) -> np.ndarray:
        from pacmap import PaCMAP

        # PaCMAP logs a warning for every small-n reorganisation we already clamped and reported.
        logging.getLogger("pacmap").setLevel(logging.ERROR)
        params = self.params
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
