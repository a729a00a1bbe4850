"""Datasets: discovery in a data dir, loading with validation, per-preamble views."""

from clustviz.data.catalog import DataCatalog, DatasetInfo
from clustviz.data.dataset import Dataset, PreambleView, preamble_id
from clustviz.data.discovery import DatasetSource, discover_datasets
from clustviz.data.loading import file_fingerprint, load_dataset

__all__ = [
    "DataCatalog",
    "Dataset",
    "DatasetInfo",
    "DatasetSource",
    "PreambleView",
    "discover_datasets",
    "file_fingerprint",
    "load_dataset",
    "preamble_id",
]
