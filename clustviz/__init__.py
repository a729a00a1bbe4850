"""clustviz: 2-D projections of language-model guess embeddings, as a library and a service.

Public API::

    from clustviz import get_projector, available_projectors, DataCatalog, load_dataset
"""

from clustviz.data import DataCatalog, Dataset, PreambleView, discover_datasets, load_dataset
from clustviz.device import resolve_device
from clustviz.errors import (
    ClustvizError,
    InvalidInputError,
    NotFoundError,
    ProjectionFailedError,
    UnavailableError,
)
from clustviz.projectors import available_projectors, get_projector

__version__ = "0.1.0"

__all__ = [
    "ClustvizError",
    "DataCatalog",
    "Dataset",
    "InvalidInputError",
    "NotFoundError",
    "PreambleView",
    "ProjectionFailedError",
    "UnavailableError",
    "__version__",
    "available_projectors",
    "discover_datasets",
    "get_projector",
    "load_dataset",
    "resolve_device",
]
