"""Service settings from ``CLUSTVIZ_*`` environment variables (and command-line flags).

Read when ``create_app`` runs, never at import time.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from clustviz.projectors import projectors_run_by

__all__ = ["Settings"]

REPO_ROOT = Path(__file__).resolve().parents[1]


def _default_workers() -> int:
    # One single-threaded worker per core, at least one, at most four: numba fits are
    # single-threaded when seeded, so more workers than cores only adds memory.
    return max(1, min(4, os.cpu_count() or 1))


class Settings(BaseSettings):
    """Everything configurable; each field is ``CLUSTVIZ_<NAME>`` in the environment."""

    model_config = SettingsConfigDict(env_prefix="CLUSTVIZ_", extra="ignore")

    host: str = "127.0.0.1"
    port: int = Field(8000, ge=1, le=65535)
    data_dir: Path = REPO_ROOT / "data" / "demo"
    state_dir: Path = REPO_ROOT / ".state"
    device: Literal["auto", "cpu", "cuda"] = "auto"
    executor: Literal["local", "ray"] = Field(
        "local", description="local warm worker processes, or a Ray cluster (RAY_ADDRESS)"
    )
    ray_address: str | None = Field(
        None, validation_alias="RAY_ADDRESS", description="Ray cluster; unset: a local instance"
    )
    workers: int = Field(default_factory=_default_workers, ge=1, le=64)
    plugins: tuple[str, ...] = Field(
        (),
        description="modules imported at start, in the server and in every worker, that "
        "register more projectors (clustviz.projectors.register)",
    )
    warm: tuple[str, ...] = Field(
        default_factory=lambda: projectors_run_by("pool"),
        description="projectors the CPU workers warm up (default: the registry's pool ones)",
    )
    projection_timeout: float = Field(120.0, gt=0, description="Seconds before a run is stopped.")
    map_timeout: float = Field(
        1800.0, gt=0, description="Seconds before a global map's fit is stopped."
    )
    max_loaded_datasets: int = Field(4, ge=1)
    cache_max_bytes: int = Field(512 * 1024 * 1024, ge=1024 * 1024)
    memory_cache_bytes: int = Field(64 * 2**20, ge=0)  # the store's in-memory front
    response_cache_entries: int = Field(
        1024, ge=0, description="whole GET answers kept in memory in front of the router"
    )
    max_queue: int = Field(256, ge=1, description="Heavy tasks queued before 503.")
    lane_window_ms: float = Field(10.0, ge=0, description="How long the device lane gathers.")
    lane_max_batch: int = Field(512, ge=1)
    max_points: int = Field(5000, ge=1, description="points of one preamble per projection")
    sse_keepalive_s: float = Field(
        15.0, gt=0, description="seconds of silence before an event stream's keep-alive comment"
    )
    max_batch_items: int = Field(100_000, ge=1, description="preambles × projectors per batch")
    cors_origins: list[str] = Field(default_factory=list)
    api_key: str | None = Field(None, description="If set, required on mutating endpoints.")
    max_body_bytes: int = Field(1024 * 1024, ge=1024)

    numba_cache_dir_: Path | None = Field(
        None,
        validation_alias="CLUSTVIZ_NUMBA_CACHE_DIR",
        description="numba's compile cache; default: <state_dir>/numba-cache",
    )

    @property
    def numba_cache_dir(self) -> Path:
        return self.numba_cache_dir_ or self.state_dir / "numba-cache"

    @property
    def store_path(self) -> Path:
        return self.state_dir / "clustviz.sqlite3"
