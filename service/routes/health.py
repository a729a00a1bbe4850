"""``GET /health``: liveness, device, versions, warm-up state. Never touches heavy work."""

from __future__ import annotations

import platform
import time
from importlib import metadata

from fastapi import APIRouter, Request

from clustviz.projectors import available_projectors
from service.deps import EngineDep
from service.schemas import Health, LaneCounts, WarmUp

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
    """Answers at once, also while projections run or workers are still warming up.

    ``status`` is ``degraded`` when any projector's (or the renderer's) warm-up failed in its
    workers, ``warming`` while workers start or warm up, else ``ok``."""
    lane_pool = request.app.state.lane_pool
    pools = [engine.pool] if lane_pool is None else [engine.pool, lane_pool]
    pool, *lanes = (p.status() for p in pools)
    warm_up = {name: WarmUp(state="cold") for name in available_projectors()}
    for each in pools:
        warm_up.update((name, WarmUp(**state)) for name, state in each.warm_states().items())
    states = {entry.state for entry in warm_up.values()}
    ready = all(p["ready"] == p["size"] for p in (pool, *lanes))
    warm = ready and "warming" not in states
    status = "degraded" if "failed" in states else "ok" if warm else "warming"
    return Health(
        status=status,
        version=metadata.version("clustviz"),
        device=engine.device,
        cuda=engine.cuda_available,
        versions=request.app.state.versions,
        warm=warm,
        warm_up=warm_up,
        pool=pool,
        lane=lanes[0] if lanes else None,
        lane_runs=(
            LaneCounts(batches=engine.lane.batches_run, items=engine.lane.items_run)
            if engine.lane is not None
            else None
        ),
        datasets=len(engine.catalog.sources()),
        uptime_s=round(time.monotonic() - request.app.state.started, 3),
    )
