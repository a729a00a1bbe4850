"""Map requests: the registry, what each method accepts, and the refusals that name the field
and value (checked before any data is touched, as the service's 422s will be)."""

from __future__ import annotations

import typing

import pytest
from pydantic import ValidationError

from clustviz.errors import InvalidInputError
from clustviz.maps import (
    AUTO_POINTS_MAX,
    FIT_ONS,
    MapMethodName,
    MapRequest,
    available_map_methods,
    check_map_request,
    get_map_spec,
    map_params_model,
    plan_map,
)

METHODS = list(typing.get_args(MapMethodName))


def refusal(**request: typing.Any) -> InvalidInputError:
    with pytest.raises(InvalidInputError) as err:
        check_map_request(MapRequest(**request))
    return err.value


def test_registry_lists_the_methods_with_their_abilities() -> None:
    assert available_map_methods() == ["umap", "opentsne", "pacmap", "torchdr_umap"] == METHODS
    assert [m for m in METHODS if get_map_spec(m).has_transform] == [
        "umap",
        "opentsne",
        "torchdr_umap",
    ]
    assert [m for m in METHODS if get_map_spec(m).supervised] == ["umap"]
    assert get_map_spec("torchdr_umap").runner == "lane"
    assert get_map_spec("umap").fit_ons == FIT_ONS
    assert get_map_spec("pacmap").fit_ons == ("auto", "points")


@pytest.mark.parametrize("method", METHODS)
def test_default_params_are_seeded_by_the_request(method: str) -> None:
    params = check_map_request(MapRequest(method=method))
    assert params.random_state == 1871
    assert check_map_request(MapRequest(method=method, seed=7)).random_state == 7
    assert map_params_model(method).min_points >= 5


def test_unknown_method_and_fit_on() -> None:
    err = refusal(method="tsne-ish")
    assert err.code == "unknown_map_method" and "method='tsne-ish'" in err.message
    err = refusal(method="umap", fit_on="centroids")
    assert err.code == "unknown_fit_on" and "fit_on='centroids'" in err.message


@pytest.mark.parametrize(
    ("method", "fit_on"),
    [("pacmap", "cluster_means"), ("pacmap", "sample")],
)
def test_fit_on_needing_a_transform_is_refused_for_methods_without_one(
    method: str, fit_on: str
) -> None:
    err = refusal(method=method, fit_on=fit_on)
    assert err.code == "unsupported_fit_on"
    assert f"fit_on={fit_on!r}" in err.message and f"method={method!r}" in err.message


@pytest.mark.parametrize("method", ["opentsne", "pacmap", "torchdr_umap"])
def test_supervised_is_refused_for_methods_without_it(method: str) -> None:
    err = refusal(method=method, supervised=True)
    assert err.code == "unsupported_supervised"
    assert "supervised=True" in err.message and f"method={method!r}" in err.message


def test_supervised_on_cluster_means_is_refused() -> None:
    err = refusal(method="umap", supervised=True, fit_on="cluster_means")
    assert err.code == "unsupported_supervised" and "cluster_means" in err.message


def test_bad_params_name_the_field_and_value() -> None:
    err = refusal(method="opentsne", params={"perplexity": -1})
    assert err.code == "invalid_params" and "params.perplexity=-1" in err.message
    err = refusal(method="umap", params={"not_a_param": 3})
    assert "params.not_a_param=3" in err.message
    err = refusal(method="umap", params={"target_weight": 1.5})
    assert "params.target_weight=1.5" in err.message
    err = refusal(method="umap", params={"random_state": 3})
    assert "params.random_state=3" in err.message and "seed" in err.message
    with pytest.raises(ValidationError, match="seed"):
        MapRequest(seed=-1)
    with pytest.raises(ValidationError, match="sample_size"):
        MapRequest(sample_size=0)


def test_auto_fit_on_resolves_by_size() -> None:
    small = plan_map(MapRequest(method="umap"), n_rows=AUTO_POINTS_MAX, n_clusters=50)
    assert small.fit_on == "points" and small.n_fitted == AUTO_POINTS_MAX
    big = plan_map(MapRequest(method="umap"), n_rows=AUTO_POINTS_MAX + 1, n_clusters=50)
    assert big.fit_on == "sample" and big.n_fitted == big.sample_size == 20_000
    assert "fit_on auto resolved to 'sample' for n_rows=20001" in big.notes
    # without a transform, every row is fitted whatever the size
    pacmap = plan_map(MapRequest(method="pacmap"), n_rows=123_400, n_clusters=300)
    assert pacmap.fit_on == "points" and pacmap.n_fitted == 123_400


def test_a_sample_larger_than_the_data_is_clamped_and_said() -> None:
    plan = plan_map(
        MapRequest(method="opentsne", fit_on="sample", sample_size=5000), n_rows=400, n_clusters=9
    )
    assert plan.sample_size == plan.n_fitted == 400
    assert "sample_size clamped from 5000 to 400: the dataset has n_rows=400" in plan.notes
    assert plan.describe()["sample_size"] == 400


def test_parameters_are_clamped_to_the_rows_fitted() -> None:
    plan = plan_map(MapRequest(method="umap", fit_on="cluster_means"), n_rows=400, n_clusters=9)
    assert plan.n_fitted == 9 and plan.params.n_neighbors == 8
    assert "n_neighbors clamped from 15 to 8 for n=9" in plan.notes
    plan = plan_map(MapRequest(method="opentsne", fit_on="cluster_means"), n_rows=400, n_clusters=9)
    assert plan.params.perplexity == pytest.approx(8 / 3, abs=1e-3)
    # openTSNE refuses 3 · perplexity > n - 1, and 3 · round(47 / 3, 4) = 47.0001
    for n in range(5, 200):
        used, _ = map_params_model("opentsne")().resolve(n)
        assert 3 * used.perplexity <= n - 1 and 3 * used.transform_perplexity <= n - 1
    described = plan.describe()
    assert described["fit_on"] == "cluster_means" and "random_state" not in described["params"]
    assert described["seed"] == 1871


def test_too_few_clusters_to_fit_on_their_means() -> None:
    with pytest.raises(InvalidInputError) as err:
        plan_map(MapRequest(method="umap", fit_on="cluster_means"), n_rows=400, n_clusters=3)
    assert err.value.code == "too_few_points" and "at least 5 clusters, got 3" in err.value.message


def test_the_default_map() -> None:
    plan = plan_map(MapRequest(), n_rows=123_400, n_clusters=300)
    assert plan.spec.name == "umap" and plan.fit_on == "sample" and plan.n_fitted == 20_000
    assert plan.describe()["params"]["n_neighbors"] == 15 and not plan.supervised
