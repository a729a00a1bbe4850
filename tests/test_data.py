"""The data layer on real files: discovery, loading, every malformation, the catalog."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from support import (
    DEMO10,
    DEMO_ID,
    MALFORMED,
    SEED_PREAMBLE,
    STEM,
    make_rows,
    write_dataset,
    write_malformed,
)

from clustviz.data import DataCatalog, discover_datasets, load_dataset, preamble_id
from clustviz.errors import InvalidInputError, NotFoundError


def load_only(root: Path):  # type: ignore[no-untyped-def]
    (source,) = discover_datasets(root)
    return load_dataset(source)


def test_demo_fixture_loads_as_float32_with_o1_views() -> None:
    dataset = load_only(DEMO10)
    assert dataset.id == DEMO_ID
    assert dataset.embeddings.dtype == np.float32 and dataset.embeddings.flags.c_contiguous
    assert dataset.dim == 576 and dataset.n_rows == 400 and len(dataset.preambles) == 10
    assert dataset.preambles[0] == SEED_PREAMBLE
    view = dataset.view(SEED_PREAMBLE)
    assert view.X.shape == (40, 576) and view.n_points == 40
    # per-view cluster ids re-indexed 0..C-1 in increasing global id
    assert sorted(set(view.labels.tolist())) == list(range(view.n_clusters))
    order = np.argsort(view.cluster_ids, kind="stable")
    assert np.all(np.diff(view.labels[order]) >= 0)
    # and back: a label's global id
    np.testing.assert_array_equal(view.clusters[view.labels], view.cluster_ids)
    assert view.clusters.tolist() == sorted(set(view.cluster_ids.tolist()))
    # rows match the parquet's order and values
    raw = pl.read_parquet(next((DEMO10 / "embeddings").glob("*.parquet")))
    first = raw.filter(pl.col("preamble") == SEED_PREAMBLE)
    assert view.guesses == first["guess"].to_list()
    np.testing.assert_allclose(view.X, first["embedding"].to_numpy().astype(np.float32))


@pytest.mark.parametrize("interleaved", [False, True])
def test_views_hold_their_preambles_rows_read_only(tmp_path: Path, interleaved: bool) -> None:
    """A preamble's rows, whether together in the file (a window on the dataset's embeddings,
    no copy) or spread (gathered); either way nobody can write through a view."""
    embeddings, clusters = make_rows({"a": 5, "b": 5})
    if interleaved:
        embeddings = embeddings.with_row_index().sort(pl.col("index") % 5).drop("index")
    write_dataset(tmp_path, embeddings, clusters)
    dataset = load_only(tmp_path)
    for preamble in ("a", "b"):
        view = dataset.view(preamble)
        rows = embeddings.filter(pl.col("preamble") == preamble)
        assert view.guesses == rows["guess"].to_list()
        assert view.token_ids.tolist() == rows["token_id"].to_list()
        np.testing.assert_allclose(view.X, rows["embedding"].to_numpy(), rtol=1e-6)
        assert view.X.flags.c_contiguous and view.X.dtype == np.float32
        with pytest.raises(ValueError, match="read-only"):
            view.X[:] = 0.0
        assert np.abs(dataset.view(preamble).X).sum() > 0
        assert np.shares_memory(view.X, dataset.embeddings) is not interleaved  # no copy


def test_list_column_and_float32_embeddings_load(tmp_path: Path) -> None:
    embeddings, clusters = make_rows({"p": 6})
    embeddings = embeddings.with_columns(pl.col("embedding").cast(pl.List(pl.Float32)))
    write_dataset(tmp_path, embeddings, clusters)
    dataset = load_only(tmp_path)
    assert dataset.embeddings.dtype == np.float32 and dataset.dim == 8


def test_guesses_that_look_numeric_stay_text(tmp_path: Path) -> None:
    embeddings, clusters = make_rows({"In the year": 4})
    guesses = ["1984", "007", "true", "null"]
    embeddings = embeddings.with_columns(pl.Series("guess", guesses))
    clusters = clusters.with_columns(pl.Series("guess", guesses))
    write_dataset(tmp_path, embeddings, clusters)
    assert load_only(tmp_path).view("In the year").guesses == guesses


def test_preamble_ids_are_stable_and_resolve() -> None:
    dataset = load_only(DEMO10)
    pid = preamble_id(SEED_PREAMBLE)
    assert pid == "000ff918bc98"
    assert dataset.resolve_preamble(preamble_id=pid) == SEED_PREAMBLE
    with pytest.raises(NotFoundError) as err:
        dataset.resolve_preamble("no such preamble")
    assert err.value.code == "preamble_not_found"


def test_discovery_pairs_one_embeddings_file_with_several_clusterings(tmp_path: Path) -> None:
    embeddings, clusters = make_rows({"p": 6})
    write_dataset(tmp_path, embeddings, clusters, suffix="+n_clusters=5")
    write_dataset(tmp_path, embeddings, clusters, suffix="+n_clusters=9")
    # a prefix look-alike must not pair with "…k=40+layer=7"
    write_dataset(tmp_path, embeddings, clusters, stem="acme:tiny-model|k=4", suffix="+n=1")
    sources = discover_datasets(tmp_path)
    assert len(sources) == 3 and all(source.error is None for source in sources)
    assert len({source.id for source in sources}) == 3
    for source in sources:
        assert source.id.replace("-", "").isalnum()  # URL-safe


def test_nested_collections_are_discovered(tmp_path: Path) -> None:
    embeddings, clusters = make_rows({"p": 6})
    write_dataset(tmp_path / "a", embeddings, clusters)
    write_dataset(tmp_path / "b", embeddings, clusters)
    assert len(discover_datasets(tmp_path)) == 2


def test_unicode_and_separator_file_names(tmp_path: Path) -> None:
    embeddings, clusters = make_rows({"Über die": 6})
    write_dataset(tmp_path, embeddings, clusters, stem="org:модель|k=40+layer=7", suffix="+ñ=1")
    dataset = load_only(tmp_path)
    assert dataset.view("Über die").n_points == 6


# ---- malformed datasets: each is an InvalidInputError naming what is wrong -------------------


@pytest.mark.parametrize("case", sorted(MALFORMED))
def test_malformed_dataset_is_a_clear_error(tmp_path: Path, case: str) -> None:
    write_malformed(tmp_path, case)
    with pytest.raises(InvalidInputError) as err:
        load_only(tmp_path)
    assert err.value.code == "invalid_dataset"
    assert MALFORMED[case] in err.value.message


def test_catalog_lists_invalid_datasets_and_keeps_serving_the_others(tmp_path: Path) -> None:
    good_embeddings, good_clusters = make_rows({"p": 6})
    write_dataset(tmp_path / "good", good_embeddings, good_clusters)
    write_malformed(tmp_path / "bad", "duplicate key")
    catalog = DataCatalog(tmp_path)
    catalog.check_all()
    infos = {info.status: info for info in catalog.list()}
    assert set(infos) == {"ok", "invalid"}
    assert "share a (preamble, guess) key" in (infos["invalid"].error or "")
    assert infos["ok"].n_preambles == 1 and infos["ok"].n_rows == 6 and infos["ok"].dim == 8
    with pytest.raises(InvalidInputError):
        catalog.get(infos["invalid"].id)
    assert catalog.get(infos["ok"].id).view("p").n_points == 6


def test_catalog_rejects_unknown_and_traversal_ids(tiny_dataset: Path) -> None:
    catalog = DataCatalog(tiny_dataset)
    for bad in ["nope", "../etc/passwd", "/etc/passwd", "..%2F..%2Fetc", STEM]:
        with pytest.raises(NotFoundError) as err:
            catalog.get(bad)
        assert err.value.code == "dataset_not_found"


def test_catalog_reloads_a_replaced_file_with_a_new_fingerprint(tmp_path: Path) -> None:
    embeddings, clusters = make_rows({"p": 6})
    parquet, _ = write_dataset(tmp_path, embeddings, clusters)
    catalog = DataCatalog(tmp_path)
    (info,) = catalog.list()
    before = catalog.get(info.id)
    changed, _ = make_rows({"p": 6}, seed=1)
    changed.write_parquet(parquet)
    os.utime(parquet, ns=(1, 1))  # a distinct mtime even on coarse file systems
    after = catalog.get(info.id)
    assert after.fingerprint != before.fingerprint
    assert not np.allclose(after.view("p").X, before.view("p").X)


def test_catalog_keeps_at_most_max_loaded_dropping_the_least_recently_used(
    tmp_path: Path,
) -> None:
    embeddings, clusters = make_rows({"p": 6})
    for name in "abc":
        write_dataset(tmp_path / name, embeddings, clusters)
    catalog = DataCatalog(tmp_path, max_loaded=2)
    a, b, c = catalog.list()
    first_a = catalog.get(a.id)
    catalog.get(b.id)
    assert catalog.get(a.id) is first_a  # a hit: a is now more recent than b
    catalog.get(c.id)  # b, the least recently used, is dropped
    assert catalog.get_if_loaded(b.id) is None
    assert catalog.get_if_loaded(a.id) is first_a and catalog.get_if_loaded(c.id) is not None
    assert catalog.get(b.id) is not None  # loaded again on demand: a goes now
    assert catalog.get_if_loaded(a.id) is None and catalog.get_if_loaded(c.id) is not None


def test_a_hit_on_the_hot_path_keeps_a_dataset_loaded(tmp_path: Path) -> None:
    # The service's cached requests find their dataset with get_if_loaded alone: those reads
    # are uses too, or the most requested dataset would be the first one dropped.
    embeddings, clusters = make_rows({"p": 6})
    for name in "abc":
        write_dataset(tmp_path / name, embeddings, clusters)
    catalog = DataCatalog(tmp_path, max_loaded=2)
    a, b, c = catalog.list()
    hot = catalog.get(a.id)
    catalog.get(b.id)
    assert catalog.get_if_loaded(a.id) is hot  # a is now more recent than b
    catalog.get(c.id)
    assert catalog.get_if_loaded(a.id) is hot and catalog.get_if_loaded(b.id) is None
    assert catalog.is_current(a.id, hot.fingerprint)
    assert not catalog.is_current(a.id, "another content") and not catalog.is_current(b.id, "")
