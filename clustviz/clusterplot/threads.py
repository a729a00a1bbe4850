"""CPU threads of a fit: torch on one thread (:func:`one_thread`), and two independent parts of
an optimisation step at once (:class:`Lanes`).

The sparse relaxation's loops are a few hundred small torch ops per step over 10⁴–10⁵ pairs.
Splitting each op over OpenMP threads barely pays (n = 3000: 1.17× from a second core, every op
waits on a barrier); running two *independent* parts of a step (e.g. the sub-cluster overlap
term and the point terms) on two Python threads, each op on one core, does. Torch releases the GIL
inside its ops, so the threads overlap.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from typing import TypeVar

import torch

__all__ = ["Lanes", "one_thread"]

A = TypeVar("A")
B = TypeVar("B")


@contextmanager
def one_thread(active: bool) -> Iterator[None]:
    """Torch on one CPU thread inside the block when ``active`` (the setting is process-wide:
    the previous count comes back on exit)."""
    threads = torch.get_num_threads()
    if active:
        torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


class Lanes:
    """Runs pairs of independent callables, concurrently when ``parallel``.

    Use as a context manager: inside it torch runs each op on one thread (the two lanes are
    the parallelism) and a second thread waits for work. Results do not depend on
    ``parallel``: each callable owns its outputs and any generator it draws from.
    """

    def __init__(self, parallel: bool) -> None:
        self.parallel = parallel
        self.threads = torch.get_num_threads()  # the CPU threads torch had on entry
        self._pool: ThreadPoolExecutor | None = None

    def __enter__(self) -> Lanes:
        if self.parallel:
            torch.set_num_threads(1)
            self._pool = ThreadPoolExecutor(1, thread_name_prefix="clusterplot-lane")
        return self

    def __exit__(self, *exc: object) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None
            torch.set_num_threads(self.threads)

    def both(self, first: Callable[[], A], second: Callable[[], B]) -> tuple[A, B]:
        """``(first(), second())``, the two running at once when parallel."""
        if self._pool is None:
            return first(), second()
        future = self._pool.submit(first)
        try:
            out = second()
        finally:
            first_out = future.result()
        return first_out, out
