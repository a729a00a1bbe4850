"""One place that maps errors to ``{"detail": ..., "code": ...}`` responses, never a traceback."""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from clustviz.errors import (
    ClustvizError,
    InvalidInputError,
    NotFoundError,
    ProjectionFailedError,
    UnavailableError,
)
from service.deps import UnauthorizedError

logger = logging.getLogger("clustviz.service")

STATUS = [
    (NotFoundError, 404),
    (InvalidInputError, 422),
    (UnavailableError, 503),
    (UnauthorizedError, 401),
    (ProjectionFailedError, 500),
]


def error_response(status: int, detail: str, code: str, **headers: str) -> JSONResponse:
    return JSONResponse({"detail": detail, "code": code}, status_code=status, headers=headers)


def _status_of(exc: ClustvizError) -> int:
    for cls, status in STATUS:
        if isinstance(exc, cls):
            return status
    return 500


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(ClustvizError)
    async def clustviz_error(request: Request, exc: ClustvizError) -> JSONResponse:
        status = _status_of(exc)
        headers = {"Retry-After": "5"} if status == 503 else {}
        return error_response(status, exc.message, exc.code, **headers)

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        parts = []
        for error in exc.errors():
            location = ".".join(str(part) for part in error.get("loc", ()))
            value = error.get("input")
            shown = "" if error.get("type") == "missing" else f"={value!r}"[:200]
            parts.append(f"{location}{shown}: {error.get('msg')}")
        return error_response(422, "; ".join(parts) or "invalid request", "invalid_request")

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        codes = {404: "not_found", 405: "method_not_allowed", 413: "body_too_large"}
        return error_response(
            exc.status_code,
            str(exc.detail),
            codes.get(exc.status_code, f"http_{exc.status_code}"),
            **(exc.headers or {}),
        )

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception) -> JSONResponse:
        logger.exception("unhandled error on %s %s", request.method, request.url.path)
        return error_response(500, f"internal error ({type(exc).__name__})", "internal_error")
