"""Test-only registry entries that fail the way real libraries can, each in one way.

``broken``: every fit raises a bare ``OSError``, as a projector whose native library cannot
load (its warm-up fails; a request for it is a ``worker_error``). The others go through
:class:`~clustviz.projectors.BaseProjector`, the template every real projector uses, so the
service's checks are the real ones: ``failing`` raises inside the library (``projection_failed``),
``nan`` returns non-finite coordinates (``non_finite_result``), ``misshapen`` returns three
columns (``bad_result_shape``).

Importing this module registers them. The service imports it as a plugin
(``CLUSTVIZ_PLUGINS='["broken_projector"]'``, found through ``PYTHONPATH=tests``) in its own
process and in its workers; a bare worker pool does when told to
(``WorkerSettings(imports=("broken_projector",))``).
"""

from __future__ import annotations

from typing import Any

import numpy as np
from broken_reasons import FAILING_REASON, REASON

from clustviz.projectors import BaseProjector, ProjectorParams, ProjectorSpec, register

PARAMS = "clustviz.projectors.base:ProjectorParams"

register(
    ProjectorSpec(
        "broken",
        "Broken",
        "broken_projector:BrokenProjector",
        "clustviz.projectors.params:TSNEParams",
        (),
    )
)
for _name in ("failing", "nan", "misshapen"):
    register(
        ProjectorSpec(
            _name, _name.title(), f"broken_projector:{_name.title()}Projector", PARAMS, ()
        )
    )


class BrokenProjector:
    def __init__(self, params: Any) -> None:
        self.params = params

    def fit_transform(self, X: Any, labels: Any = None) -> Any:
        raise OSError(REASON)


class FailingProjector(BaseProjector):
    name = "failing"
    Params = ProjectorParams

    def _fit(self, X: np.ndarray, labels: np.ndarray | None, params: Any) -> np.ndarray:
        raise RuntimeError(FAILING_REASON)


class NanProjector(BaseProjector):
    name = "nan"
    Params = ProjectorParams

    def _fit(self, X: np.ndarray, labels: np.ndarray | None, params: Any) -> np.ndarray:
        Y = X[:, :2].astype(np.float64)
        Y[len(Y) // 2, 1] = np.nan  # one diverged point is enough to refuse the layout
        return Y


class MisshapenProjector(BaseProjector):
    name = "misshapen"
    Params = ProjectorParams

    def _fit(self, X: np.ndarray, labels: np.ndarray | None, params: Any) -> np.ndarray:
        return X[:, :3]  # three columns: a library that ignored n_components
