"""What the service needs from a place that runs tasks: one interface for the local warm
worker processes (:class:`clustviz.workers.WorkerPool`) and a Ray cluster
(:class:`clustviz.raypool.RayPool`).

A task is ``"module:function"`` plus picklable arguments; ``submit`` returns a
``concurrent.futures.Future`` that fails with a :class:`clustviz.errors.ClustvizError` (rebuilt
after crossing the process) when the task does, or when it overruns its time bound.
"""

from __future__ import annotations

from concurrent.futures import Future
from typing import Any, Literal, Protocol, TypedDict

__all__ = ["TaskPool", "WarmState"]


class WarmState(TypedDict):
    """How far a pool has warmed one projector up (shown per projector by ``/health``).

    ``warming``: not yet run in any worker; ``warm``: its warm-up fits ran in a worker that is
    serving; ``failed``: its warm-up raised in a worker (``reason`` says what), so its first
    requests will fail or pay the compilation.
    """

    state: Literal["warming", "warm", "failed"]
    reason: str | None


class TaskPool(Protocol):
    """Runs ``target(*args)`` somewhere with a time bound."""

    def start(self) -> TaskPool:
        """Begin starting workers (returns at once)."""
        ...

    def submit(self, target: str, *args: Any, timeout: float | None = None) -> Future[Any]:
        """Queue one task; raises :class:`clustviz.errors.UnavailableError` when saturated."""
        ...

    @property
    def queued(self) -> int:
        """Tasks waiting for a worker (or in flight, where the pool cannot tell the two)."""
        ...

    def status(self) -> dict[str, Any]:
        """``size``, ``ready``, ``queued`` and per-worker ``workers`` (for ``/health``)."""
        ...

    def warm_states(self) -> dict[str, WarmState]:
        """Per projector this pool warms up ahead of requests; empty where it warms none."""
        ...

    def close(self) -> None:
        """Stop; queued tasks fail with :class:`clustviz.errors.UnavailableError`."""
        ...
