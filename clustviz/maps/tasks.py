"""What a worker process runs for a global map (``"clustviz.maps.tasks:fit_source_map"``).

The worker loads the dataset itself from its files (a clamp-scale dataset's embeddings are
hundreds of megabytes: they never cross a pipe), fits the map, and returns its coordinates and
summary. Progress crosses the process boundary as a small JSON file that the worker replaces
atomically (write a temporary file, ``os.replace``), at most every ``PROGRESS_EVERY_S``
seconds and on every change of stage; the server reads the latest one. The server stops a fit
by creating the file's ``.cancel`` sibling: the next progress report raises
:class:`MapCancelledError` (the worker is free again; umap-learn reports at stage ends only).
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

from clustviz.data.discovery import DatasetSource
from clustviz.data.loading import load_dataset
from clustviz.errors import ClustvizError, InvalidInputError
from clustviz.maps.fitting import MapProgress, MapRequest, fit_dataset_map

__all__ = [
    "PROGRESS_EVERY_S",
    "MapCancelledError",
    "ProgressFile",
    "cancel_path",
    "fit_source_map",
    "read_progress",
]

PROGRESS_EVERY_S = 0.2


class MapCancelledError(ClustvizError):
    """The server asked the worker to stop this map's fit (the map was deleted)."""

    default_code = "map_cancelled"


def cancel_path(progress_path: Path) -> Path:
    """The file whose existence asks the fit reporting to ``progress_path`` to stop."""
    return progress_path.with_name(progress_path.name + ".cancel")


class ProgressFile:
    """A progress callback that writes the latest :class:`MapProgress` to ``path``."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.cancel = cancel_path(path)
        self._written_at = 0.0
        self._stage: str | None = None

    def __call__(self, progress: MapProgress) -> None:
        if self.cancel.exists():
            self.cancel.unlink(missing_ok=True)  # seen: the server knows the worker stopped
            raise MapCancelledError(f"the fit was stopped at stage {progress.stage!r}")
        now = time.monotonic()
        new_stage = progress.stage != self._stage
        if not new_stage and now - self._written_at < PROGRESS_EVERY_S:
            return
        self._stage, self._written_at = progress.stage, now
        temporary = self.path.with_name(self.path.name + f".{os.getpid()}.tmp")
        temporary.write_text(
            json.dumps(
                {
                    "stage": progress.stage,
                    "stage_fraction": progress.stage_fraction,
                    "fraction": progress.fraction,
                }
            )
        )
        os.replace(temporary, self.path)


def read_progress(path: Path) -> MapProgress | None:
    """The latest progress a worker wrote to ``path``; ``None`` when there is none (yet)."""
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return MapProgress(str(data["stage"]), float(data["stage_fraction"]), float(data["fraction"]))


def fit_source_map(
    source: DatasetSource, fingerprint: str, request: dict[str, Any], progress_path: str
) -> dict[str, Any]:
    """Load the dataset at ``source``, check it is still the content ``fingerprint`` names,
    fit the map of ``request`` (a :class:`MapRequest` as a dict) with progress written to
    ``progress_path``. Returns ``{"coords": (n, 2) float32, "summary": {...}}``."""
    dataset = load_dataset(source)
    if dataset.fingerprint != fingerprint:
        raise InvalidInputError(
            f"dataset {source.id!r} changed on disk since the map was asked for; ask again",
            code="dataset_changed",
        )
    result = fit_dataset_map(
        dataset, MapRequest(**request), progress=ProgressFile(Path(progress_path))
    )
    return {"coords": result.coords, "summary": result.summary()}
