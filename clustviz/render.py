"""Plots in the seed notebook's look, with plotnine: each guess drawn as its text, coloured by
cluster with Paul Tol's discrete rainbow, ``theme_bw``; the cluster plot adds translucent blobs
(hull polygons) under the text, in the same colour as their cluster's text; the map plot puts
a preamble's text over every row of a global map, drawn as one light-grey image of dots counted
into the panel's pixels when the figure is drawn (10⁵ rows cost a histogram, not 10⁵ markers).

Functions return bytes (PNG/SVG) or the ``ggplot`` object; no matplotlib figure is left open.
"""

from __future__ import annotations

import functools
import io
import textwrap
from collections.abc import Sequence
from typing import Any, Literal

import numpy as np
import pandas as pd

from clustviz.labels import dense_labels

__all__ = ["cluster_colors", "make_map_plot", "make_plot", "plot_title", "render_plot"]

ImageFormat = Literal["png", "svg"]
MAX_TOL_COLORS = 23  # tol_colors.rainbow_discrete refuses more
#: A map's context layer: every row of the dataset counted into the panel's pixels and drawn as
#: one light-grey image (one histogram instead of 10⁵ markers; an SVG keeps one ``<image>``),
#: with no text. A pixel under one row's dot is the lightest grey, the pixel under the most dots
#: the darkest (log scale between them): light enough for the text, and dense parts still show.
CONTEXT_GREYS = ("#cfcfcf", "#9a9a9a")
#: How wide a row's dot is, in points (a square of pixels at the image's resolution).
CONTEXT_DOT_PT = 1.4


def cluster_colors(n_clusters: int) -> list[str]:
    """``n`` distinct colours: Tol's discrete rainbow up to 23, else Tol's continuous rainbow
    sampled evenly past its near-white start (the discrete scheme stops at 23, and cycling
    would give two clusters one colour)."""
    import matplotlib.colors as mcolors
    import tol_colors

    if n_clusters <= 0:
        return []
    if n_clusters <= MAX_TOL_COLORS:
        palette = tol_colors.rainbow_discrete(n_clusters)
        return [mcolors.to_hex(palette(index)) for index in range(n_clusters)]
    rainbow = tol_colors.rainbow(np.linspace(0.12, 1.0, n_clusters))  # (n, 4) RGBA
    return [mcolors.to_hex(tuple(rgba)) for rgba in rainbow]


def _escape_mathtext(text: str) -> str:
    # matplotlib treats "$...$" as math: a guess such as "$5" would fail to render.
    return text.replace("$", r"\$")


def make_plot(
    x: np.ndarray,
    y: np.ndarray,
    guesses: Sequence[str],
    cluster_ids: np.ndarray,
    *,
    title: str,
    caption: str = "",
    hulls: Sequence[tuple[int, Sequence[np.ndarray]]] = (),
    context: tuple[np.ndarray, np.ndarray] | None = None,
) -> Any:
    """The ggplot: text per guess coloured by ``cluster_ids``; ``hulls`` are
    ``(cluster_id, [polygon (m, 2), ...])`` drawn as blobs in the cluster's colour; ``context``
    ``(x, y)`` are drawn first, as a light-grey density image (a global map's other rows)."""
    import plotnine as p9

    order, _ = dense_labels(cluster_ids)
    palette = dict(zip((str(c) for c in order), cluster_colors(len(order)), strict=True))
    levels = [str(c) for c in order]
    points = pd.DataFrame(
        {
            "x": np.asarray(x, dtype=float),
            "y": np.asarray(y, dtype=float),
            "guess": [_escape_mathtext(g) for g in guesses],
            "cluster_id": pd.Categorical([str(c) for c in cluster_ids], categories=levels),
        }
    )
    plot = p9.ggplot(points, p9.aes(x="x", y="y"))
    if context is not None:
        plot += _context_layer(*context)
    if hulls:
        rows = []
        for group, (cluster_id, polygons) in enumerate(
            (cid, poly) for cid, polys in hulls for poly in polys
        ):
            polygon = np.asarray(polygons)
            rows.append(
                pd.DataFrame(
                    {
                        "x": polygon[:, 0],
                        "y": polygon[:, 1],
                        "group": group,
                        "cluster_id": str(cluster_id),
                    }
                )
            )
        if rows:
            blobs = pd.concat(rows, ignore_index=True)
            blobs["cluster_id"] = pd.Categorical(blobs["cluster_id"], categories=levels)
            plot += p9.geom_polygon(
                p9.aes(x="x", y="y", group="group", fill="cluster_id", color="cluster_id"),
                data=blobs,
                alpha=0.2,
                size=0.6,
                show_legend=False,
            )
            plot += p9.scale_fill_manual(values=palette, limits=levels, guide=None)
    plot += p9.geom_text(p9.aes(label="guess", color="cluster_id"), size=9)
    plot += p9.scale_color_manual(values=palette, limits=levels, name="cluster_id")
    plot += p9.theme_bw()
    plot += p9.labs(title=title, caption=caption, x="x", y="y")
    plot += p9.theme(plot_caption=p9.element_text(size=7, ha="left"))
    return plot


