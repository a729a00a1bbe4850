"""Typed dependencies shared by the routers."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Header, Request

from clustviz.errors import ClustvizError
from service.alignment import Aligner
from service.bodies import ProjectionBodies
from service.engine import Engine
from service.maps import MapManager
from service.settings import Settings


class UnauthorizedError(ClustvizError):
    """A mutating endpoint was called without the configured API key (→ 401)."""

    default_code = "unauthorized"


def get_engine(request: Request) -> Engine:
    return request.app.state.engine


def get_settings(request: Request) -> Settings:
    return request.app.state.settings


def get_bodies(request: Request) -> ProjectionBodies:
    return request.app.state.bodies


def get_maps(request: Request) -> MapManager:
    return request.app.state.maps


def get_aligner(request: Request) -> Aligner:
    return request.app.state.aligner


EngineDep = Annotated[Engine, Depends(get_engine)]
MapsDep = Annotated[MapManager, Depends(get_maps)]
AlignerDep = Annotated[Aligner, Depends(get_aligner)]
BodiesDep = Annotated[ProjectionBodies, Depends(get_bodies)]
SettingsDep = Annotated[Settings, Depends(get_settings)]


def require_api_key(
    settings: SettingsDep, x_api_key: Annotated[str | None, Header()] = None
) -> None:
    """Guard for mutating endpoints: enforced only when ``CLUSTVIZ_API_KEY`` is set."""
    import hmac

    if settings.api_key and not hmac.compare_digest(x_api_key or "", settings.api_key):
        raise UnauthorizedError("missing or wrong X-API-Key header")


ApiKeyDep = Depends(require_api_key)
