"""Give freed memory back to the operating system after a big piece of work.

A whole-dataset job or export frees what it allocated, but the allocators keep the freed
pages for reuse: glibc's heap (many ~100 KB pickles of embeddings sent to the workers, the
results coming back) and Arrow's memory pool (the export's row groups). The server's resident
size would stay at the job's peak. Trimming after each job and export brings it back near idle.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools

import pyarrow as pa

__all__ = ["release_unused_memory"]


@functools.cache
def _malloc_trim() -> ctypes._NamedFuncPointer | None:
    name = ctypes.util.find_library("c")
    try:
        return ctypes.CDLL(name).malloc_trim if name else None
    except (OSError, AttributeError):  # not glibc (musl, macOS): nothing to trim
        return None


def release_unused_memory() -> None:
    """Return the free pages of Arrow's pool and of the C heap to the OS (cheap, idempotent)."""
    pa.default_memory_pool().release_unused()
    trim = _malloc_trim()
    if trim is not None:
        trim(0)
