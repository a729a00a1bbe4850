"""The device lane: gathers concurrent requests of a lane projector (``runner="lane"`` in the
registry, e.g. clusterplot) into one batched fit.

Requests that arrive within ``window`` seconds of each other, for the same projector with the
same parameters, run as one ``fit_transform_many`` call on the device — one torch program
instead of many. A batch holds at most ``max_batch`` items; the rest wait for the next one.
"""

from __future__ import annotations

import functools
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any

import numpy as np

__all__ = ["DeviceLane"]

# run_batch(projector, params, items, hulls) -> Future[list[result]]: where the batch actually
# runs (a warm worker process in the service, Ray in scale-out); hulls[i]: draw item i's cluster
# blobs now.
BatchRunner = Callable[
    [str, dict[str, Any], list[tuple[np.ndarray, np.ndarray]], list[bool]], "Future[list[Any]]"
]


@dataclass(slots=True)
class _Item:
    batch_key: str  # projector and params: only equal keys share a batch
    projector: str
    params: dict[str, Any]
    X: np.ndarray
    labels: np.ndarray
    hulls: bool = True
    future: Future[Any] = field(default_factory=Future)


class DeviceLane:
    """Batches items with equal projector and params; ``submit`` returns a Future of one item's
    result. An exception of a batch reaches every item in it."""

    def __init__(self, run_batch: BatchRunner, *, window: float = 0.01, max_batch: int = 512):
        self._run_batch = run_batch
        self.window = window
        self.max_batch = max_batch
        self._pending: list[_Item] = []
        self._cond = threading.Condition()
        self._closed = False
        self.batches_run = 0
        self.items_run = 0
        self._thread = threading.Thread(target=self._loop, name="clustviz-lane", daemon=True)
        self._thread.start()

    def submit(
        self,
        projector: str,
        params: dict[str, Any],
        X: np.ndarray,
        labels: np.ndarray,
        *,
        hulls: bool = True,
    ) -> Future[Any]:
        """Queue one item; ``hulls=False`` leaves its cluster blobs for later (batch items)."""
        key = repr((projector, sorted(params.items())))
        item = _Item(key, projector, params, X, labels, hulls)
        with self._cond:
            self._pending.append(item)
            self._cond.notify()
        return item.future

    def _take_batch(self) -> list[_Item]:
        with self._cond:
            while not self._pending and not self._closed:
                self._cond.wait()
            if self._closed:
                return []
            deadline = time.monotonic() + self.window
            while len(self._pending) < self.max_batch:  # gather what arrives in the window
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                self._cond.wait(remaining)
            key = self._pending[0].batch_key
            batch = [item for item in self._pending if item.batch_key == key][: self.max_batch]
            taken = {id(item) for item in batch}
            self._pending = [item for item in self._pending if id(item) not in taken]
            return batch

    def _loop(self) -> None:
        while True:
            batch = self._take_batch()
            if not batch:
                return
            try:
                future = self._run_batch(
                    batch[0].projector,
                    batch[0].params,
                    [(it.X, it.labels) for it in batch],
                    [it.hulls for it in batch],
                )
            except Exception as exc:
                for item in batch:
                    item.future.set_exception(exc)
                continue
            self.batches_run += 1
            self.items_run += len(batch)
            future.add_done_callback(functools.partial(_distribute, batch=batch))

    def close(self) -> None:
        with self._cond:
            self._closed = True
            pending, self._pending = self._pending, []
            self._cond.notify_all()
        for item in pending:
            item.future.cancel()


def _distribute(done: Future[list[Any]], batch: list[_Item]) -> None:
    exc = done.exception()
    if exc is not None:
        for item in batch:
            item.future.set_exception(exc)
        return
    for item, result in zip(batch, done.result(), strict=True):
        item.future.set_result(result)
