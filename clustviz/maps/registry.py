"""The registry of map methods: short names → frozen specs, lazy ``"module:Class"`` targets,
parameter models validated without importing any projection library."""

from __future__ import annotations

import typing
from dataclasses import dataclass
from functools import cache
from importlib import metadata
from typing import TYPE_CHECKING, Any, Literal

from clustviz.errors import InvalidInputError
from clustviz.projectors import load_target
from clustviz.projectors.base import DEFAULT_SEED, ProjectorParams

if TYPE_CHECKING:
    from clustviz.maps.base import MapMethod

__all__ = [
    "AUTO_POINTS_MAX",
    "DEFAULT_SAMPLE_SIZE",
    "DEFAULT_SEED",
    "FIT_ONS",
    "FitOn",
    "MapMethodName",
    "MapMethodSpec",
    "available_map_methods",
    "build_map_params",
    "get_map_method",
    "get_map_spec",
    "map_library_versions",
    "map_params_model",
]

#: The built-in method names, as a type (the API schema lists them).
MapMethodName = Literal["umap", "opentsne", "pacmap", "torchdr_umap"]
#: What a method is fitted on; ``auto`` is resolved by size (see the module docstring).
FitOn = Literal["auto", "points", "cluster_means", "sample"]
FIT_ONS: tuple[str, ...] = typing.get_args(FitOn)

#: ``fit_on="auto"`` fits every row up to this many rows, a stratified sample above it: the
#: fit's cost grows with the rows fitted, placing a row by ``transform`` costs far less.
AUTO_POINTS_MAX = 20_000
#: Rows fitted by ``fit_on="sample"`` unless the request says otherwise.
DEFAULT_SAMPLE_SIZE = 20_000


@dataclass(frozen=True, slots=True)
class MapMethodSpec:
    """One registry entry. ``libraries`` are the distributions whose versions shape a map."""

    name: str
    title: str
    target: str  # "module:Class" of the MapMethod adapter, imported on first use
    params_target: str  # "module:Class" of the (light) parameter model
    libraries: tuple[str, ...]
    #: The method can place rows it was not fitted on (``fit_on`` cluster_means and sample).
    has_transform: bool = False
    #: The method can fit with the cluster ids as a target (``supervised=True``).
    supervised: bool = False
    #: Where the service runs it: ``pool`` (a CPU worker process) or ``lane`` (torch, on the
    #: device the service resolved).
    runner: Literal["pool", "lane"] = "pool"

    @property
    def fit_ons(self) -> tuple[str, ...]:
        """The ``fit_on`` values this method accepts (``auto`` always)."""
        if self.has_transform:
            return FIT_ONS
        return ("auto", "points")


_SPECS = {
    spec.name: spec
    for spec in (
        MapMethodSpec(
            "umap",
            "UMAP (umap-learn)",
            "clustviz.maps.umap:UMAPMethod",
            "clustviz.maps.params:UMAPMapParams",
            ("umap-learn", "pynndescent", "numba", "numpy"),
            has_transform=True,
            supervised=True,
        ),
        MapMethodSpec(
            "opentsne",
            "t-SNE (openTSNE)",
            "clustviz.maps.opentsne:OpenTSNEMethod",
            "clustviz.maps.params:OpenTSNEMapParams",
            ("openTSNE", "numpy"),
            has_transform=True,
        ),
        MapMethodSpec(
            "pacmap",
            "PaCMAP",
            "clustviz.maps.pacmap:PaCMAPMethod",
            "clustviz.maps.params:PaCMAPMapParams",
            ("pacmap", "numba", "numpy"),
        ),
        MapMethodSpec(
            "torchdr_umap",
            "UMAP (TorchDR, PyTorch)",
            "clustviz.maps.torchdr_umap:TorchDRUMAPMethod",
            "clustviz.maps.params:TorchDRUMAPParams",
            ("torchdr", "torch", "faiss-cpu", "numpy"),
            has_transform=True,
            runner="lane",
        ),
    )
}

assert set(_SPECS) == set(typing.get_args(MapMethodName)), "MapMethodName must list all"


def available_map_methods() -> list[str]:
    """Names accepted by :func:`get_map_spec`, in display order."""
    return list(_SPECS)


def get_map_spec(name: str) -> MapMethodSpec:
    """The registry entry for ``name``; ``InvalidInputError(code='unknown_map_method')``."""
    spec = _SPECS.get(name)
    if spec is None:
        raise InvalidInputError(
            f"method={name!r} is not one of {available_map_methods()}", code="unknown_map_method"
        )
    return spec


def get_map_method(name: str, params: ProjectorParams) -> MapMethod:
    """The adapter of ``name`` (its library imported now) with already validated ``params``."""
    return load_target(get_map_spec(name).target)(params)


def map_params_model(name: str) -> type[ProjectorParams]:
    """The parameter model of a map method (validates without importing the library)."""
    return load_target(get_map_spec(name).params_target)


def build_map_params(name: str, params: dict[str, Any], *, seed: int) -> ProjectorParams:
    """Validate ``params`` with the method's model, ``random_state`` taken from ``seed``;
    ``InvalidInputError(code='invalid_params')`` naming each bad field and its value."""
    from pydantic import ValidationError

    if "random_state" in params:
        raise InvalidInputError(
            f"params.random_state={params['random_state']!r}: a map's seed is its 'seed' field",
            code="invalid_params",
        )
    try:
        return map_params_model(name)(**params, random_state=seed)
    except ValidationError as exc:
        problems = "; ".join(
            f"{_field(error['loc'])}={error.get('input')!r}: {error['msg']}"
            for error in exc.errors()
        )
        raise InvalidInputError(
            f"invalid params for map method {name!r}: {problems}", code="invalid_params"
        ) from exc


def _field(loc: tuple[int | str, ...]) -> str:
    path = ".".join(str(part) for part in loc)
    return "seed" if path == "random_state" else f"params.{path}"


@cache
def map_library_versions(name: str) -> dict[str, str]:
    """Versions of the libraries that shape a map of ``name`` (part of a stored map's key)."""
    versions = {}
    for library in get_map_spec(name).libraries:
        try:
            versions[library] = metadata.version(library)
        except metadata.PackageNotFoundError:
            versions[library] = "absent"
    return versions
