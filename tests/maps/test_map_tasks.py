"""The worker side of a service map: progress written to a file (throttled, atomic, read back),
a fit stopped by its cancel file, and a dataset checked against the content it was asked for."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from support import DEMO10

from clustviz.data import load_dataset
from clustviz.data.discovery import DatasetSource, discover_datasets
from clustviz.errors import ClustvizError
from clustviz.maps import MapProgress
from clustviz.maps.tasks import ProgressFile, cancel_path, fit_source_map, read_progress

FAST = {"method": "opentsne", "fit_on": "points", "params": {"n_iter": 50}}


def test_progress_is_written_per_stage_and_throttled_within_one(tmp_path: Path) -> None:
    path = tmp_path / "m.json"
    assert read_progress(path) is None
    report = ProgressFile(path)
    report(MapProgress("fit", 0.0, 0.0))
    report(MapProgress("fit", 0.5, 0.45))  # within the throttle: not written
    assert read_progress(path) == MapProgress("fit", 0.0, 0.0)
    report(MapProgress("quality", 0.0, 0.95))  # a new stage is always written
    assert read_progress(path) == MapProgress("quality", 0.0, 0.95)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.json"]  # no temporary left


def test_a_cancel_file_stops_the_fit(tmp_path: Path) -> None:
    (source,) = discover_datasets(DEMO10)
    progress = tmp_path / "m.json"
    cancel_path(progress).touch()
    with pytest.raises(ClustvizError) as stopped:
        fit_source_map(source, _fingerprint(source), FAST, str(progress))
    assert stopped.value.code == "map_cancelled"
    assert not cancel_path(progress).exists()  # seen: removed


def test_a_fit_returns_coords_in_row_order_and_refuses_changed_content(tmp_path: Path) -> None:
    (source,) = discover_datasets(DEMO10)
    progress = tmp_path / "m.json"
    result = fit_source_map(source, _fingerprint(source), FAST, str(progress))
    assert result["coords"].shape == (400, 2) and result["coords"].dtype == np.float32
    assert result["summary"]["n_rows"] == 400
    assert read_progress(progress) == MapProgress("done", 1.0, 1.0)
    with pytest.raises(ClustvizError) as changed:
        fit_source_map(source, "another-fingerprint", FAST, str(progress))
    assert changed.value.code == "dataset_changed"


def _fingerprint(source: DatasetSource) -> str:
    return load_dataset(source).fingerprint
