"""Global maps: a 2-D position for every row of a dataset, one registry of map methods.

>>> from clustviz.maps import MapRequest, fit_dataset_map
>>> result = fit_dataset_map(dataset, MapRequest(method="opentsne"))
>>> result.coords            # (n_rows, 2) float32, dataset row order
>>> result.summary()         # JSON-able: params used, notes, timings, quality

A method is fitted on (``fit_on``):

* ``points``: every row;
* ``cluster_means``: the C cluster means only, then every row placed by the method's own
  ``transform`` (methods without one are refused);
* ``sample``: a stratified sample of ``sample_size`` rows (per cluster, in proportion to its
  size), the rest placed by ``transform`` (openTSNE's recipe for large data);
* ``auto`` (the default): ``points`` up to ``AUTO_POINTS_MAX`` (20,000) rows, or whatever the
  size for a method without ``transform``; ``sample`` of ``DEFAULT_SAMPLE_SIZE`` (20,000) rows
  above it.

The default method is ``umap`` (``DEFAULT_METHOD``, umap-learn: the fastest on the CPU);
``torchdr_umap`` runs on CUDA where the device resolves to it.

Modules, one concept each: ``registry`` (specs, parameter lookup), ``params`` (parameter
models), ``subsets`` (stratified sample, cluster means and positions), ``base`` and one module
per method (the library adapters), ``fitting`` (request → plan → fit → result, with progress),
``quality`` (trustworthiness, continuity, per-preamble kNN), ``result`` (:class:`GlobalMap`).
"""

from clustviz.maps.fitting import (
    DEFAULT_METHOD,
    MapPlan,
    MapProgress,
    MapRequest,
    ProgressFn,
    check_map_request,
    fit_dataset_map,
    fit_map,
    plan_map,
)
from clustviz.maps.registry import (
    AUTO_POINTS_MAX,
    DEFAULT_SAMPLE_SIZE,
    DEFAULT_SEED,
    FIT_ONS,
    FitOn,
    MapMethodName,
    MapMethodSpec,
    available_map_methods,
    build_map_params,
    get_map_method,
    get_map_spec,
    map_library_versions,
    map_params_model,
)
from clustviz.maps.result import GlobalMap

__all__ = [
    "AUTO_POINTS_MAX",
    "DEFAULT_METHOD",
    "DEFAULT_SAMPLE_SIZE",
    "DEFAULT_SEED",
    "FIT_ONS",
    "FitOn",
    "GlobalMap",
    "MapMethodName",
    "MapMethodSpec",
    "MapPlan",
    "MapProgress",
    "MapRequest",
    "ProgressFn",
    "available_map_methods",
    "build_map_params",
    "check_map_request",
    "fit_dataset_map",
    "fit_map",
    "get_map_method",
    "get_map_spec",
    "map_library_versions",
    "map_params_model",
    "plan_map",
]
