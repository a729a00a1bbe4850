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
from service.maps import MapNotReadyError

logger = logging.getLogger("clustviz.service")

STATUS = [
    (NotFoundError, 404),
    (MapNotReadyError, 409),
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
        code = "invalid_request"
        for error in exc.errors():
            location_names = set(error.get("loc", ()))
            if error.get("type") == "unknown_projector" or (
                error.get("type") == "literal_error"
                and {"projector", "projectors"} & location_names
            ):
                code = "unknown_projector"  # the same stable code as the library's check
            location = ".".join(str(part) for part in error.get("loc", ()))
            value = error.get("input")
            shown = "" if error.get("type") == "missing" else f"={value!r}"[:200]
            parts.append(f"{location}{shown}: {error.get('msg')}")
        return error_response(422, "; ".join(parts) or "invalid request", code)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        codes = {404: "not_found", 405: "method_not_allowed", 413: "body_too_large"}
        headers = dict(exc.headers or {})
        if exc.status_code == 400:  # an unparseable body is bad input, like any other: 422
            return error_response(422, f"invalid request body: {exc.detail}", "invalid_request")
        if exc.status_code == 405:
            headers["Allow"] = _allowed_methods(app, request)
        return error_response(
            exc.status_code,
            str(exc.detail),
            codes.get(exc.status_code, f"http_{exc.status_code}"),
            **headers,
        )

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception) -> JSONResponse:
        logger.exception("unhandled error on %s %s", request.method, request.url.path)
        return error_response(500, f"internal error ({type(exc).__name__})", "internal_error")


def _allowed_methods(app: FastAPI, request: Request) -> str:
    """Every method any route serves on this path (Starlette names only the first route's)."""
    from starlette.routing import Match

    methods: set[str] = set()

    def visit(routes: list) -> None:
        for route in routes:
            nested = getattr(route, "original_router", None)  # FastAPI's included routers
            if nested is not None:
                visit(nested.routes)
                continue
            match, _ = route.matches(request.scope)
            if match != Match.NONE:
                methods.update(getattr(route, "methods", None) or ())

    visit(app.router.routes)
    return ", ".join(sorted(methods))
