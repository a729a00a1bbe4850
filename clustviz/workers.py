"""A pool of long-lived, warm worker processes with a time bound on every task.

Why processes, and why warm: umap, pacmap and trimap compile with numba for 10–40 s in every new
process, and a request must never pay that. Each worker imports and runs a tiny fit of every
projector once at start (``warm``), with a persistent numba cache dir, and then serves tasks.

Why ``spawn``: forking a process after a numba/OpenMP fit deadlocks the child.

Why one parent thread per worker: a task that exceeds its time bound (PaCMAP and TriMAP can loop
forever on tiny inputs) or crashes its process fails alone; the thread kills the process, starts
a fresh one (which warms again) and the pool keeps serving with the others.
"""

from __future__ import annotations

import importlib
import multiprocessing as mp
import os
import queue
import threading
import time
import traceback
from collections.abc import Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any

from clustviz.errors import (
    ClustvizError,
    ProjectionFailedError,
    UnavailableError,
    error_from_parts,
)
from clustviz.pools import WarmState
from clustviz.projectors import projectors_run_by

__all__ = ["WorkerPool", "WorkerSettings"]


@dataclass(frozen=True, slots=True)
class WorkerSettings:
    """How each worker process is set up."""

    warm: tuple[str, ...] = field(default_factory=lambda: projectors_run_by("pool"))
    warm_render: bool = True  # the device lane never renders: it skips this
    numba_cache_dir: str | None = None
    threads: int = 1  # numba/BLAS/torch threads per worker: size × threads ≈ cores
    #: Modules each worker imports before warming up: plugins that register projectors
    #: (:func:`clustviz.projectors.register`) in the worker's own registry.
    imports: tuple[str, ...] = ()


@dataclass(slots=True)
class _Task:
    target: str  # "module:function", importable in the worker
    args: tuple[Any, ...]
    timeout: float
    future: Future[Any] = field(default_factory=Future)


def _worker_main(conn: Any, settings: WorkerSettings) -> None:
    """Entry point of a worker process (spawned): configure, warm up, then serve forever."""
    # This process belongs to the pool, so it configures its own environment before any
    # numerical library is imported (the variables are read once, at import).
    threads = str(settings.threads)
    for variable in (
        "NUMBA_NUM_THREADS",
        "OMP_NUM_THREADS",
        "OPENBLAS_NUM_THREADS",
        "MKL_NUM_THREADS",
    ):
        os.environ[variable] = threads
    if settings.numba_cache_dir:
        os.environ["NUMBA_CACHE_DIR"] = settings.numba_cache_dir
    os.environ.setdefault("MPLBACKEND", "Agg")
    # Idle OpenMP threads sleep instead of spinning: on a few shared cores, spinning threads of
    # one worker starve the others (torch ops measured up to 10× slower under contention).
    # But not at once: a batched clusterplot fit is thousands of small parallel torch ops, and
    # waking sleeping threads for each made it 1.6–1.8× slower; a short spin (libgomp's count,
    # tens of microseconds) keeps them awake between ops and lets them sleep when idle.
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    os.environ.setdefault("GOMP_SPINCOUNT", "30000")
    # Unpickling this function's arguments imported numpy, and with it OpenBLAS, before the
    # variables above were set: cap the thread pools already loaded as well. Uncapped, each
    # worker kept an OpenBLAS thread spinning after every BLAS call, and with two workers busy
    # on two cores their fits ran 2–6× slower (pacmap 11 ms alone, 25–72 ms in the pool).
    from threadpoolctl import threadpool_limits

    threadpool_limits(limits=settings.threads)
    started = time.perf_counter()
    for module in settings.imports:
        importlib.import_module(module)
    from clustviz.tasks import warm_up

    warm_report = warm_up(settings.warm, render_plot=settings.warm_render)
    conn.send(("ready", {"warm_seconds": time.perf_counter() - started, **warm_report}))
    while True:
        try:
            target, args = conn.recv()
        except (EOFError, KeyboardInterrupt):
            return
        try:
            module, _, name = target.partition(":")
            result = getattr(importlib.import_module(module), name)(*args)
            conn.send(("ok", result))
        except ClustvizError as exc:
            conn.send(("error", (type(exc).__name__, exc.code, exc.message)))
        except Exception as exc:
            detail = "".join(traceback.format_exception_only(type(exc), exc)).strip()
            conn.send(("error", ("ProjectionFailedError", "worker_error", detail)))


