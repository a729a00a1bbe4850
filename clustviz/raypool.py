"""Run the same tasks on Ray: scale-out beyond one machine with the pool's interface.

``RayPool.submit("clustviz.tasks:project", ...)`` returns a ``concurrent.futures.Future`` like
:class:`clustviz.workers.WorkerPool`, so the service's engine, device lane and batch jobs run
unchanged on a cluster (``CLUSTVIZ_EXECUTOR=ray``, ``RAY_ADDRESS``). Ray reuses its worker
processes, so numba compiles once per Ray worker, not per task. Tasks that need a GPU ask Ray
for one (``num_gpus``). Ray is an optional extra: ``pip install 'clustviz[ray]'``.
"""

from __future__ import annotations

import importlib
import threading
from concurrent.futures import Future
from typing import Any

from clustviz.errors import (
    ClustvizError,
    ProjectionFailedError,
    UnavailableError,
    error_from_parts,
)
from clustviz.pools import WarmState

__all__ = ["RayPool"]


def _run(target: str, args: tuple[Any, ...], imports: tuple[str, ...] = ()) -> tuple[str, Any]:
    """Executed on a Ray worker: import the plugins (their projectors join this worker's
    registry), call ``module:function`` and wrap our errors as data."""
    module, _, name = target.partition(":")
    try:
        for plugin in imports:
            importlib.import_module(plugin)
        return "ok", getattr(importlib.import_module(module), name)(*args)
    except ClustvizError as exc:
        return "error", (type(exc).__name__, exc.code, exc.message)


class RayPool:
    """Submits tasks to a Ray cluster (or a local Ray instance when ``address`` is None)."""

    def __init__(
        self,
        *,
        address: str | None = None,
        num_cpus: float = 1,
        num_gpus: float = 0,
        default_timeout: float = 120.0,
        max_queue: int = 1024,
        env: dict[str, str] | None = None,
        local_cpus: int | None = None,
        imports: tuple[str, ...] = (),
    ) -> None:
        try:
            import ray
        except ImportError as exc:  # optional extra
            raise UnavailableError(
                "CLUSTVIZ_EXECUTOR=ray needs Ray: pip install 'clustviz[ray]'", code="ray_missing"
            ) from exc
        self._ray = ray
        if not ray.is_initialized():
            init: dict[str, Any] = {
                "address": address,
                "include_dashboard": False,
                "log_to_driver": False,
                "runtime_env": {"env_vars": env or {}},
            }
            if address is None and local_cpus is not None:
                init["num_cpus"] = local_cpus
            ray.init(**init)
        self._remote = ray.remote(_run).options(num_cpus=num_cpus, num_gpus=num_gpus)
        self.imports = tuple(imports)
        self.default_timeout = default_timeout
        self.max_queue = max_queue
        self._inflight = 0
        self._lock = threading.Lock()

    @property
    def queued(self) -> int:
        return self._inflight

    def start(self) -> RayPool:
        return self

    def submit(self, target: str, *args: Any, timeout: float | None = None) -> Future[Any]:
        """Run ``target(*args)`` on the cluster; a Future of its result, bounded in time."""
        with self._lock:
            if self._inflight >= self.max_queue:
                raise UnavailableError(
                    f"{self._inflight} tasks are in flight on Ray", code="pool_saturated"
                )
            self._inflight += 1
        ref = self._remote.remote(target, args, self.imports)
        result: Future[Any] = Future()
        limit = timeout or self.default_timeout
        timer = threading.Timer(limit, self._expire, args=(ref, result, limit))
        timer.daemon = True
        timer.start()

        def settle(done: Future[Any]) -> None:
            timer.cancel()
            with self._lock:
                self._inflight -= 1
            if result.done():
                return
            try:
                kind, payload = done.result()
            except Exception as exc:  # a Ray task/worker failure
                result.set_exception(
                    ProjectionFailedError(f"the Ray task failed: {exc}", code="worker_crashed")
                )
                return
            if kind == "ok":
                result.set_result(payload)
            else:
                result.set_exception(error_from_parts(*payload))

        ref.future().add_done_callback(settle)
        return result

    def _expire(self, ref: Any, result: Future[Any], limit: float) -> None:
        if not result.done():
            self._ray.cancel(ref, force=True)
            result.set_exception(
                ProjectionFailedError(
                    f"task exceeded its time bound of {limit:g} s and was stopped",
                    code="projection_timeout",
                )
            )

    def ready_count(self) -> int:
        return int(self._ray.cluster_resources().get("CPU", 0))

    def wait_ready(self, timeout: float, count: int | None = None) -> bool:
        return True

    def status(self) -> dict[str, Any]:
        cpus = int(self._ray.cluster_resources().get("CPU", 0))
        return {"size": cpus, "ready": cpus, "queued": self._inflight, "workers": []}

    def warm_states(self) -> dict[str, WarmState]:
        """Nothing is warmed ahead: a Ray worker compiles on its first task of each kind."""
        return {}

    def close(self) -> None:
        """Leave the cluster (shuts down a local instance this pool started)."""
        if self._ray.is_initialized():
            self._ray.shutdown()
