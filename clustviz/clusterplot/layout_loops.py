"""The numba loops that fit one preamble over all its pairs: the dense path's two optimisations
(the numba backend's :meth:`~.numba_backend.NumbaBackend.neighbour_embedding` and
:meth:`~.numba_backend.NumbaBackend.gradient_layout`).

The torch code of the same formulas (:func:`~.init.neighbour_embedding`,
:func:`~.relaxation.gradient_layout`) makes some forty tensor ops a step; on a 40-point preamble
each op's dispatch costs more than its arithmetic, so one preamble's 250 steps were mostly
overhead. Here a step is a few loops over the ``N × N`` pairs of one preamble. Each preamble is
computed on its own, by one thread, in one order: its answer cannot depend on what it was
batched with, nor on the thread count. Sums are float64. The tests hold both to the autograd
oracle and to each other (``tests/clusterplot/test_dense_backends.py``).

The soft overlap's normalisation, loss and gradient in the summed edges are
:func:`~.pair_loops.normalised_overlap`, the one numba definition the candidate-list loops call
too; here only the pair passes around it.

Arrays are batched ``(B, ...)`` numpy arrays (padding rows masked out); the per-term arrays are
those of :class:`~.losses.SoftOverlap` (an empty ``flat`` means a row is its own group, an
empty ``multiplicity`` that no rows are folded).
"""

import math

import numpy as np
from numba import njit

from clustviz.clusterplot.pair_loops import normalised_overlap

jit = njit(nogil=True, cache=True)

_EPS = 1e-12
_BETA1, _BETA2, _ADAM_EPS = 0.9, 0.999, 1e-8


@jit
def _adam(p, g, m, v, t, lr):
    # torch.optim.Adam's formula, as clustviz.clusterplot.batch.Adam
    step = lr / (1.0 - _BETA1**t)
    root_bc2 = math.sqrt(1.0 - _BETA2**t)
    for i in range(p.shape[0]):
        for c in range(2):
            m[i, c] = _BETA1 * m[i, c] + (1.0 - _BETA1) * g[i, c]
            v[i, c] = _BETA2 * v[i, c] + (1.0 - _BETA2) * g[i, c] * g[i, c]
            p[i, c] -= step * m[i, c] / (math.sqrt(v[i, c]) / root_bc2 + _ADAM_EPS)


@jit
def _sq_dists(Z, rows, D):
    for i in range(rows):
        for j in range(rows):
            dx, dy = Z[i, 0] - Z[j, 0], Z[i, 1] - Z[j, 1]
            D[i, j] = dx * dx + dy * dy


@jit
def _pair_gradient(coef, Z, rows, g):
    # D_ij = |z_i - z_j|²: dL/dz_i = 2 Σ_j (c_ij + c_ji)(z_i - z_j)
    for i in range(rows):
        gx, gy = 0.0, 0.0
        for j in range(rows):
            c = coef[i, j] + coef[j, i]
            gx += c * (Z[i, 0] - Z[j, 0])
            gy += c * (Z[i, 1] - Z[j, 1])
        g[i, 0], g[i, 1] = 2.0 * gx, 2.0 * gy


@jit
def _radii(D, rows, invalid, k, multiplicity, out):
    # midway between each row's k-th and (k+1)-th squared distance (overlap.radius_from_sorted);
    # with multiplicity, column j counts multiplicity[j] times and row i's own copies come
    # first at distance 0. Each row keeps its k + 1 nearest in a sorted buffer (insertion):
    # a valid column stands for one row at least, so no further column can matter.
    folded = multiplicity.shape[0] > 0
    width = min(k + 1, rows)
    best, where = np.empty(width), np.empty(width, np.int64)
    for i in range(rows):
        filled = 0
        for j in range(rows):
            d = np.inf if invalid[i, j] else D[i, j]
            if filled < width:
                t = filled
                filled += 1
            elif d < best[width - 1]:
                t = width - 1
            else:
                continue
            while t > 0 and best[t - 1] > d:
                best[t], where[t] = best[t - 1], where[t - 1]
                t -= 1
            best[t], where[t] = d, j
        if not folded:
            kth, nxt = best[k - 1], best[min(k, rows - 1)]
        else:
            reached = max(multiplicity[i] - 1.0, 0.0)
            kth = 0.0 if reached >= k else np.inf
            nxt = 0.0 if reached >= k + 1 else np.inf
            for t in range(width):
                if reached >= k + 1:
                    break
                reached += multiplicity[where[t]]
                if reached >= k and kth == np.inf:
                    kth = best[t]
                if reached >= k + 1:
                    nxt = best[t]
        radius = 0.5 * (kth + nxt) if np.isfinite(nxt) else 1.5 * kth
        out[i] = max(radius, _EPS) if np.isfinite(radius) else 1.0


