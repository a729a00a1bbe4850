"""What every projector shares: the parameter base model, input checks, output checks.

A projector is anything with ``fit_transform(X, labels=None) -> ndarray (n, 2) float32`` in
input order. After a fit it exposes ``embedding_``, ``params_used_`` (parameters after clamping
to what ``n`` allows) and ``notes_`` (one line per clamped value).
"""

from __future__ import annotations

from typing import Any, ClassVar, Self

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from clustviz.errors import ClustvizError, InvalidInputError, ProjectionFailedError

__all__ = ["DEFAULT_SEED", "BaseProjector", "ProjectorParams", "check_input", "check_output"]

DEFAULT_SEED = 1871  # the seed notebook's random_state


class ProjectorParams(BaseModel):
    """Parameters of one projector: validated, immutable, unknown fields rejected."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    random_state: int = Field(DEFAULT_SEED, ge=0, le=2**32 - 1, description="Seed of the run.")

    #: Below this many points the projector refuses to run (``too_few_points``).
    min_points: ClassVar[int] = 5

    def resolve(self, n: int) -> tuple[Self, list[str]]:
        """Clamp parameters to what ``n`` points allow; return the copy and a note per change."""
        return self, []

    def _clamp(self, notes: list[str], n: int, **changes: Any) -> dict[str, Any]:
        """Keep only real changes, and note each one (``field: old -> new for n=...``)."""
        kept = {}
        for name, value in changes.items():
            old = getattr(self, name)
            if value != old:
                notes.append(f"{name} clamped from {old} to {value} for n={n}")
                kept[name] = value
        return kept


def check_input(
    X: np.ndarray, labels: np.ndarray | None, *, name: str, min_points: int
) -> tuple[np.ndarray, np.ndarray | None]:
    """Validate ``X (n, d)`` and ``labels (n,)``; return float32 C-contiguous copies/views."""
    X = np.asarray(X)
    if X.ndim != 2:
        raise InvalidInputError(f"X must be 2-D (n, d), got shape {X.shape}", code="invalid_input")
    n = X.shape[0]
    if n < min_points:
        raise InvalidInputError(
            f"projector {name!r} needs at least {min_points} points, got n={n}",
            code="too_few_points",
        )
    X = np.ascontiguousarray(X, dtype=np.float32)
    if not np.isfinite(X).all():
        raise InvalidInputError("X contains NaN or inf", code="invalid_input")
    if labels is not None:
        labels = np.asarray(labels)
        if labels.shape != (n,):
            raise InvalidInputError(
                f"labels must have shape ({n},), got {labels.shape}", code="invalid_input"
            )
    return X, labels


def check_output(Y: Any, n: int, *, name: str) -> np.ndarray:
    """The library's output as ``(n, 2)`` float32; ``ProjectionFailedError`` if it is not finite."""
    Y = np.asarray(Y, dtype=np.float32)
    if Y.shape != (n, 2):
        raise ProjectionFailedError(
            f"projector {name!r} returned shape {Y.shape}, expected ({n}, 2)",
            code="bad_result_shape",
        )
    if not np.isfinite(Y).all():
        raise ProjectionFailedError(
            f"projector {name!r} returned non-finite coordinates", code="non_finite_result"
        )
    return np.ascontiguousarray(Y)


class BaseProjector:
    """Shared fit bookkeeping; subclasses implement ``_fit(X, labels, params) -> ndarray``."""

    name: ClassVar[str]
    Params: ClassVar[type[ProjectorParams]]

    def __init__(self, params: ProjectorParams | None = None, **kwargs: Any) -> None:
        if params is not None and kwargs:
            raise TypeError("pass either a params model or keyword parameters, not both")
        self.params = params if params is not None else self.Params(**kwargs)

    def fit_transform(self, X: np.ndarray, labels: np.ndarray | None = None) -> np.ndarray:
        """Project ``X (n, d)`` to ``(n, 2)`` float32, rows in input order."""
        X, labels = check_input(X, labels, name=self.name, min_points=self.Params.min_points)
        used, notes = self.params.resolve(X.shape[0])
        self.params_used_ = used
        self.notes_ = notes
        try:
            Y = self._fit(X, labels, used)
        except ClustvizError:  # ours already says what happened (e.g. device_unavailable)
            raise
        except Exception as exc:  # a library failure, reported with its detail
            raise ProjectionFailedError(
                f"projector {self.name!r} failed: {type(exc).__name__}: {exc}",
                code="projection_failed",
            ) from exc
        self.embedding_ = check_output(Y, X.shape[0], name=self.name)
        return self.embedding_

    def _fit(self, X: np.ndarray, labels: np.ndarray | None, params: Any) -> np.ndarray:
        raise NotImplementedError