def context_counts(
    x: np.ndarray,
    y: np.ndarray,
    *,
    xlim: tuple[float, float],
    ylim: tuple[float, float],
    shape: tuple[int, int],
) -> np.ndarray:
    """Rows per cell of a ``shape`` (height, width) grid over ``xlim`` × ``ylim``, row 0 at
    ``ylim[0]`` (rows outside the limits are left out)."""
    height, width = shape
    col = np.floor((np.asarray(x, dtype=float) - xlim[0]) * (width / (xlim[1] - xlim[0])))
    row = np.floor((np.asarray(y, dtype=float) - ylim[0]) * (height / (ylim[1] - ylim[0])))
    inside = (col >= 0) & (col < width) & (row >= 0) & (row < height)
    cells = row[inside].astype(np.int64) * width + col[inside].astype(np.int64)
    return np.bincount(cells, minlength=height * width).reshape(height, width)


def context_image(counts: np.ndarray) -> np.ndarray:
    """RGBA (height, width, 4) of :func:`context_counts`: empty cells transparent, the others
    opaque, from the first of :data:`CONTEXT_GREYS` (one row) to the second (the most rows),
    on a log scale."""
    import matplotlib.colors as mcolors

    light, dark = (np.array(mcolors.to_rgb(grey)) for grey in CONTEXT_GREYS)
    filled = counts > 0
    share = np.log(np.maximum(counts, 1)) / np.log(max(int(counts.max()), 2))  # 0 for one row
    image = np.zeros((*counts.shape, 4))
    image[..., :3] = light + share[..., None] * (dark - light)
    image[..., 3] = filled
    return image


def spread_counts(counts: np.ndarray, width: int) -> np.ndarray:
    """Each cell's count spread over the ``width`` × ``width`` square of cells around it (a
    row drawn as a dot of that many pixels): window sums of ``counts``, same shape."""
    if width <= 1:
        return counts
    before = (width - 1) // 2
    padding = (before, width - 1 - before)
    for axis in (0, 1):
        pad = [(0, 0), (0, 0)]
        pad[axis] = padding
        total = np.cumsum(np.pad(counts, pad), axis=axis)
        total = np.insert(total, 0, 0, axis=axis)
        size = counts.shape[axis]
        counts = np.take(total, np.arange(width, width + size), axis=axis) - np.take(
            total, np.arange(size), axis=axis
        )
    return counts


def _context_layer(x: np.ndarray, y: np.ndarray) -> Any:
    """The layer drawing every ``(x, y)`` as :func:`context_image` (its data: the rows' bounding
    box, so that the panel's limits hold every row)."""
    import plotnine as p9

    xy = np.column_stack([np.asarray(x, dtype=np.float32), np.asarray(y, dtype=np.float32)])
    box = pd.DataFrame(
        {"x": [xy[:, 0].min(), xy[:, 0].max()], "y": [xy[:, 1].min(), xy[:, 1].max()]}
    )
    return _context_geom()(p9.aes(x="x", y="y"), data=box, inherit_aes=False, rows=xy)


