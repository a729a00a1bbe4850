"""A fitted map: plain arrays plus one JSON-able dict, so that it can be stored and served."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = ["GlobalMap"]


@dataclass(frozen=True, slots=True)
class GlobalMap:
    """A 2-D position for every row of a dataset, and where each cluster lands.

    ``coords (n_rows, 2)`` float32 in the dataset's row order; ``cluster_ids (C,)`` the
    distinct global cluster ids, increasing; ``cluster_positions (C, 2)`` float32 the mean of
    each cluster's rows in the map. The rest is what :meth:`summary` reports.
    """

    coords: np.ndarray
    cluster_ids: np.ndarray
    cluster_positions: np.ndarray
    params_used: dict[str, Any]  # method, fit_on, supervised, sample_size, seed, params
    notes: list[str]  # one line per value resolved or clamped
    n_fitted: int  # rows (or cluster means) the method was fitted on
    timings: dict[str, float]  # seconds per stage, and total
    quality: dict[str, float | int]
    versions: dict[str, str]  # libraries that shape the map

    @property
    def n_rows(self) -> int:
        return int(self.coords.shape[0])

    def summary(self) -> dict[str, Any]:
        """Everything but the arrays, JSON-able."""
        return {
            **self.params_used,
            "n_rows": self.n_rows,
            "n_clusters": int(self.cluster_ids.shape[0]),
            "n_fitted": self.n_fitted,
            "notes": list(self.notes),
            "timings": dict(self.timings),
            "quality": dict(self.quality),
            "versions": dict(self.versions),
        }
