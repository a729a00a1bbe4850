"""Global maps' persistence: one row per map in the service's database (:mod:`service.database`).

Every statement runs on the result store's thread, never on the event loop (the ``async``
methods below). A map's coordinates are one float32 blob, written by the same statement that
marks the map done: a map is never served half written, and one killed mid-fit is still
queued or running (no coordinates) when the server starts again.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from clustviz.errors import NotFoundError
from service.results import ResultStore

__all__ = ["MapStore", "StoredMap"]

_STATUS_COLUMNS = (
    "id, spec, state, progress, stage, updates, created, started, finished, error, code, summary"
)


@dataclass(frozen=True, slots=True)
class StoredMap:
    """A finished map's coordinates, in its dataset's row order."""

    id: str
    spec: dict[str, Any]
    coords: np.ndarray  # (n, 2) float32, read-only: a view on the row's bytes


class MapStore:
    """The maps table: create, start, report progress, finish, fail, read, list, delete."""

    def __init__(self, results: ResultStore) -> None:
        self._results = results

    async def create(self, map_id: str, spec: dict[str, Any], *, created: float) -> bool:
        """A queued map, unless one with that id exists; whether it was created. A failed map
        asked for again is queued again (its failure may have been the machine's)."""
        return await self._results.run(self._create, map_id, json.dumps(spec), created)

    def _create(self, map_id: str, spec: str, created: float) -> bool:
        rows = self._results.query("SELECT state FROM maps WHERE id = ?", (map_id,))
        if not rows:
            self._results.execute(
                "INSERT INTO maps (id, spec, state, progress, stage, updates, created)"
                " VALUES (?, ?, 'queued', 0, NULL, 0, ?)",
                (map_id, spec, created),
            )
            return True
        if rows[0][0] == "failed":
            self._results.execute(
                "UPDATE maps SET state = 'queued', progress = 0, stage = NULL,"
                " updates = updates + 1, started = NULL, finished = NULL, error = NULL,"
                " code = NULL WHERE id = ? AND state = 'failed'",
                (map_id,),
            )
            return True
        return False

    async def active(self) -> list[str]:
        """The ids of the maps queued or running, oldest first."""
        rows = await self._results.run(
            self._results.query,
            "SELECT id FROM maps WHERE state IN ('queued', 'running') ORDER BY created",
        )
        return [row[0] for row in rows]

    async def start(self, map_id: str, *, now: float) -> None:
        """Running from ``now`` (a resumed map starts its fit over: progress back to 0)."""
        await self._results.run(
            self._results.execute,
            "UPDATE maps SET state = 'running', started = ?, progress = 0, stage = NULL,"
            " updates = updates + 1 WHERE id = ? AND state IN ('queued', 'running')",
            (now, map_id),
        )

    async def progress(self, map_id: str, stage: str, fraction: float) -> None:
        await self._results.run(
            self._results.execute,
            "UPDATE maps SET stage = ?, progress = MAX(progress, ?), updates = updates + 1"
            " WHERE id = ? AND state = 'running'",
            (stage, fraction, map_id),
        )

    async def finish(
        self, map_id: str, coords: np.ndarray, summary: dict[str, Any], *, now: float
    ) -> None:
        """Done: the coordinates, the summary and the state in one statement (one transaction)."""
        xy = np.ascontiguousarray(coords, dtype="<f4")
        await self._results.run(
            self._results.execute,
            "UPDATE maps SET state = 'done', progress = 1, stage = 'done', finished = ?,"
            " summary = ?, n = ?, coords = ?, updates = updates + 1"
            " WHERE id = ? AND state = 'running'",
            (now, json.dumps(summary), int(xy.shape[0]), xy.tobytes(), map_id),
        )

    async def fail(self, map_id: str, error: str, code: str, *, now: float) -> None:
        await self._results.run(
            self._results.execute,
            "UPDATE maps SET state = 'failed', finished = ?, error = ?, code = ?,"
            " updates = updates + 1 WHERE id = ? AND state IN ('queued', 'running')",
            (now, error, code, map_id),
        )

    async def delete(self, map_id: str) -> bool:
        """Remove the map and its coordinates; whether it existed."""
        return await self._results.run(self._delete, map_id)

    def _delete(self, map_id: str) -> bool:
        found = self._results.query("SELECT 1 FROM maps WHERE id = ?", (map_id,))
        self._results.execute("DELETE FROM maps WHERE id = ?", (map_id,))
        return bool(found)

    async def status(self, map_id: str) -> dict[str, Any]:
        """State, stage, progress, timings, and once done the summary (``map_not_found``)."""
        rows = await self._results.run(
            self._results.query, f"SELECT {_STATUS_COLUMNS} FROM maps WHERE id = ?", (map_id,)
        )
        if not rows:
            raise unknown_map(map_id)
        return _status(rows[0])

    async def list(self) -> list[dict[str, Any]]:
        """Every map's status, newest first (no coordinates are read)."""
        rows = await self._results.run(
            self._results.query, f"SELECT {_STATUS_COLUMNS} FROM maps ORDER BY created DESC"
        )
        return [_status(row) for row in rows]

    async def coords(self, map_id: str) -> StoredMap | None:
        """A done map's coordinates; ``None`` while it is not done (``map_not_found``)."""
        rows = await self._results.run(
            self._results.query,
            "SELECT spec, state, n, coords FROM maps WHERE id = ?",
            (map_id,),
        )
        if not rows:
            raise unknown_map(map_id)
        spec, state, n, blob = rows[0]
        if state != "done":
            return None
        xy = np.frombuffer(blob, dtype="<f4").reshape(int(n), 2)
        return StoredMap(map_id, json.loads(spec), xy)


def _status(row: tuple[Any, ...]) -> dict[str, Any]:
    (map_id, spec, state, progress, stage, updates, created, started, finished, error, code,
     summary) = row  # fmt: skip
    end = finished or time.time()
    return {
        "id": map_id,
        "state": state,
        "stage": stage,
        "progress": round(float(progress), 4),
        "updates": int(updates),
        "spec": json.loads(spec),
        "created": created,
        "started": started,
        "finished": finished,
        "elapsed_s": round(end - started, 3) if started else None,
        "error": None if error is None else {"code": code, "detail": error},
        "summary": None if summary is None else json.loads(summary),
    }


def unknown_map(map_id: str) -> NotFoundError:
    return NotFoundError(f"map id={map_id!r} is not known", code="map_not_found")
