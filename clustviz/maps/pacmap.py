"""PaCMAP for a whole dataset, with the notebook's parameters; fitted on every row only.

PaCMAP's ``transform`` is not a placement in a fixed frame: it runs the optimisation again over
the new rows and the fitted embedding (its docstring warns that the same point can land
elsewhere), so it is not offered here: ``fit_on`` cluster_means and sample are refused.
"""

from __future__ import annotations

import numpy as np

from clustviz.maps.base import MapMethod, StageProgress
from clustviz.maps.params import PaCMAPMapParams
from clustviz.projectors.pacmap import fit_pacmap

__all__ = ["PaCMAPMethod"]


class PaCMAPMethod(MapMethod):
    name = "pacmap"
    params: PaCMAPMapParams

    def _fit(self, X: np.ndarray, y: np.ndarray | None, progress: StageProgress) -> np.ndarray:
        return fit_pacmap(X, self.params)
