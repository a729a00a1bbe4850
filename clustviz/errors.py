"""The exception tree of clustviz.

::

    ClustvizError
    ├── NotFoundError          unknown dataset / preamble / job      → 404
    ├── InvalidInputError      bad data, bad params, too few points  → 422
    ├── UnavailableError       device or engine not available        → 503
    └── ProjectionFailedError  non-finite result, library failure    → 500 with detail

Every error carries a stable machine-readable ``code`` (``dataset_not_found``,
``too_few_points``, ...) that the service returns next to the message.
"""

from __future__ import annotations

__all__ = [
    "ClustvizError",
    "InvalidInputError",
    "NotFoundError",
    "ProjectionFailedError",
    "UnavailableError",
    "error_from_parts",
]


class ClustvizError(Exception):
    """Base class: a message for people and a stable ``code`` for programs."""

    default_code = "clustviz_error"

    def __init__(self, message: str, *, code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.code = code or self.default_code


class NotFoundError(ClustvizError):
    """An unknown dataset, preamble, projector name or job."""

    default_code = "not_found"


class InvalidInputError(ClustvizError):
    """Bad data, bad parameters, or too few points for a projector."""

    default_code = "invalid_input"


class UnavailableError(ClustvizError):
    """A device, worker pool or execution engine is not available (now)."""

    default_code = "unavailable"


class ProjectionFailedError(ClustvizError):
    """A projector failed: library exception, non-finite output, or time bound exceeded."""

    default_code = "projection_failed"


def error_from_parts(kind: str, code: str, message: str) -> ClustvizError:
    """Rebuild an error sent across a process boundary as ``(class name, code, message)``;
    an unknown class name becomes a :class:`ProjectionFailedError`."""
    cls = globals().get(kind)
    if not (isinstance(cls, type) and issubclass(cls, ClustvizError)):
        cls = ProjectionFailedError
    return cls(message, code=code)
