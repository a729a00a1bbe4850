"""A data dir holding every kind of malformed dataset next to good ones: each bad one is listed
as invalid with its reason, and the good ones keep serving (over HTTP, through the app)."""

from __future__ import annotations

import shutil
from pathlib import Path

from support import (
    DEMO10,
    DEMO_ID,
    MALFORMED,
    SEED_PREAMBLE,
    app_client,
    make_rows,
    write_dataset,
    write_malformed,
)

from clustviz.workers import WorkerPool


def test_every_malformation_is_listed_and_the_rest_keeps_serving(
    tmp_path: Path, warm_pools: tuple[WorkerPool, WorkerPool]
) -> None:
    data = tmp_path / "data"
    shutil.copytree(DEMO10, data)  # the good demo dataset, at the top level
    for index, case in enumerate(sorted(MALFORMED)):
        write_malformed(data / f"bad-{index:02d}", case)
    embeddings, clusters = make_rows({"Über die": 6})  # good, with | : + and unicode in names
    write_dataset(
        data / "ünïcode", embeddings, clusters, stem="org:модель|k=40+layer=7", suffix="+ñ=1"
    )
    with app_client(data, tmp_path / "state", *warm_pools) as client:
        client.app.state.engine.catalog.check_all()  # type: ignore[attr-defined]
        listed = client.get("/datasets").json()
        invalid = [item["error"] for item in listed if item["status"] == "invalid"]
        assert len(invalid) == len(MALFORMED)
        for expected in MALFORMED.values():
            assert any(expected in reason for reason in invalid), expected
        good = [item for item in listed if item["status"] == "ok"]
        assert {item["n_preambles"] for item in good} == {10, 1}
        response = client.post(
            "/projections",
            json={"dataset": DEMO_ID, "preamble": SEED_PREAMBLE, "projector": "umap"},
        )
        assert response.status_code == 200
        (unicode_dataset,) = [item["id"] for item in good if item["n_preambles"] == 1]
        assert unicode_dataset.isascii()  # the id is URL-safe even when the name is not
        page = client.get(f"/datasets/{unicode_dataset}/preambles").json()
        assert page["items"][0]["text"] == "Über die"
