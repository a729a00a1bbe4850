"""What every map method shares: fit on some rows, then (where it can) place other rows.

An adapter is a thin layer over one library: ``fit(X, y) -> (m, 2)`` embeds the rows it is
fitted on and keeps what ``transform(X) -> (r, 2)`` needs to place other rows in the same
frame. Both report their progress as a fraction in [0, 1] where the library lets us see it.
Outputs are checked here (shape, finiteness) so a library's failure never becomes a map.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, ClassVar

import numpy as np

from clustviz.errors import ClustvizError, InvalidInputError, ProjectionFailedError
from clustviz.projectors.base import ProjectorParams

__all__ = ["MapMethod", "StageProgress"]

#: Progress within one stage: called with the stage's done fraction.
StageProgress = Callable[[float], None]


def _ignore(fraction: float) -> None:
    """The default progress sink."""


class MapMethod:
    """A map method's adapter; subclasses implement ``_fit`` and, if they can, ``_transform``."""

    name: ClassVar[str]

    def __init__(self, params: ProjectorParams) -> None:
        self.params = params
        #: Parameters the fit resolved itself (TorchDR's device), reported with the map's.
        self.resolved_: dict[str, Any] = {}

    def fit(
        self, X: np.ndarray, y: np.ndarray | None = None, progress: StageProgress = _ignore
    ) -> np.ndarray:
        """Embed ``X (m, d)`` float32 (``y (m,)`` the cluster ids of a supervised fit): the
        ``(m, 2)`` float32 coordinates, rows in input order."""
        return self._checked(lambda: self._fit(X, y, progress), len(X), "fit")

    def transform(self, X: np.ndarray, progress: StageProgress = _ignore) -> np.ndarray:
        """Place ``X (r, d)`` in the frame of the last fit: ``(r, 2)`` float32, input order."""
        return self._checked(lambda: self._transform(X, progress), len(X), "transform")

    def _checked(self, run: Callable[[], Any], n: int, stage: str) -> np.ndarray:
        try:
            Y = run()
        except ClustvizError:
            raise
        except Exception as exc:  # a library failure, reported with its detail
            raise ProjectionFailedError(
                f"map method {self.name!r} failed in {stage}: {type(exc).__name__}: {exc}",
                code="projection_failed",
            ) from exc
        Y = np.ascontiguousarray(Y, dtype=np.float32)
        if Y.shape != (n, 2):
            raise ProjectionFailedError(
                f"map method {self.name!r} returned shape {Y.shape} in {stage}, expected ({n}, 2)",
                code="bad_result_shape",
            )
        if not np.isfinite(Y).all():
            raise ProjectionFailedError(
                f"map method {self.name!r} returned non-finite coordinates in {stage}",
                code="non_finite_result",
            )
        return Y

    def _fit(self, X: np.ndarray, y: np.ndarray | None, progress: StageProgress) -> np.ndarray:
        raise NotImplementedError

    def _transform(self, X: np.ndarray, progress: StageProgress) -> np.ndarray:
        raise InvalidInputError(
            f"map method {self.name!r} has no transform", code="unsupported_fit_on"
        )
