"""Following a batch job's or a map's Server-Sent Events stream from a client: the events,
reconnected where a connection dropped, and a progress bar fed by them
(:class:`clustviz.client.Client` uses these for ``wait`` and ``wait_map``)."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from typing import Any

import httpx

__all__ = ["follow_events", "follow_with_bar", "parse_events"]


def follow_events(
    http: httpx.Client,
    url: str,
    *,
    check: Callable[[httpx.Response], None],
    last_event_id: str | None = None,
    read_timeout: float | None = 60.0,
    max_retries: int = 8,
) -> Iterator[tuple[str, dict[str, Any]]]:
    """``(event, data)`` pairs from the stream at ``url`` until its ``end`` event.

    A dropped connection, or one silent for ``read_timeout`` seconds (the server sends
    keep-alive comments), is reopened with ``Last-Event-ID``: the stream goes on where it
    stopped, no event twice, none missed. ``max_retries`` reconnects in a row that bring no
    event raise the last error; ``check`` raises for an error answer."""
    base = http.timeout
    timeout = httpx.Timeout(base.connect, read=read_timeout, write=base.write, pool=base.pool)
    failures = 0
    while True:
        headers = {} if last_event_id is None else {"Last-Event-ID": last_event_id}
        try:
            with http.stream("GET", url, headers=headers, timeout=timeout) as response:
                if response.status_code == 204:  # the end was already received
                    return
                check(response)
                for event, event_id, data in parse_events(response.iter_lines()):
                    failures = 0
                    if event_id is not None:
                        last_event_id = event_id
                    yield event, json.loads(data)
                    if event == "end":
                        return
            error: Exception = httpx.RemoteProtocolError("the event stream closed early")
        except httpx.TransportError as exc:  # dropped, timed out, refused: reconnect
            error = exc
        failures += 1
        if failures > max_retries:
            raise error
        time.sleep(min(0.25 * 2 ** (failures - 1), 5.0))


def follow_with_bar(
    events: Iterator[tuple[str, dict[str, Any]]],
    status: dict[str, Any],
    bar_args: dict[str, Any],
    show: Callable[[Any, dict[str, Any]], None],
    progress: bool,
) -> dict[str, Any]:
    """Read ``events`` to their end, showing each with ``show`` on a tqdm bar made with
    ``bar_args`` (hidden unless ``progress``); the last status (``status`` if none came)."""
    from tqdm.auto import tqdm

    bar = tqdm(disable=not progress, **bar_args)
    try:
        for event, data in events:
            show(bar, data)
            bar.refresh()
            status = data
            if event == "end":
                break
    finally:
        bar.close()
    return status


def parse_events(lines: Iterator[str]) -> Iterator[tuple[str, str | None, str]]:
    """``(event, id, data)`` per event of a Server-Sent Events stream (comments skipped)."""
    event: str
    event_id: str | None
    data: list[str]
    event, event_id, data = "message", None, []
    for line in lines:
        if not line:  # a blank line dispatches the event
            if data:
                yield event, event_id, "\n".join(data)
            event, event_id, data = "message", None, []
            continue
        field, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if field == "event":
            event = value
        elif field == "data":
            data.append(value)
        elif field == "id":
            event_id = value
    # an event without its blank line was cut short: dropped, as a browser drops it
