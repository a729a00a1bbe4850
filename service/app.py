"""The FastAPI app factory. Nothing heavy happens on import or on the event loop.

The server answers within about two seconds of start (measured 1.4–1.8 s here, Python start
included): workers are spawned and warm up in the background, datasets are validated in a
background thread, and ``/health`` reports progress meanwhile.
"""

from __future__ import annotations

import asyncio
import functools
import importlib
import logging
import os
import threading
import time
from collections.abc import AsyncIterator
from concurrent.futures import Future
from contextlib import asynccontextmanager
from importlib import metadata
from pathlib import Path

from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import FileResponse, Response
from fastapi.staticfiles import StaticFiles
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from clustviz.data import DataCatalog
from clustviz.errors import ClustvizError
from clustviz.lane import DeviceLane
from clustviz.pools import TaskPool
from clustviz.projectors import projectors_run_by
from clustviz.workers import WorkerPool, WorkerSettings
from service.alignment import Aligner
from service.bodies import ProjectionBodies
from service.engine import Engine
from service.errors import error_response, install_error_handlers
from service.jobs import JobManager
from service.maps import MapManager
from service.microcache import ResponseCache, ResponseCacheMiddleware
from service.results import ResultStore
from service.routes import batches, datasets, health, maps, projections
from service.routes.health import library_versions_report
from service.schemas import ErrorResponse
from service.settings import Settings

__all__ = ["create_app"]

logger = logging.getLogger("clustviz.service")

STATIC_DIR = Path(__file__).parent / "static"


def make_pools(settings: Settings) -> tuple[TaskPool, TaskPool]:
    """The CPU pool for the registry's ``pool`` projectors and rendering, and the one-process
    device lane for its ``lane`` projectors (or both on Ray when ``CLUSTVIZ_EXECUTOR=ray``)."""
    cache_dir = str(settings.numba_cache_dir)
    if settings.executor == "ray":
        from clustviz.raypool import RayPool

        env = {"NUMBA_CACHE_DIR": cache_dir, "MPLBACKEND": "Agg", "OMP_NUM_THREADS": "1"}
        pool = RayPool(
            address=settings.ray_address,
            default_timeout=settings.projection_timeout,
            max_queue=settings.max_queue,
            env=env,
            local_cpus=settings.workers,
            imports=settings.plugins,
        )
        # the lane's batches ask Ray for a GPU when the service is configured for CUDA.
        lane_pool = RayPool(
            address=settings.ray_address,
            num_gpus=1 if settings.device == "cuda" else 0,
            default_timeout=settings.projection_timeout,
            imports=settings.plugins,
        )
        return pool, lane_pool
    local_pool = WorkerPool(
        settings.workers,
        WorkerSettings(
            warm=settings.warm, numba_cache_dir=cache_dir, threads=1, imports=settings.plugins
        ),
        max_queue=settings.max_queue,
        default_timeout=settings.projection_timeout,
    )
    # The lane gets all cores' worth of torch threads: its batches are the big, parallel work.
    local_lane = WorkerPool(
        1,
        WorkerSettings(
            warm=projectors_run_by("lane"),
            warm_render=False,
            numba_cache_dir=cache_dir,
            threads=os.cpu_count() or 1,
            imports=settings.plugins,
        ),
        max_queue=settings.max_queue,
        default_timeout=settings.projection_timeout,
    )
    return local_pool, local_lane


