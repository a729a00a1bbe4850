"""TriMAP (``trimap.TRIMAP``), the notebook's ``TRIMAP()``, seeded."""

from __future__ import annotations

import warnings
from functools import cache
from typing import Any

import numpy as np

from clustviz.projectors.base import BaseProjector
from clustviz.projectors.params import TriMAPParams

__all__ = ["TriMAPProjector"]


@cache
def _numba_seeder() -> Any:
    from numba import njit

    @njit(cache=False)
    def seed(value: int) -> None:
        np.random.seed(value)

    return seed


class TriMAPProjector(BaseProjector):
    name = "trimap"
    Params = TriMAPParams

    def _fit(self, X: np.ndarray, labels: np.ndarray | None, params: TriMAPParams) -> np.ndarray:
        from trimap import TRIMAP

        # TRIMAP takes no seed: it samples triplets with numba's np.random inside jitted code,
        # whose generator is separate from NumPy's and can only be seeded from jitted code.
        # Seeding that generator is the only way to make a TriMAP run reproducible.
        _numba_seeder()(params.random_state)
        model = TRIMAP(
            n_dims=2,
            n_inliers=params.n_inliers,
            n_outliers=params.n_outliers,
            n_random=params.n_random,
            distance=params.distance,
            lr=params.lr,
            n_iters=params.n_iters,
            apply_pca=params.apply_pca,
            verbose=False,
        )
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            return model.fit_transform(X)
