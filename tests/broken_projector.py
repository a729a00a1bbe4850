"""A test-only registry entry whose every fit raises, as a projector whose library cannot load.

Importing this module registers it; a worker registers it too when told to import this module
(``WorkerSettings(imports=("broken_projector",))``, found through the tests' ``sys.path``).
"""

from __future__ import annotations

from typing import Any

from clustviz.projectors import ProjectorSpec, register

REASON = "the broken projector's native library failed to load"

register(
    ProjectorSpec(
        "broken",
        "Broken",
        "broken_projector:BrokenProjector",
        "clustviz.projectors.params:TSNEParams",
        (),
    )
)


class BrokenProjector:
    def __init__(self, params: Any) -> None:
        self.params = params

    def fit_transform(self, X: Any, labels: Any = None) -> Any:
        raise OSError(REASON)
