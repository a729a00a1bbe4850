"""The projector registry: short names → classes, heavy libraries imported only on use.

>>> from clustviz import get_projector
>>> Y = get_projector("umap", n_neighbors=10).fit_transform(X)   # (n, 2) float32, input order
"""

from __future__ import annotations

import importlib
import typing
from dataclasses import dataclass
from functools import cache
from importlib import metadata
from typing import Any, Literal

from clustviz.errors import InvalidInputError
from clustviz.projectors.base import DEFAULT_SEED, BaseProjector, ProjectorParams

__all__ = [
    "DEFAULT_SEED",
    "BaseProjector",
    "ProjectorName",
    "ProjectorParams",
    "ProjectorSpec",
    "available_projectors",
    "build_params",
    "get_projector",
    "get_spec",
    "library_versions",
    "load_target",
    "projectors_run_by",
    "register",
]


#: The built-in names, as a type: the API schema lists them.
ProjectorName = Literal["tsne", "umap", "trimap", "pacmap", "clusterplot"]


@dataclass(frozen=True, slots=True)
class ProjectorSpec:
    """One registry entry. ``libraries`` are the distributions whose versions shape a result."""

    name: str
    title: str
    target: str  # "module:Class", imported on first use
    params_target: str  # "module:Class" of the (light) parameter model
    libraries: tuple[str, ...]
    uses_labels: bool = False
    #: Where the service runs it: ``pool`` (one fit per task in a CPU worker process) or
    #: ``lane`` (torch; concurrent requests with equal params gathered into one batched
    #: ``fit_transform_many`` on the device, which the service passes as the ``device`` param).
    runner: Literal["pool", "lane"] = "pool"
    #: Points of the warm-up fits (``clustviz.tasks.warm_up``): one per code path that compiles
    #: on its first call.
    warm_sizes: tuple[int, ...] = (40,)
    #: ``"module:function"`` aligning this projector's layout to a map with its own loss
    #: (``(X, labels, layout, map_rows, AlignParams, params) -> (n, 2)``); None: the generic
    #: relaxation (:func:`clustviz.alignment.align_layout` dispatches).
    aligner: str | None = None


_SPECS = {
    spec.name: spec
    for spec in (
        ProjectorSpec(
            "tsne",
            "t-SNE",
            "clustviz.projectors.tsne:TSNEProjector",
            "clustviz.projectors.params:TSNEParams",
            ("scikit-learn", "numpy"),
        ),
        ProjectorSpec(
            "umap",
            "UMAP",
            "clustviz.projectors.umap:UMAPProjector",
            "clustviz.projectors.params:UMAPParams",
            ("umap-learn", "pynndescent", "numba", "numpy"),
        ),
        ProjectorSpec(
            "trimap",
            "TriMAP",
            "clustviz.projectors.trimap:TriMAPProjector",
            "clustviz.projectors.params:TriMAPParams",
            ("trimap", "annoy", "numba", "numpy"),
        ),
        ProjectorSpec(
            "pacmap",
            "PaCMAP",
            "clustviz.projectors.pacmap:PaCMAPProjector",
            "clustviz.projectors.params:PaCMAPParams",
            ("pacmap", "numba", "numpy"),
        ),
        ProjectorSpec(
            "clusterplot",
            "ClusterPlot",
            "clustviz.clusterplot.projector:ClusterPlot",
            "clustviz.clusterplot.params:ClusterPlotParams",
            ("torch", "numpy", "umap-learn"),
            uses_labels=True,
            runner="lane",
            # 40 points take the batched path; 700 pass dense_max_rows into the sparse path,
            # whose numba loops compile (or load from numba's cache) on first use
            warm_sizes=(40, 700),
            aligner="clustviz.clusterplot.map_alignment:align_clusterplot",
        ),
    )
}


assert set(_SPECS) == set(typing.get_args(ProjectorName)), "ProjectorName must list all"


def available_projectors() -> list[str]:
    """Names accepted by :func:`get_projector`, in display order."""
    return list(_SPECS)


def register(spec: ProjectorSpec) -> None:
    """Add a projector to this process's registry (a plugin, or a test's deliberately broken
        entry). The built-in ones are listed above; a worker process registers others by importing
        their module (``WorkerSettings.imports``); the service, by ``CLUSTVIZ_PLUGINS``, serves them
    like the built-in ones."""
    if spec.name in _SPECS:
        raise ValueError(f"projector name={spec.name!r} is already registered")
    _SPECS[spec.name] = spec


def projectors_run_by(runner: Literal["pool", "lane"]) -> tuple[str, ...]:
    """Names of the projectors the service runs on ``runner`` (what its workers warm up)."""
    return tuple(name for name, spec in _SPECS.items() if spec.runner == runner)


def get_spec(name: str) -> ProjectorSpec:
    """The registry entry for ``name``; ``InvalidInputError(code='unknown_projector')`` if none."""
    spec = _SPECS.get(name)
    if spec is None:
        raise InvalidInputError(
            f"projector={name!r} is not one of {available_projectors()}", code="unknown_projector"
        )
    return spec


def load_target(target: str) -> Any:
    """The object named by a lazy ``"module:attribute"`` target (imports the module)."""
    module, _, attribute = target.partition(":")
    return getattr(importlib.import_module(module), attribute)


def params_model(name: str) -> type[ProjectorParams]:
    """The parameter model of a projector (validates and clamps without importing the library)."""
    return load_target(get_spec(name).params_target)


def build_params(name: str, params: dict[str, Any]) -> ProjectorParams:
    """Validate ``params`` with the projector's model; ``InvalidInputError(code='invalid_params')``
    naming each bad field and its value (``params.perplexity=-1: ...``)."""
    from pydantic import ValidationError

    try:
        return params_model(name)(**params)
    except ValidationError as exc:
        problems = "; ".join(
            f"params.{'.'.join(str(part) for part in error['loc'])}={error.get('input')!r}: "
            f"{error['msg']}"
            for error in exc.errors()
        )
        raise InvalidInputError(
            f"invalid params for projector {name!r}: {problems}", code="invalid_params"
        ) from exc


def get_projector(name: str, **params: Any) -> BaseProjector:
    """A projector instance; ``params`` are validated by its model (unknown names rejected)."""
    spec = get_spec(name)
    return load_target(spec.target)(build_params(name, params))


@cache
def library_versions(name: str) -> dict[str, str]:
    """Versions of the libraries that shape ``name``'s results (part of every cache key)."""
    versions = {}
    for library in get_spec(name).libraries:
        try:
            versions[library] = metadata.version(library)
        except metadata.PackageNotFoundError:
            versions[library] = "absent"
    return versions
