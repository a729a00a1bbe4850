"""A test-only projector that takes its time: ``sleepy`` sleeps ``seconds`` per fit, then lays
the points out on their first two coordinates. It paces a batch job without using the CPU, so a
test can watch its event stream between items.

Importing this module registers it. The service imports it as a plugin
(``CLUSTVIZ_PLUGINS='["sleepy_projector"]'``, found through ``PYTHONPATH=tests``) in its own
process and in its workers; the pytest process never imports it.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np
from pydantic import Field

from clustviz.projectors import BaseProjector, ProjectorParams, ProjectorSpec, register

register(
    ProjectorSpec(
        "sleepy", "Sleepy", "sleepy_projector:SleepyProjector", "sleepy_projector:SleepyParams", ()
    )
)


class SleepyParams(ProjectorParams):
    seconds: float = Field(0.3, ge=0, le=60, description="How long each fit sleeps.")


class SleepyProjector(BaseProjector):
    name = "sleepy"
    Params = SleepyParams

    def _fit(self, X: np.ndarray, labels: np.ndarray | None, params: Any) -> np.ndarray:
        time.sleep(params.seconds)
        return X[:, :2].astype(np.float64)
