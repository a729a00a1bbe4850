"""ETags and conditional GETs (``If-None-Match`` → ``304``), one definition for every route."""

from __future__ import annotations

import hashlib

from fastapi import Request

__all__ = ["etag", "not_modified"]


def etag(key: str) -> str:
    """The quoted ETag of an answer named by ``key`` (a content-addressed key never changes)."""
    return '"' + hashlib.sha256(key.encode()).hexdigest()[:32] + '"'


def not_modified(request: Request, tag: str) -> bool:
    """Whether the request's ``If-None-Match`` names ``tag`` (or ``*``)."""
    header = request.headers.get("if-none-match", "")
    return tag in {value.strip() for value in header.split(",")} or header.strip() == "*"
