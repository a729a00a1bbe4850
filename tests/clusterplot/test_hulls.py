from __future__ import annotations

import numpy as np
from shapely import Point, Polygon

from clustviz.clusterplot.hulls import chaikin, cluster_hulls, remove_outliers


def _contains(polygons, point) -> bool:
    return any(Polygon(p).buffer(1e-9).contains(Point(point)) for p in polygons)


def test_hull_contains_most_points_and_rings_closed() -> None:
    rng = np.random.default_rng(0)
    Y = np.concatenate([rng.normal(0, 1, (30, 2)), rng.normal(8, 1, (30, 2))])
    labels = np.repeat([0, 1], 30)
    hulls = cluster_hulls(Y, labels)
    assert [h.label for h in hulls] == [0, 1]
    for hull in hulls:
        assert hull.polygons
        for ring in hull.polygons:
            assert ring.ndim == 2 and ring.shape[1] == 2 and np.allclose(ring[0], ring[-1])
        inside = [_contains(hull.polygons, p) for p in Y[labels == hull.label]]
        assert np.mean(inside) >= 0.9


def test_far_outlier_removed() -> None:
    rng = np.random.default_rng(1)
    points = np.vstack([rng.normal(0, 1, (20, 2)), [[50.0, 50.0]]])
    keep = remove_outliers(points, k=2)
    assert not keep[-1] and keep[:-1].sum() >= 18
    hull = cluster_hulls(points, np.zeros(21, dtype=int))[0]
    assert not _contains(hull.polygons, (50.0, 50.0))


def test_several_polygons_and_tiny_clusters() -> None:
    rng = np.random.default_rng(2)
    two_groups = np.vstack([rng.normal(0, 0.3, (10, 2)), rng.normal(20, 0.3, (10, 2))])
    Y = np.vstack([two_groups, [[10.0, -10.0]], [[-10.0, 10.0], [-9.0, 10.0]]])
    labels = np.array([0] * 20 + [1] + [2, 2])
    # alpha=0.5: triangles of circumradius < 2 (in a layout normalised to extent 20)
    hulls = {h.label: h for h in cluster_hulls(Y, labels, alpha=0.5)}
    assert len(hulls[0].polygons) == 2
    assert _contains(hulls[1].polygons, (10.0, -10.0))
    assert _contains(hulls[2].polygons, (-9.5, 10.0))


def test_scale_aware() -> None:
    rng = np.random.default_rng(3)
    Y = rng.normal(0, 1, (25, 2))
    labels = np.zeros(25, dtype=int)
    small = cluster_hulls(Y * 0.001, labels)[0].polygons
    large = cluster_hulls(Y * 1000, labels)[0].polygons
    assert len(small) == len(large)
    np.testing.assert_allclose(small[0] * 1e6, large[0], rtol=1e-6, atol=1e-3)


def test_chaikin_keeps_ring_closed() -> None:
    square = np.array([[0, 0], [1, 0], [1, 1], [0, 1], [0, 0]], dtype=float)
    smooth = chaikin(square, 2)
    assert np.allclose(smooth[0], smooth[-1]) and len(smooth) == 4 * 4 + 1
