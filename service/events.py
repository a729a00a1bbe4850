"""Server-Sent Events of durable work (a batch job, a global map), resumable from stored state.

Every event's id comes from the work's stored status (for a job, the items finished; for a map,
its count of stored changes), so it is the same on every connection and after a restart: a
stream resumed after an id (the client's ``Last-Event-ID``) sends only what follows it, and
``end`` (id past every ``progress`` id) once the work has finished. A comment
(``: keep-alive``) goes out when nothing happened for ``keepalive`` seconds.
"""

from __future__ import annotations

import asyncio
import functools
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

__all__ = ["ACTIVE", "Changes", "event_stream", "notify", "sse"]

#: States of work still going on: its stream waits for changes.
ACTIVE = ("queued", "running")


@dataclass(slots=True)
class Changes:
    """A running piece of work's in-memory change counter, which its streams wait on."""

    version: int = 0
    changed: asyncio.Condition = field(default_factory=asyncio.Condition)


async def notify(changes: Changes) -> None:
    """Wake the streams of this work: its stored status has changed."""
    async with changes.changed:
        changes.version += 1
        changes.changed.notify_all()


async def event_stream(
    changes: Changes,
    read_status: Callable[[], Awaitable[dict[str, Any] | None]],
    *,
    progress_id: Callable[[dict[str, Any]], int],
    end_id: Callable[[dict[str, Any]], int],
    keepalive: float,
    after: int | None = None,
    settle: Callable[[], Awaitable[None]] | None = None,
) -> AsyncIterator[str]:
    """``progress`` events as the status read by ``read_status`` changes, then ``end``.

    ``read_status`` returns ``None`` once the work is gone (the stream then ends); ``settle``,
    awaited after each wake-up, lets a caller coalesce bursts of changes into one event."""
    sent = -1 if after is None else after

    def changed_since(version: int) -> bool:
        return changes.version != version

    while True:
        version = changes.version  # before the read: a change during it is not missed
        status = await read_status()
        if status is None:
            return
        current = progress_id(status)
        if current > sent:
            sent = current
            yield sse("progress", current, status)
        if status["state"] not in ACTIVE:
            if sent < end_id(status):
                yield sse("end", end_id(status), status)
            return
        async with changes.changed:
            try:
                await asyncio.wait_for(
                    changes.changed.wait_for(functools.partial(changed_since, version)),
                    keepalive,
                )
            except TimeoutError:
                yield ": keep-alive\n\n"
        if settle is not None:
            await settle()


def sse(event: str, event_id: int, data: dict[str, Any]) -> str:
    """One Server-Sent Event with its id and a compact JSON payload."""
    payload = json.dumps(data, separators=(",", ":"))
    return f"id: {event_id}\nevent: {event}\ndata: {payload}\n\n"
