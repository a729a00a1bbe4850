"""Task functions for the worker-pool tests (imported by spawned workers via sys.path)."""

from __future__ import annotations

import os
import time

from clustviz.errors import InvalidInputError


def add(a: int, b: int) -> int:
    return a + b


def sleep(seconds: float) -> str:
    time.sleep(seconds)
    return "slept"


def crash() -> None:
    os._exit(3)  # like a segfault in a native library: no exception, the process is gone


def refuse(value: int) -> None:
    raise InvalidInputError(f"value={value} is not allowed", code="bad_value")


def explode() -> None:
    raise RuntimeError("library blew up")


def pid() -> int:
    return os.getpid()


def thread_pools() -> list[dict[str, object]]:
    """The native thread pools loaded in this process (BLAS, OpenMP) and their sizes."""
    import numpy as np
    from threadpoolctl import threadpool_info

    np.ones((64, 64)) @ np.ones((64, 64))  # BLAS loaded and used
    return [{"api": i["user_api"], "threads": i["num_threads"]} for i in threadpool_info()]
