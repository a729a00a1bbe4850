"""Rendering by structure: layers and mappings, colours, PNG/SVG bytes, no figure left open."""

from __future__ import annotations

import io

import matplotlib.pyplot as plt
import numpy as np
import plotnine as p9
import pytest

from clustviz.render import (
    cluster_colors,
    make_map_plot,
    make_plot,
    plot_title,
    render_plot,
    spread_counts,
)


def sample(n: int = 40, n_clusters: int = 5):  # type: ignore[no-untyped-def]
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(2, n))
    guesses = [f"guess{i}" for i in range(n)]
    cluster_ids = 100 + (np.arange(n) % n_clusters) * 7  # sparse global ids
    return x, y, guesses, cluster_ids


def test_plot_has_text_per_guess_coloured_by_cluster_with_theme_bw() -> None:
    x, y, guesses, cluster_ids = sample()
    plot = make_plot(x, y, guesses, cluster_ids, title="t", caption="c")
    (text,) = [layer for layer in plot.layers if isinstance(layer.geom, p9.geom_text)]
    assert text.mapping["label"] == "guess" and text.mapping["color"] == "cluster_id"
    assert len(plot.data) == 40 and list(plot.data["cluster_id"].cat.categories) == [
        "100",
        "107",
        "114",
        "121",
        "128",
    ]
    assert isinstance(plot.theme, p9.theme_bw) or "theme_bw" in repr(type(plot.theme).__mro__)
    assert plot.labels.title == "t"


def test_hulls_are_blobs_in_the_same_colour_as_their_text() -> None:
    x, y, guesses, cluster_ids = sample()
    square = np.array([[0, 0], [1, 0], [1, 1], [0, 1], [0, 0]], dtype=float)
    plot = make_plot(x, y, guesses, cluster_ids, title="t", hulls=[(107, [square, square + 3])])
    (blobs,) = [layer for layer in plot.layers if isinstance(layer.geom, p9.geom_polygon)]
    assert blobs.mapping["fill"] == "cluster_id" and blobs.mapping["color"] == "cluster_id"
    assert set(blobs.geom.data["group"]) == {0, 1} and set(blobs.geom.data["cluster_id"]) == {"107"}
    # one palette for fill and colour: the blob of cluster 107 has its text's colour
    scales = {type(scale).__name__: scale for scale in plot.scales}
    assert scales["scale_fill_manual"].palette(5) == scales["scale_color_manual"].palette(5)


@pytest.mark.parametrize("n", [1, 5, 23, 24, 40])
def test_colours_are_distinct_beyond_tol_23(n: int) -> None:
    colours = cluster_colors(n)
    assert len(colours) == n == len(set(colours))


def test_png_and_svg_bytes_and_no_figure_left_open() -> None:
    x, y, guesses, cluster_ids = sample(n_clusters=24)
    guesses[0] = "$5"  # mathtext would choke on an unescaped dollar
    plot = make_plot(x, y, guesses, cluster_ids, title="t")
    png = render_plot(plot, "png", width=4, height=3, dpi=50)
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    assert int.from_bytes(png[16:20], "big") == 200  # width 4 in × 50 dpi
    svg = render_plot(plot, "svg").decode()
    assert svg.count("guess") >= 39 and "$5" in svg
    assert render_plot(plot, "svg") == render_plot(plot, "svg")  # same view, same bytes
    assert plt.get_fignums() == []


def test_title_names_preamble_projector_and_dataset() -> None:
    title, caption = plot_title("Students were outraged over the administration's new", "UMAP", "d")
    assert "Students were outraged" in title and title.endswith("UMAP") and "dataset: d" in caption
    with pytest.raises(ValueError, match="fmt"):
        render_plot(make_plot(*sample(), title="t"), "gif")  # type: ignore[arg-type]


def test_map_plot_draws_every_row_as_context_under_the_preambles_text() -> None:
    rng = np.random.default_rng(1)
    map_x, map_y = rng.normal(size=(2, 1000))
    map_x[0], map_y[0] = 40.0, -30.0  # an outlier: the panel still holds it
    rows = np.arange(200, 240)
    _, _, guesses, cluster_ids = sample()
    plot = make_map_plot(map_x, map_y, rows, guesses, cluster_ids, title="t", caption="c")
    context, text = plot.layers  # context first: the text is drawn over it
    assert isinstance(text.geom, p9.geom_text) and "color" not in context.mapping
    assert text.mapping["label"] == "guess" and text.mapping["color"] == "cluster_id"
    assert np.array_equal(plot.data["x"], map_x[rows]) and list(plot.data["guess"]) == guesses
    # the per-preamble plot's palette, cluster for cluster
    alone = make_plot(map_x[rows], map_y[rows], guesses, cluster_ids, title="t")
    colours = {type(scale).__name__: scale for scale in plot.scales}["scale_color_manual"]
    same = {type(scale).__name__: scale for scale in alone.scales}["scale_color_manual"]
    assert colours.palette(5) == same.palette(5)

    # drawn: one image under the text, a cell per pixel of the panel, every row counted in it
    figure = (plot + p9.theme(figure_size=(4, 3), dpi=100)).draw()
    try:
        figure.savefig(io.BytesIO(), format="png", dpi=100)  # laid out and drawn
        ax = figure.axes[0]
        (image,) = ax.images
        box = ax.get_window_extent()
        counts = image.counts
        assert counts.shape == (round(box.height), round(box.width))
        assert counts.sum() == 1000 and counts.max() >= 2  # none outside, some pixels shared
        assert all(image.get_zorder() < label.get_zorder() for label in ax.texts)
        pixels = np.asarray(image.get_array())
        filled = pixels[..., 3] > 0
        # each row a dot of 2 × 2 pixels at 100 dpi (1.4 pt); the rest transparent
        assert np.array_equal(filled, spread_counts(counts, 2) > 0)
        greys = pixels[filled][:, :3]
        assert np.allclose(greys, greys[:, :1])  # grey: one colour for every cluster
        assert greys.min() > 0.5 and greys.max() > greys.min()  # light; denser is darker
    finally:
        plt.close(figure)
    svg = render_plot(plot, "svg", width=4, height=3, dpi=50)
    assert svg.count(b"<image") == 1 and svg.count(b"guess") >= 40
    assert plt.get_fignums() == []


def test_a_rows_dot_is_a_square_of_pixels_clipped_at_the_edges() -> None:
    counts = np.zeros((6, 7), dtype=np.int64)
    counts[3, 3], counts[0, 6] = 2, 1
    spread = spread_counts(counts, 3)
    assert spread.shape == counts.shape and spread[2:5, 2:5].tolist() == [[2] * 3] * 3
    assert spread[0:2, 5:7].tolist() == [[1, 1], [1, 1]]  # the corner's dot, clipped
    assert spread.sum() == 2 * 9 + 4 and spread_counts(counts, 1) is counts