@jit
def _soft_overlap(
    D, rows, radius, pair_weight, flat, n_groups, pairs, target, count, temperature,
    alpha, coef, s, w, edges, pair_a, g_edge, no_keep,
):  # fmt: skip
    # alpha · the loss mean|R - target| of the soft kNN graph (losses.SoftOverlap), its
    # dL/dD added into coef. The soft edges are summed per group pair (key a · G + b) and
    # pair_loops.normalised_overlap (shared with the candidate-list loops) makes the loss and
    # its gradient in them. Pairs of weight 0 (invalid, or inside one group) add nothing.
    grouped = flat.shape[0] > 0
    G = n_groups if grouped else rows
    P = G * G
    for p in range(P):
        edges[p] = 0.0
        pair_a[p] = p // G
    for i in range(rows):
        scale = 1.0 / (temperature * radius[i])
        for j in range(rows):
            if pair_weight[i, j] == 0.0:
                continue
            sig = 1.0 / (1.0 + math.exp(-(radius[i] - D[i, j]) * scale))
            s[i, j] = sig
            w[i, j] = sig * pair_weight[i, j]
            edges[flat[i, j] if grouped else i * G + j] += w[i, j]
    loss = normalised_overlap(
        edges[:P], no_keep, pair_a[:P], pairs.reshape(P), target.reshape(P), G, count, alpha,
        g_edge[:P],
    )  # fmt: skip
    for i in range(rows):
        scale = 1.0 / (temperature * radius[i])
        for j in range(rows):
            if pair_weight[i, j] == 0.0:
                continue
            # dw/dD = -weight · s (1 - s) / (τ r)
            g = g_edge[flat[i, j] if grouped else i * G + j]
            coef[i, j] += g * w[i, j] * (s[i, j] - 1.0) * scale
    return loss


@jit
def _knn_kl(D, n, P, valid, alpha, coef):
    # KL(P || Q) of the kNN graph against a t-kernel (losses.knn_kl) and alpha · dL/dD into coef
    total, attraction = 0.0, 0.0
    for i in range(n):
        for j in range(n):
            total += valid[i, j] / (1.0 + D[i, j])
            if P[i, j] != 0.0:
                attraction += P[i, j] * math.log1p(D[i, j])
    total = max(total, 1e-30)
    for i in range(n):
        for j in range(n):
            q = valid[i, j] / (1.0 + D[i, j])
            coef[i, j] += alpha * (P[i, j] - q / total) * q
    return attraction + math.log(total)


@jit
def _centroid_offsets(Y, n, labels, share, targets, factor, offsets):
    # the centroid pull factor · Σ_c |z̄_c - t_c| (losses.CentroidPull); offsets gets
    # factor (z̄_c - t_c) / |z̄_c - t_c|, the part of each member's gradient its cluster shares
    offsets[:] = 0.0
    for i in range(n):
        for c in range(2):
            offsets[labels[i], c] += Y[i, c] * share[i]
    loss = 0.0
    for k in range(targets.shape[0]):
        dx, dy = offsets[k, 0] - targets[k, 0], offsets[k, 1] - targets[k, 1]
        distance = math.sqrt(dx * dx + dy * dy)
        loss += distance
        unit = factor / max(distance, _EPS)  # 0 for a cluster exactly at its target
        offsets[k, 0], offsets[k, 1] = dx * unit, dy * unit
    return factor * loss


@jit
def neighbour_embedding(Y0, P, valid, steps, lr, exaggeration, out):
    """Adam on KL(P || Q) from ``Y0 (B, n, 2)``, early exaggeration for the first quarter,
    into ``out``; ``valid (B, n, n)`` masks padding and the diagonal."""
    B, n = Y0.shape[0], Y0.shape[1]
    for b in range(B):
        Y = Y0[b].copy()
        m, v, g = np.zeros((n, 2)), np.zeros((n, 2)), np.zeros((n, 2))
        D, coef = np.empty((n, n)), np.empty((n, n))
        for step in range(steps):
            ex = exaggeration if step < steps // 4 else 1.0
            _sq_dists(Y, n, D)
            total = 0.0
            for i in range(n):
                for j in range(n):
                    total += valid[b, i, j] / (1.0 + D[i, j])
            total = max(total, 1e-30)
            for i in range(n):
                for j in range(n):
                    w = valid[b, i, j] / (1.0 + D[i, j])
                    coef[i, j] = (P[b, i, j] * ex - w / total) * w
            _pair_gradient(coef, Y, n, g)
            _adam(Y, g, m, v, step + 1, lr)
        out[b] = Y


