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
