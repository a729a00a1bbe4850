"""What the worker processes run (``clustviz.tasks``), called in this process."""

from __future__ import annotations

import numpy as np
from support import DEMO10, SEED_PREAMBLE

from clustviz.data import discover_datasets, load_dataset
from clustviz.tasks import hulls, project, project_many


def test_a_lane_projectors_single_item_takes_the_batched_path() -> None:
    # One producer of a lane projector's result and blobs, whether the item came alone (the
    # service without a device lane) or in a batch, and whether its blobs are drawn now or later.
    (source,) = discover_datasets(DEMO10)
    view = load_dataset(source).view(SEED_PREAMBLE)
    params = {"random_state": 3, "device": "cpu", "backend": "torch"}
    alone = project("clusterplot", params, view.X, view.labels)
    (batched,) = project_many("clusterplot", params, [(view.X, view.labels)])
    np.testing.assert_array_equal(alone["embedding"], batched["embedding"])
    assert alone["params_used"] == batched["params_used"]
    assert alone["extras"]["hulls"] and alone["extras"]["hulls"] == batched["extras"]["hulls"]
    assert alone["metrics"] == batched["metrics"]
    later = project("clusterplot", params, view.X, view.labels, with_metrics=False)
    assert later["extras"]["hulls"] is None and later["metrics"] is None
    drawn = hulls(later["params_used"], later["embedding"], view.labels)
    assert drawn == alone["extras"]["hulls"]
