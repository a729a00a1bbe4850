"""``GET /health``: liveness, device, versions, warm-up state. Never touches heavy work."""

from __future__ import annotations

import platform
import time
from importlib import metadata

from fastapi import APIRouter, Request

from service.deps import EngineDep
from service.schemas import Health, LaneCounts

router = APIRouter(tags=["health"])

_LIBRARIES = ("clustviz", "numpy", "scikit-learn", "umap-learn", "pacmap", "trimap", "torch")


def library_versions_report() -> dict[str, str]:
    """Python and the versions of the libraries that shape results (shown by /health)."""
    versions = {"python": platform.python_version()}
    for name in _LIBRARIES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "absent"
    return versions


@router.get("/health", response_model=Health)
def health(request: Request, engine: EngineDep) -> Health:
    """Answers at once, also while projections run or workers are still warming up."""
    pool = engine.pool.status()
    lane = request.app.state.lane_pool.status() if request.app.state.lane_pool else None
    warm = pool["ready"] == pool["size"] and (lane is None or lane["ready"] == lane["size"])
    return Health(
        status="ok" if warm else "warming",
        version=metadata.version("clustviz"),
        device=engine.device,
        versions=request.app.state.versions,
        warm=warm,
        pool=pool,
        lane=lane,
        lane_runs=(
            LaneCounts(batches=engine.lane.batches_run, items=engine.lane.items_run)
            if engine.lane is not None
            else None
        ),
        datasets=len(engine.catalog.sources()),
        uptime_s=round(time.monotonic() - request.app.state.started, 3),
    )