@functools.cache
def _context_geom() -> type:
    """plotnine's geom for the context (made on first use: plotnine is imported lazily)."""
    from matplotlib.image import AxesImage
    from plotnine.geoms.geom import geom

    class ContextImage(AxesImage):
        """The rows counted into the axes' pixels when the figure is drawn, so that one cell is
        one pixel of the final layout (drawn as is: no resampling blurs the dots)."""

        def __init__(self, ax: Any, rows: np.ndarray, **kwargs: Any) -> None:
            super().__init__(ax, origin="lower", interpolation="nearest", **kwargs)
            self.rows = rows
            self.counts = np.zeros((0, 0), dtype=np.int64)  # rows per pixel, as last drawn

        def draw(self, renderer: Any) -> None:
            box = self.axes.get_window_extent(renderer)
            scale = renderer.get_image_magnification()
            shape = (max(1, round(box.height * scale)), max(1, round(box.width * scale)))
            x0, x1, y0, y1 = self.get_extent()
            self.counts = context_counts(
                self.rows[:, 0], self.rows[:, 1], xlim=(x0, x1), ylim=(y0, y1), shape=shape
            )
            dot = round(CONTEXT_DOT_PT * self.axes.figure.dpi / 72 * scale)
            self.set_data(context_image(spread_counts(self.counts, max(1, dot))))
            super().draw(renderer)

    class geom_map_context(geom):
        """Every row of a map (the ``rows`` parameter, (n, 2)) as one image per panel."""

        # plotnine's geoms declare these per class (not ClassVar in its annotations)
        REQUIRED_AES = {"x", "y"}  # noqa: RUF012
        DEFAULT_PARAMS = {  # noqa: RUF012
            "stat": "identity",
            "position": "identity",
            "na_rm": False,
            "rows": None,
        }

        def draw_panel(self, data: Any, panel_params: Any, coord: Any, ax: Any) -> None:
            extent = (*panel_params.x.range, *panel_params.y.range)
            image = ContextImage(
                ax, self.params["rows"], extent=extent, zorder=self.params["zorder"]
            )
            image.set_data(np.zeros((1, 1, 4)))  # drawn at the figure's final size
            ax.add_image(image)

    return geom_map_context


def plot_title(preamble: str, projector_title: str, dataset_name: str) -> tuple[str, str]:
    """``(title, caption)``: preamble (wrapped) and projector above, the dataset below —
    what a reader needs to tell plots apart."""
    title = "\n".join([*textwrap.wrap(f"“{preamble} …”", width=64), projector_title])
    caption = "\n".join(textwrap.wrap(f"dataset: {dataset_name}", width=110))
    return title, caption


def make_map_plot(
    map_x: np.ndarray,
    map_y: np.ndarray,
    rows: np.ndarray,
    guesses: Sequence[str],
    cluster_ids: np.ndarray,
    *,
    title: str,
    caption: str = "",
) -> Any:
    """A preamble on a global map: every row of the map (``map_x, map_y``) as light context, the
    preamble's ``rows`` (indices into the map) as their ``guesses``' text, coloured by
    ``cluster_ids`` with the per-preamble plots' palette (:func:`make_plot`'s)."""
    rows = np.asarray(rows)
    map_x, map_y = np.asarray(map_x), np.asarray(map_y)
    return make_plot(
        map_x[rows],
        map_y[rows],
        guesses,
        cluster_ids,
        title=title,
        caption=caption,
        context=(map_x, map_y),
    )


def render_plot(
    plot: Any, fmt: ImageFormat = "png", *, width: float = 8.0, height: float = 6.0, dpi: int = 100
) -> bytes:
    """Draw ``plot`` to PNG or SVG bytes and close the figure. SVG keeps text as ``<text>``."""
    import matplotlib
    import matplotlib.pyplot as plt
    import plotnine as p9

    if fmt not in ("png", "svg"):
        raise ValueError(f"fmt={fmt!r} is not 'png' or 'svg'")
    plot = plot + p9.theme(figure_size=(width, height), dpi=dpi)
    with matplotlib.rc_context({"svg.fonttype": "none", "svg.hashsalt": "clustviz"}):
        figure = plot.draw()
        try:
            buffer = io.BytesIO()
            figure.savefig(buffer, format=fmt, dpi=dpi, metadata=_metadata(fmt))
            return buffer.getvalue()
        finally:
            plt.close(figure)


def _metadata(fmt: str) -> dict[str, Any]:
    # No creation dates or version strings in the bytes: the same view renders the same file.
    if fmt == "svg":
        return {"Date": None, "Creator": None}
    return {"Software": None}