class _Slot:
    """One worker process and the parent thread that feeds it."""

    def __init__(self, pool: WorkerPool, index: int) -> None:
        self.pool = pool
        self.index = index
        self.state = "starting"
        self.pid: int | None = None
        self.tasks_done = 0
        self.restarts = 0
        self.warm_report: dict[str, Any] = {}
        self.process: Any = None
        self.conn: Any = None
        self.thread = threading.Thread(
            target=self._run, name=f"clustviz-worker-{index}", daemon=True
        )

    def _spawn(self) -> bool:
        parent_conn, child_conn = self.pool._context.Pipe()
        process = self.pool._context.Process(
            target=_worker_main, args=(child_conn, self.pool.settings), daemon=True
        )
        self.state = "warming"
        process.start()
        child_conn.close()
        self.process, self.conn, self.pid = process, parent_conn, process.pid
        while not self.pool._closed.is_set():
            if parent_conn.poll(0.2):
                try:
                    kind, report = parent_conn.recv()
                except (EOFError, OSError):
                    break
                if kind == "ready":
                    self.warm_report = report
                    self.state = "ready"
                    return True
            if not process.is_alive():
                break
        self._kill()
        return False

    def _kill(self) -> None:
        if self.process is not None and self.process.is_alive():
            self.process.kill()
        if self.process is not None:
            self.process.join(timeout=5)
        if self.conn is not None:
            self.conn.close()
        self.process = self.conn = None
        self.state = "stopped"

    def _run(self) -> None:
        while not self.pool._closed.is_set():
            if self.process is None or not self.process.is_alive():
                if self.pid is not None:  # a previous process died or was stopped
                    self.restarts += 1
                    self._kill()
                if not self._spawn():
                    time.sleep(1.0)  # a worker that dies while warming: retry, gently
                    continue
            try:
                task = self.pool._queue.get(timeout=0.2)
            except queue.Empty:
                continue
            if not task.future.set_running_or_notify_cancel():
                continue
            self.state = "busy"
            self._execute(task)
            if self.state == "busy":
                self.state = "ready"
        self._kill()

    def _execute(self, task: _Task) -> None:
        try:
            self.conn.send((task.target, task.args))
            if not self.conn.poll(task.timeout):
                self._kill()  # the only way to stop a library stuck in compiled code
                task.future.set_exception(
                    ProjectionFailedError(
                        f"task exceeded its time bound of {task.timeout:g} s and was stopped",
                        code="projection_timeout",
                    )
                )
                return
            kind, payload = self.conn.recv()
        except (EOFError, OSError, BrokenPipeError):
            exitcode = None
            if self.process is not None:
                self.process.join(timeout=2)  # reap it, so the exit code is known
                exitcode = self.process.exitcode
            self._kill()
            task.future.set_exception(
                ProjectionFailedError(
                    f"the worker process died while running the task (exit code {exitcode})",
                    code="worker_crashed",
                )
            )
            return
        self.tasks_done += 1
        if kind == "ok":
            task.future.set_result(payload)
        else:
            task.future.set_exception(error_from_parts(*payload))


class WorkerPool:
    """``size`` warm worker processes serving ``submit(target, *args)`` with a time bound."""

    def __init__(
        self,
        size: int,
        settings: WorkerSettings | None = None,
        *,
        max_queue: int = 1024,
        default_timeout: float = 120.0,
    ) -> None:
        if size < 1:
            raise ValueError(f"size={size} must be >= 1")
        self.settings = settings or WorkerSettings()
        self.default_timeout = default_timeout
        self._context = mp.get_context("spawn")
        self._queue: queue.Queue[_Task] = queue.Queue(maxsize=max_queue)
        self._closed = threading.Event()
        self._slots = [_Slot(self, index) for index in range(size)]
        self._started = False

    def start(self) -> WorkerPool:
        """Start the workers in the background (returns at once; they warm up on their own)."""
        if not self._started:
            self._started = True
            for slot in self._slots:
                slot.thread.start()
        return self

    def submit(self, target: str, *args: Any, timeout: float | None = None) -> Future[Any]:
        """Queue ``target(*args)`` (``"module:function"``) for a warm worker; return a Future.

        Raises :class:`UnavailableError` when the pool is closed or its queue is full.
        """
        if self._closed.is_set():
            raise UnavailableError("the worker pool is closed", code="pool_closed")
        task = _Task(target, args, timeout or self.default_timeout)
        try:
            self._queue.put_nowait(task)
        except queue.Full:
            raise UnavailableError(
                f"the worker pool is saturated ({self._queue.maxsize} tasks queued)",
                code="pool_saturated",
            ) from None
        return task.future

    @property
    def queued(self) -> int:
        return self._queue.qsize()

    @property
    def max_queue(self) -> int:
        return self._queue.maxsize

    def ready_count(self) -> int:
        return sum(slot.state in ("ready", "busy") for slot in self._slots)

    def wait_ready(self, timeout: float, count: int | None = None) -> bool:
        """Block until ``count`` (default: all) workers are warm, or ``timeout`` seconds pass."""
        wanted = len(self._slots) if count is None else count
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.ready_count() >= wanted:
                return True
            time.sleep(0.1)
        return self.ready_count() >= wanted

    def status(self) -> dict[str, Any]:
        """Per-worker state (starting/warming/ready/busy/stopped), warm-up times, queue length."""
        return {
            "size": len(self._slots),
            "ready": self.ready_count(),
            "queued": self.queued,
            "workers": [
                {
                    "index": slot.index,
                    "pid": slot.pid,
                    "state": slot.state,
                    "tasks_done": slot.tasks_done,
                    "restarts": slot.restarts,
                    "warm_seconds": round(slot.warm_report.get("warm_seconds", 0.0), 2),
                }
                for slot in self._slots
            ],
        }

    def warm_states(self) -> dict[str, WarmState]:
        """Per projector in ``settings.warm`` (and ``render``): ``failed`` with the reason if
        its warm-up raised in a serving worker, ``warm`` if it ran, else ``warming``."""
        reports = [slot.warm_report for slot in self._slots if slot.state in ("ready", "busy")]
        names = self.settings.warm + (("render",) if self.settings.warm_render else ())
        states: dict[str, WarmState] = {}
        for name in names:
            reasons = [r["warm_errors"][name] for r in reports if name in r["warm_errors"]]
            if reasons:
                states[name] = {"state": "failed", "reason": reasons[0]}
            else:
                states[name] = {"state": "warm" if reports else "warming", "reason": None}
        return states

    def worker_pids(self) -> Sequence[int | None]:
        return [slot.pid for slot in self._slots]

    def close(self) -> None:
        """Stop the workers; queued tasks fail with :class:`UnavailableError`."""
        self._closed.set()
        while True:
            try:
                task = self._queue.get_nowait()
            except queue.Empty:
                break
            if task.future.set_running_or_notify_cancel():
                task.future.set_exception(
                    UnavailableError("the worker pool closed", code="pool_closed")
                )
        for slot in self._slots:
            if slot.thread.is_alive():
                slot.thread.join(timeout=10)