def create_app(
    settings: Settings | None = None,
    *,
    pool: TaskPool | None = None,
    lane_pool: TaskPool | None = None,
) -> FastAPI:
    """Build the app. Pools passed in are used as they are and not closed on shutdown
    (tests share warm pools across apps); otherwise the lifespan creates and closes them."""
    settings = settings or Settings()
    for module in settings.plugins:  # their projectors join this process's registry
        importlib.import_module(module)
    # made here, not in the lifespan: the response cache asks it whether an answer is current
    catalog = DataCatalog(settings.data_dir, max_loaded=settings.max_loaded_datasets)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        settings.state_dir.mkdir(parents=True, exist_ok=True)
        own_lane_pool: TaskPool | None
        owned: list[TaskPool] = []  # closed on shutdown
        try:
            device = _device_label(settings.device)
            if pool is None:
                own_pool, own_lane_pool = owned = list(make_pools(settings))  # local or Ray
        except ClustvizError as exc:  # device_unavailable, ray_missing: say which, then fail
            logger.error("start-up failed (%s): %s", exc.code, exc.message)
            raise
        if pool is None:
            for started in owned:
                started.start()
        else:
            own_pool, own_lane_pool = pool, lane_pool
        store = await asyncio.to_thread(  # opening it runs SQL: not on the event loop
            ResultStore,
            settings.store_path,
            max_bytes=settings.cache_max_bytes,
            memory_bytes=settings.memory_cache_bytes,
        )
        lane = None
        if own_lane_pool is not None:
            lane = DeviceLane(
                functools.partial(own_lane_pool.submit, "clustviz.tasks:project_many"),
                window=settings.lane_window_ms / 1000,
                max_batch=settings.lane_max_batch,
            )
        engine = Engine(
            catalog=catalog,
            store=store,
            pool=own_pool,
            lane=lane,
            device=device,
            device_setting=settings.device,
            timeout=settings.projection_timeout,
            max_queue=settings.max_queue,
            max_points=settings.max_points,
        )
        app.state.engine = engine
        map_manager = MapManager(
            engine,
            store,
            own_pool,
            state_dir=settings.state_dir,
            timeout=settings.map_timeout,
            keepalive=settings.sse_keepalive_s,
        )
        app.state.maps = map_manager
        aligner = app.state.aligner = Aligner(map_manager, store)
        jobs = JobManager(
            engine,
            store,
            aligner,
            max_items=settings.max_batch_items,
            library_concurrency=2 * own_pool.status()["size"],
            lane_chunk=settings.lane_max_batch,
            keepalive=settings.sse_keepalive_s,
        )
        app.state.jobs = jobs
        await jobs.resume_all()
        await map_manager.resume_all()
        app.state.lane_pool = own_lane_pool
        app.state.versions = library_versions_report()
        # Validate datasets in the background so GET /datasets soon shows real statuses.
        threading.Thread(target=catalog.check_all, name="clustviz-check", daemon=True).start()
        if own_lane_pool is not None:
            # The device lane's worker resolves it: the server process never imports torch.
            own_lane_pool.submit("clustviz.tasks:device_name", "auto").add_done_callback(
                functools.partial(_set_device, engine, settings.device)
            )
        try:
            yield
        finally:
            await jobs.shutdown()
            await map_manager.shutdown()
            if lane is not None:
                lane.close()
            for own in reversed(owned):
                await asyncio.to_thread(own.close)
            await asyncio.to_thread(store.close)

    app = FastAPI(
        title="clustviz",
        version=metadata.version("clustviz"),
        description="2-D projections of language-model guess embeddings: t-SNE, UMAP, TriMAP, "
        "PaCMAP and a cluster-aware layout, as JSON or plots.",
        lifespan=lifespan,
        # Answers every route can give before its own logic runs.
        responses={
            400: {
                "description": "malformed HTTP request, rejected by the HTTP server (e.g. a "
                "request line over its size limit)"
            },
            413: {"model": ErrorResponse, "description": "request body over the size limit"},
        },
    )
    app.state.settings = settings
    app.state.started = time.monotonic()
    app.state.response_cache = ResponseCache(
        catalog.is_current, max_entries=settings.response_cache_entries
    )
    app.state.bodies = ProjectionBodies()
    install_error_handlers(app)
    # Innermost first: CORS (outer) adds its headers to cached answers too.
    app.add_middleware(ResponseCacheMiddleware, cache=app.state.response_cache)
    if settings.cors_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.cors_origins,
            allow_methods=["GET", "POST", "DELETE"],
            allow_headers=["Content-Type", "X-API-Key", "If-None-Match"],
            expose_headers=["ETag"],
        )

    app.add_middleware(BodyLimit, max_bytes=settings.max_body_bytes)

    app.include_router(health.router)
    app.include_router(datasets.router)
    app.include_router(projections.router)
    app.include_router(batches.router)
    app.include_router(maps.router)

    if STATIC_DIR.is_dir():
        app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")

    @app.get("/", include_in_schema=False)
    def index() -> Response:
        page = STATIC_DIR / "index.html"
        if not page.is_file():
            return error_response(404, "no web page is installed", "not_found")
        return FileResponse(page, headers={"Cache-Control": "no-cache"})

    return app


class BodyLimit:
    """413 for a body over ``max_bytes``: by Content-Length up front; a body without one
    (chunked) is read here, up to the limit, and replayed to the app. Plain ASGI (no
    per-request wrapper objects): the cached path stays cheap."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        length = dict(scope["headers"]).get(b"content-length")
        if length is not None:
            if not length.isdigit() or int(length) > self.max_bytes:
                await self._refuse(scope, receive, send, length.decode("latin-1"))
                return
            await self.app(scope, receive, send)
            return
        messages: list[Message] = []
        seen = 0
        while True:
            message = await receive()
            messages.append(message)
            seen += len(message.get("body", b""))
            if seen > self.max_bytes:
                await self._refuse(scope, receive, send, f"more than {self.max_bytes}")
                return
            if message["type"] != "http.request" or not message.get("more_body", False):
                break

        async def replay() -> Message:
            return messages.pop(0) if messages else await receive()

        await self.app(scope, replay, send)

    async def _refuse(self, scope: Scope, receive: Receive, send: Send, size: str) -> None:
        response = error_response(
            413,
            f"request body of {size} bytes exceeds the limit of {self.max_bytes}",
            "body_too_large",
        )
        await response(scope, receive, send)


def _device_label(name: str) -> str:
    if name == "auto":
        return "pending"  # the device lane's worker resolves it in the background
    if name == "cpu":
        return "cpu"
    from clustviz.device import resolve_device

    return str(resolve_device(name))  # explicit "cuda" without CUDA fails start-up, loudly


def _set_device(engine: Engine, setting: str, done: Future[str]) -> None:
    """What the lane's worker found for ``auto``: CUDA or not, and the device label."""
    if done.exception() is None:
        found = done.result()
        engine.cuda_available = found.startswith("cuda")
        if setting == "auto":
            engine.device = found
