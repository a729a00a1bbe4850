"""The numba loops of the sparse relaxation's pair terms, over candidate pair lists (the numba
backend's, :class:`~.numba_backend.NumbaBackend`; a module of their own: importing numba costs
about 0.5 s, paid only when the backend is first used). Arrays are numpy views of the torch
tensors the backend passes; :mod:`.pair_losses` computes the same formulas with torch ops, and
the tests hold both to autograd.

Compiled on first use and cached on disk (``cache=True``; the service points
``NUMBA_CACHE_DIR`` at its state dir); the workers' warm-up fit makes them ready before any
request."""

import numpy as np
from numba import njit

jit = njit(nogil=True, cache=True)


@jit
def overlap_arguments(Z, cand, radius, temperature, out):
    # the sigmoid's argument (r_i - D_ij) / (T r_i) of each pair, row by row
    R, M = cand.shape
    for i in range(R):
        r = radius[i]
        scale = 1.0 / (temperature * r)
        zx, zy = Z[0, i], Z[1, i]
        for t in range(M):
            j = cand[i, t]
            dx, dy = zx - Z[0, j], zy - Z[1, j]
            out[i * M + t] = (r - (dx * dx + dy * dy)) * scale


@jit
def overlap_rest(
    Z, cand, radius, temperature, s, weight, inverse, keep, pair_a, cross, target,
    n_groups, count, factor, grad,
):  # fmt: skip
    # s: the pairs' sigmoids; a pair's edge weighs s, or s times `weight` (the folded rows'
    # multiplicities) when given
    R, M = cand.shape
    P = target.shape[0]
    has_weight = weight.shape[0] > 0
    # soft edges summed per group pair. A row's pairs come sorted by key, so equal keys are
    # summed in a register: one add into `edges` per run, not a chain of dependent adds into
    # the same slot (3× faster)
    edges = np.zeros(P, np.float64)
    for i in range(R):
        key, run = inverse[i * M], 0.0
        for t in range(i * M, (i + 1) * M):
            if inverse[t] != key:
                edges[key] += run
                key, run = inverse[t], 0.0
            run += s[t] * weight[t] if has_weight else s[t]
        edges[key] += run
    g_edge = np.empty(P, np.float32)
    loss = normalised_overlap(edges, keep, pair_a, cross, target, n_groups, count, factor, g_edge)
    # dL/dD_ij = g_edge · w (s - 1) / (T r), pulled along z_i - z_j (float32, as the layout)
    one = np.float32(1.0)
    for i in range(R):
        scale = np.float32(-2.0 / (temperature * radius[i]))
        zx, zy = Z[0, i], Z[1, i]
        gx, gy = np.float32(0.0), np.float32(0.0)
        for t in range(M):
            at = i * M + t
            j = cand[i, t]
            w = s[at] * weight[at] if has_weight else s[at]
            c = g_edge[inverse[at]] * (s[at] - one) * w * scale
            px, py = (zx - Z[0, j]) * c, (zy - Z[1, j]) * c
            grad[0, j] += px
            grad[1, j] += py
            gx += px
            gy += py
        grad[0, i] -= gx
        grad[1, i] -= gy
    return loss


@jit
def normalised_overlap(edges, keep, pair_a, cross, target, n_groups, count, factor, g_edge):
    # The soft-overlap term from its soft edges summed per group pair, the one definition both
    # numba loops use (over candidate lists above, over every pair in layout_loops): key p is
    # the pair (pair_a[p], b); R_p = keep_p edges_p / (row sum of keep · edges) · cross_p
    # (a row at 0 stays 0 and gets no gradient); the loss is factor · Σ |R - target| / count,
    # and g_edge_p (written) its derivative in edges_p. keep (or an empty array: keep all) is
    # applied to edges in place.
    P = edges.shape[0]
    has_keep = keep.shape[0] > 0
    rows = np.zeros(n_groups, np.float64)
    for p in range(P):
        if has_keep:
            edges[p] *= keep[p]
        rows[pair_a[p]] += edges[p]
    inv_rows = np.zeros(n_groups, np.float64)
    for g in range(n_groups):
        if rows[g] > 1e-12:
            inv_rows[g] = 1.0 / rows[g]
    # its gradient through the row normalisation
    per_pair = factor / max(count, 1.0)
    loss = 0.0
    g_R = np.empty(P, np.float64)
    row_dot = np.zeros(n_groups, np.float64)
    for p in range(P):
        R_p = edges[p] * inv_rows[pair_a[p]] * cross[p]
        delta = R_p - target[p]
        loss += abs(delta)
        g_R[p] = per_pair * np.sign(delta)
        row_dot[pair_a[p]] += g_R[p] * R_p
    for p in range(P):
        g = (g_R[p] - row_dot[pair_a[p]]) * inv_rows[pair_a[p]]
        g_edge[p] = g * keep[p] if has_keep else g
    return loss * per_pair