@jit
def gradient_layout(
    Y0, point_anchor, weight, inv_members, anchor_rows,
    sub_pair_weight, sub_invalid, sub_flat, sub_pairs, sub_target, sub_count, sub_k,
    sub_multiplicity, n_anchors,
    label_pair_weight, label_invalid, label_flat, label_pairs, label_target, label_count,
    label_k, n_clusters,
    P, valid, steps, lr, overlap_weight, label_overlap_weight, knn_weight, temperature,
    radius_every, pull_factor, pull_targets, pull_share, pull_labels, out, trace,
):  # fmt: skip
    """:func:`~.relaxation.gradient_layout`'s Adam over translations ``T`` and per-point moves
    ``delta``, preamble by preamble, into ``out (B, n, 2)`` and ``trace (steps, B)``; the
    centroid pull (:class:`~.losses.CentroidPull`'s arrays) where ``pull_factor[b] > 0``."""
    B, n = Y0.shape[0], Y0.shape[1]
    A, A2 = n_anchors, anchor_rows.shape[1]
    N = n + A2
    G = max(n_anchors, N, n_clusters)
    for b in range(B):
        T, delta = np.zeros((A, 2)), np.zeros((n, 2))
        mT, vT, md, vd = np.zeros((A, 2)), np.zeros((A, 2)), np.zeros((n, 2)), np.zeros((n, 2))
        Z, D, coef = np.empty((N, 2)), np.empty((N, N)), np.empty((N, N))
        s, w = np.empty((N, N)), np.empty((N, N))
        edges, g_edge, pair_a = np.empty(G * G), np.empty(G * G), np.empty(G * G, np.int64)
        no_keep = np.empty(0)
        sums, g_Z, g_A = np.empty((A, 2)), np.empty((N, 2)), np.empty((A, 2))
        g_Y, g_T = np.empty((n, 2)), np.empty((A, 2))
        radius_sub, radius_label = np.empty(N), np.empty(n)
        anchor, keep = point_anchor[b], weight[b]
        C = pull_targets.shape[1]
        offsets = np.zeros((C, 2))  # the pull's gradient in each cluster's centroid
        pulling = pull_factor[b] > 0
        for step in range(steps):
            for i in range(n):
                for c in range(2):
                    Z[i, c] = Y0[b, i, c] + T[anchor[i], c] + delta[i, c] * keep[i]
            if A2:  # an anchor's 2-D position: the mean of its members
                sums[:] = 0.0
                for i in range(n):
                    for c in range(2):
                        sums[anchor[i], c] += Z[i, c] * keep[i]
                for r in range(A2):
                    a = anchor_rows[b, r]
                    for c in range(2):
                        Z[n + r, c] = sums[a, c] * inv_members[b, a]
            _sq_dists(Z, N, D)
            if step % radius_every == 0:  # detached radii, refreshed every radius_every steps
                _radii(D, N, sub_invalid[b], sub_k[b], sub_multiplicity[b], radius_sub)
                _radii(D, n, label_invalid[b], label_k[b], sub_multiplicity[b, :0], radius_label)
            coef[:] = 0.0
            loss = _soft_overlap(
                D, N, radius_sub, sub_pair_weight[b], sub_flat[b], n_anchors, sub_pairs[b],
                sub_target[b], sub_count[b], temperature, overlap_weight, coef, s, w,
                edges, pair_a, g_edge, no_keep,
            )  # fmt: skip
            loss += _soft_overlap(
                D, n, radius_label, label_pair_weight[b], label_flat[b], n_clusters,
                label_pairs[b], label_target[b], label_count[b], temperature,
                label_overlap_weight, coef, s, w, edges, pair_a, g_edge, no_keep,
            )  # fmt: skip
            if knn_weight > 0:
                loss += knn_weight * _knn_kl(D, n, P[b], valid[b], knn_weight, coef)
            if pulling:
                loss += _centroid_offsets(
                    Z, n, pull_labels[b], pull_share[b], pull_targets[b], pull_factor[b], offsets
                )
            _pair_gradient(coef, Z, N, g_Z)
            g_A[:] = 0.0
            for r in range(A2):  # an anchor's gradient flows to its members
                for c in range(2):
                    g_A[anchor_rows[b, r], c] += g_Z[n + r, c]
            g_T[:] = 0.0
            for i in range(n):
                a = anchor[i]
                for c in range(2):
                    # d pull / d y_i = factor (z̄_c - t_c) / |z̄_c - t_c| / |c| (offsets: all
                    # but the share)
                    g_pull = 0.0
                    if pulling:
                        g_pull = offsets[pull_labels[b, i], c] * pull_share[b, i]
                    g = (g_Z[i, c] + g_A[a, c] * inv_members[b, a] + g_pull) * keep[i]
                    g_Y[i, c] = g
                    g_T[a, c] += g
            _adam(T, g_T, mT, vT, step + 1, lr)
            _adam(delta, g_Y, md, vd, step + 1, lr)
            trace[step, b] = loss
        for i in range(n):
            for c in range(2):
                out[b, i, c] = (Y0[b, i, c] + T[anchor[i], c] + delta[i, c] * keep[i]) * keep[i]
