"""``clustviz batch`` against a real server on loopback whose registry holds the test plugin's
failing projectors (the ``plugin_server`` fixture): exit codes, ``--resume``, and the
``.json``, ``.arrow`` and ``.parquet`` files read back row by row against the dataset's
clustering file (read here with the csv module) and the server's own single projections."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import httpx
import numpy as np
import polars as pl
import pytest
from support import DEMO10, DEMO_ID, SEED_PREAMBLE, Server, free_port

from clustviz.cli import main

KEYS = ["preamble", "guess", "projector"]


def clustering_rows() -> dict[str, list[dict[str, str]]]:
    """The demo's clustering TSV, by preamble, in file order."""
    (tsv,) = (DEMO10 / "clustering").glob("*.tsv")
    by_preamble: dict[str, list[dict[str, str]]] = {}
    with tsv.open(newline="") as handle:
        for row in csv.DictReader(handle, delimiter="\t"):
            by_preamble.setdefault(row["preamble"], []).append(row)
    return by_preamble


def batch(server: Server, *args: str) -> int:
    return main(["batch", "--url", server.url, "--quiet", *args])


def test_failed_items_exit_1_and_every_format_holds_the_done_ones(
    plugin_server: Server, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    tsv = clustering_rows()
    other = next(text for text in tsv if text != SEED_PREAMBLE)
    preambles = ["--preamble", SEED_PREAMBLE, "--preamble", other]
    job = [*preambles, "--dataset", DEMO_ID, "--projectors", "nan,tsne", "--seed", "3"]
    out = tmp_path / "out.json"
    assert batch(plugin_server, *job, "-o", str(out)) == 1  # the two nan items fail
    err = capsys.readouterr().err
    assert "done: 2 done, 2 failed of 4" in err
    job_id = err.split()[1]  # "job <id> (resume with --resume <id>)"

    rows = [json.loads(line) for line in out.read_text().splitlines()]
    expected = {
        (text, row["guess"], int(row["token_id"]), int(row["cluster_id"]))
        for text in (SEED_PREAMBLE, other)
        for row in tsv[text]
    }
    assert len(rows) == len(expected) == 80  # the tsne items' points, none of the failed ones
    assert {r["projector"] for r in rows} == {"tsne"}
    assert {(r["preamble"], r["guess"], r["token_id"], r["cluster_id"]) for r in rows} == expected
    # the coordinates are the seed-3 t-SNE layouts the server gives for each preamble alone
    for text in (SEED_PREAMBLE, other):
        single = httpx.get(
            f"{plugin_server.url}/projections/{DEMO_ID}/tsne",
            params={"preamble": text, "seed": 3},
            timeout=120,
        ).json()
        assert single["cached"] is True  # the batch's own result
        got = {r["guess"]: (r["x"], r["y"]) for r in rows if r["preamble"] == text}
        want = {p["guess"]: (p["x"], p["y"]) for p in single["points"]}
        assert got.keys() == want.keys()
        np.testing.assert_allclose([got[g] for g in want], [want[g] for g in want], rtol=1e-6)
    assert all(math.isfinite(r["x"]) and math.isfinite(r["y"]) for r in rows)

    # the same job followed again by its id: the same exit code, the same rows as Arrow
    arrow = tmp_path / "out.arrow"
    assert batch(plugin_server, "--resume", job_id, "-o", str(arrow)) == 1
    err = capsys.readouterr().err
    assert "done: 2 done, 2 failed of 4" in err and "resume with" not in err  # no new job
    frame = pl.read_ipc_stream(arrow)
    assert frame.height == 80
    assert frame.sort(KEYS).equals(pl.read_ndjson(out, schema=frame.schema).sort(KEYS))

    # the items that succeeded alone: a new job, all done, exit 0, to Parquet
    parquet = tmp_path / "out.parquet"
    tsne_only = [*preambles, "--dataset", DEMO_ID, "--projectors", "tsne", "--seed", "3"]
    assert batch(plugin_server, *tsne_only, "-o", str(parquet)) == 0
    assert "done: 2 done, 0 failed of 2" in capsys.readouterr().err
    assert pl.read_parquet(parquet).sort(KEYS).equals(frame.sort(KEYS))


def test_a_refused_job_exits_2_with_the_servers_answer(
    plugin_server: Server, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "out.json"
    args = ["--dataset", DEMO_ID, "--projectors", "tsne,umap", "--all", "-o", str(out)]
    assert batch(plugin_server, *args) == 2  # 20 items, the server's limit is 5
    err = capsys.readouterr().err
    assert "422 batch_too_large" in err and "limit is 5" in err
    assert not out.exists()
    assert batch(plugin_server, "--resume", "no-such-job", "-o", str(out)) == 2
    assert "404 job_not_found" in capsys.readouterr().err and not out.exists()


def test_an_unknown_suffix_is_refused_before_any_request(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    nobody = f"http://127.0.0.1:{free_port()}"  # nothing listens: a request would be error 2
    args = ["batch", "--url", nobody, "--resume", "x", "-o", str(tmp_path / "out.csv")]
    with pytest.raises(SystemExit) as exited:
        main(args)
    assert exited.value.code == 2
    assert "the suffix must be one of .parquet, .arrow, .json" in capsys.readouterr().err


def test_an_unreachable_server_exits_2_not_1(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    nobody = f"http://127.0.0.1:{free_port()}"  # exit 1 would read as "some items failed"
    out = tmp_path / "out.json"
    assert main(["batch", "--url", nobody, "--quiet", "--resume", "x", "-o", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and nobody in err and not out.exists()
