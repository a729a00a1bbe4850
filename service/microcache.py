"""A small in-memory cache of whole responses of projections and plots, in front of the router.

Why: a cached projection still costs ~0.5 ms of routing, validation and serialisation in the
app, which caps one process near 1,800 requests/s — too few for 32 concurrent clients to see
single-digit milliseconds. Serving repeated GETs of projections and plots, and repeated
``POST /projections`` (a notebook asking for the same view again), from here costs a
dictionary look-up and two ``stat`` calls.

Correctness:
- Only answers the app marks with ``x-clustviz-cacheable: <dataset id> <content fingerprint>``
  are stored: projections already in the result store (so a stored body says ``"cached":
  true``) and rendered plots. Errors and 304s never are.
- Every hit asks ``is_current(dataset id, fingerprint)`` (the data catalog's
  :meth:`~clustviz.data.DataCatalog.is_current`) whether the dataset loaded now has that
  fingerprint; a replaced file (new fingerprint) or an unloaded dataset sends the request
  through the app again. That function is all the cache knows of the app.
- The key is the raw path and query string; ``If-None-Match`` is answered with 304 here too.
  For ``POST /projections`` it is the query string, the ``Accept`` header and the raw body
  (bodies over ``max_request`` bytes are not cached): the same request, byte for byte.
- Bounded: at most ``max_entries`` answers (LRU), each at most ``max_body`` bytes.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from cachetools import LRUCache
from starlette.types import ASGIApp, Message, Receive, Scope, Send

__all__ = ["CACHEABLE_HEADER", "ResponseCache", "ResponseCacheMiddleware"]

CACHEABLE_HEADER = "x-clustviz-cacheable"
_CACHEABLE = CACHEABLE_HEADER.encode()
PREFIXES = ("/projections/", "/plots/")
POST_PATH = "/projections"


@dataclass(frozen=True, slots=True)
class _Entry:
    headers: list[tuple[bytes, bytes]]
    body: bytes
    etag: bytes | None
    dataset_id: str
    fingerprint: str


#: ``is_current(dataset_id, fingerprint)``: whether an answer made from that content is still
#: the answer (the dataset loaded now has that fingerprint).
Freshness = Callable[[str, str], bool]


class ResponseCache:
    """The stored answers and their counters (shared by the middleware and /health)."""

    def __init__(
        self,
        is_current: Freshness,
        max_entries: int = 1024,
        max_body: int = 2 * 1024 * 1024,
        max_request: int = 4096,
    ) -> None:
        self.is_current = is_current
        self.max_entries = max_entries
        self.max_body = max_body
        self.max_request = max_request
        # a hit becomes the most recently used; past the bound the least recently used leaves
        self.entries: LRUCache[bytes, _Entry] = LRUCache(maxsize=max(1, max_entries))
        self.hits = 0
        self.misses = 0

    def stats(self) -> dict[str, int]:
        return {"entries": len(self.entries), "hits": self.hits, "misses": self.misses}


class ResponseCacheMiddleware:
    """Serves stored GET answers; stores the ones the app marks as cacheable."""

    def __init__(self, app: ASGIApp, cache: ResponseCache) -> None:
        self.app = app
        self.cache = cache

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or self.cache.max_entries <= 0:
            await self.app(scope, receive, send)
            return
        if scope["method"] == "POST" and scope["path"] == POST_PATH:
            received, body = await _read_body(receive, self.cache.max_request)
            receive = _replaying(received, receive)
            if body is None:  # too big to be a key, or the client went away
                await self.app(scope, receive, send)
                return
            accept = next((v for n, v in scope["headers"] if n == b"accept"), b"")
            key = b"POST?" + scope["query_string"] + b"\n" + accept + b"\n" + body
        elif scope["method"] == "GET" and scope["path"].startswith(PREFIXES):
            key = scope["path"].encode() + b"?" + scope["query_string"]
        else:
            await self.app(scope, receive, send)
            return
        entry = self.cache.entries.get(key)
        if entry is not None and self.cache.is_current(entry.dataset_id, entry.fingerprint):
            self.cache.hits += 1
            await self._replay(scope, entry, send)
            return
        if entry is not None:
            del self.cache.entries[key]
        self.cache.misses += 1
        await self.app(scope, receive, self._recorder(key, send))

    async def _replay(self, scope: Scope, entry: _Entry, send: Send) -> None:
        if entry.etag is not None:
            for name, value in scope["headers"]:
                if name == b"if-none-match" and entry.etag in (
                    tag.strip() for tag in value.split(b",")
                ):
                    headers = [(n, v) for n, v in entry.headers if n in (b"etag", b"cache-control")]
                    await send({"type": "http.response.start", "status": 304, "headers": headers})
                    await send({"type": "http.response.body", "body": b""})
                    return
        await send({"type": "http.response.start", "status": 200, "headers": entry.headers})
        await send({"type": "http.response.body", "body": entry.body})

    def _recorder(self, key: bytes, send: Send) -> Send:
        state: dict[str, Any] = {"mark": None, "headers": None, "chunks": [], "size": 0}

        async def record(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                marks = [value for name, value in headers if name == _CACHEABLE]
                # the mark is internal: it never reaches the client
                message = {**message, "headers": [(n, v) for n, v in headers if n != _CACHEABLE]}
                if message["status"] == 200 and marks:
                    state["mark"] = marks[0].decode()
                    state["headers"] = message["headers"]
            elif message["type"] == "http.response.body" and state["mark"] is not None:
                state["chunks"].append(message.get("body", b""))
                state["size"] += len(message.get("body", b""))
                if state["size"] > self.cache.max_body:
                    state["mark"] = None  # too big to keep
                elif not message.get("more_body", False):
                    self._store(key, state)
            await send(message)

        return record

    def _store(self, key: bytes, state: dict[str, Any]) -> None:
        dataset_id, _, fingerprint = state["mark"].partition(" ")
        headers = state["headers"]
        etag = next((value for name, value in headers if name == b"etag"), None)
        self.cache.entries[key] = _Entry(
            headers, b"".join(state["chunks"]), etag, dataset_id, fingerprint
        )


async def _read_body(receive: Receive, limit: int) -> tuple[list[Message], bytes | None]:
    """The request's messages as received, and its body (``None`` when over ``limit`` bytes or
    cut short): the app gets the same messages replayed."""
    received: list[Message] = []
    size = 0
    while True:
        message = await receive()
        received.append(message)
        if message["type"] != "http.request":
            return received, None
        size += len(message.get("body", b""))
        if size > limit:
            return received, None
        if not message.get("more_body", False):
            return received, b"".join(m.get("body", b"") for m in received)


def _replaying(received: list[Message], receive: Receive) -> Receive:
    """A ``receive`` that hands out ``received`` first, then reads on."""
    pending = list(received)

    async def replay() -> Message:
        return pending.pop(0) if pending else await receive()

    return replay