@jit
def kl_attraction(Z, neighbours, coef, grad, D_out):
    # Σ coef · log(1 + D_ij) over the kNN edges: gradient 2 coef (z_i - z_j) / (1 + D);
    # D_out (if not empty) receives the D_ij, for the loss
    _pull_pairs(Z, neighbours, -2.0 * coef, 1, grad, D_out)


@jit
def _pull_pairs(Z, columns, a, power, grad, D_out):
    # add the gradient of pairs (i, columns[i, t]) whose dL/dD_ij is -a/2 · (1 + D_ij)^-power
    # (power 1 or 2) into the planar grad
    n, m = columns.shape
    keep_D = D_out.shape[0] > 0
    for i in range(n):
        zx, zy = Z[0, i], Z[1, i]
        gx = gy = 0.0
        for t in range(m):
            j = columns[i, t]
            dx, dy = zx - Z[0, j], zy - Z[1, j]
            D = dx * dx + dy * dy
            if keep_D:
                D_out[i * m + t] = D
            q = 1.0 / (1.0 + D)
            c = a * q if power == 1 else a * q * q
            grad[0, j] += dx * c
            grad[1, j] += dy * c
            gx += dx * c
            gy += dy * c
        grad[0, i] -= gx
        grad[1, i] -= gy


@jit
def random_others(n, negatives, seed):
    # (n, negatives) points drawn uniformly from the others of each point, from `seed`:
    # torch.randint and the shift past i took 110 µs a call at n = 3000, a third of the KL term
    other = np.empty((n, negatives), np.int64)
    state = np.uint64(seed)
    span = np.uint64(n - 1)
    for i in range(n):
        for t in range(negatives):
            state, x = _splitmix64(state)
            j = np.int64(((x >> np.uint64(32)) * span) >> np.uint64(32))  # uniform in [0, n-1)
            other[i, t] = j + 1 if j >= i else j
    return other


@jit
def kl_repulsion(Z, other, factor, grad):
    # factor · log Σ q over the sampled pairs (q = 1 / (1 + D), each sample standing for
    # (n - 1) / negatives pairs)
    n, negatives = other.shape
    scale = (n - 1) / negatives
    total = 0.0
    for i in range(n):
        for t in range(negatives):
            j = other[i, t]
            dx, dy = Z[0, i] - Z[0, j], Z[1, i] - Z[1, j]
            total += 1.0 / (1.0 + dx * dx + dy * dy)
    total *= scale
    # d(factor · log total)/dD_ij = -factor · scale · q² / total
    _pull_pairs(Z, other, 2.0 * factor * scale / total, 2, grad, Z[0, :0])
    return total


@jit
def _splitmix64(state):
    # (next state, a 64-bit random number): SplitMix64 (Steele, Lea and Flood, 2014)
    state = state + np.uint64(0x9E3779B97F4A7C15)
    z = state
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return state, z ^ (z >> np.uint64(31))


@jit
def smallest(Z, cand, k1, ordered, where):
    # each row's k1 smallest |z_i - z_j|² over its candidates, ascending, and their columns
    # (insertion into a k1-slot buffer: torch.topk took 2.6 ms for 3030 × 48)
    R, M = cand.shape
    for i in range(R):
        zx, zy = Z[0, i], Z[1, i]
        filled = 0
        for t in range(M):
            j = cand[i, t]
            dx, dy = zx - Z[0, j], zy - Z[1, j]
            D = dx * dx + dy * dy
            if filled == k1 and ordered[i, k1 - 1] <= D:
                continue
            slot = filled if filled < k1 else k1 - 1
            while slot > 0 and ordered[i, slot - 1] > D:
                ordered[i, slot] = ordered[i, slot - 1]
                where[i, slot] = where[i, slot - 1]
                slot -= 1
            ordered[i, slot] = D
            where[i, slot] = t
            if filled < k1:
                filled += 1


@jit
def smallest_in_rows(dist, k, out):
    # the columns of each row's k smallest entries, ascending (insertion into a k-slot
    # buffer; once it is full most entries fail the first comparison): 2.2× torch.topk's
    # speed on 1024 × 3030 distance rows
    R, n = dist.shape
    values = np.empty(k, dist.dtype)
    for i in range(R):
        filled = 0
        for j in range(n):
            d = dist[i, j]
            if filled == k:
                if d >= values[k - 1]:
                    continue
                slot = k - 1
            else:
                slot = filled
                filled += 1
            while slot > 0 and values[slot - 1] > d:
                values[slot] = values[slot - 1]
                out[i, slot] = out[i, slot - 1]
                slot -= 1
            values[slot] = d
            out[i, slot] = j
