"""Compiled CPU kernels (numba): z-buffer visibility, edge-pair search and soft silhouettes.

These are the hot loops of the renderer. They touch only the pixels inside each face's bounding
box, so their cost grows with covered pixels, not faces x pixels. Every kernel has a PyTorch twin in
nmrlight.raster.reference, used on CUDA and as the reference implementation in tests.
"""

from __future__ import annotations

import math

import numba
import numpy as np

_NB = {"cache": True, "nogil": True, "fastmath": False}


@numba.njit(**_NB)
def _clamp_int(x: float, lo: int, hi: int) -> int:
    if x < lo:
        return lo
    if x > hi:
        return hi
    return int(x)


@numba.njit(**_NB)
def _raster_face(f, uv, z, faces, row_lo, row_hi, width, face_id, inv_depth, over):
    """Face f into the z-buffer rows [row_lo, row_hi); with `over`, the buffer may already hold faces
    numbered above f (drawn first), and f wins exact ties against them, as drawn in order it would."""
    a, b, c = faces[f, 0], faces[f, 1], faces[f, 2]
    x0, y0 = uv[a, 0], uv[a, 1]
    x1, y1 = uv[b, 0], uv[b, 1]
    x2, y2 = uv[c, 0], uv[c, 1]
    area = (x1 - x0) * (y2 - y0) - (x2 - x0) * (y1 - y0)
    if area == 0.0 or not math.isfinite(area):
        return
    # pixel (col, row) has its centre at (col + 0.5, row + 0.5)
    rmin = _clamp_int(math.ceil(min(y0, y1, y2) - 0.5), row_lo, row_hi)
    rmax = _clamp_int(math.floor(max(y0, y1, y2) - 0.5), row_lo - 1, row_hi - 1)
    if rmin > rmax:
        return
    cmin = _clamp_int(math.ceil(min(x0, x1, x2) - 0.5), 0, width)
    cmax = _clamp_int(math.floor(max(x0, x1, x2) - 0.5), -1, width - 1)
    inv_area = 1.0 / area
    iz0, iz1, iz2 = 1.0 / z[a], 1.0 / z[b], 1.0 / z[c]
    # along a row each barycentric is affine in px: b_k = c_k + a_k px; the pixels where all three
    # are >= 0 form one span, found analytically (padded by a pixel, the exact test below decides)
    a0 = -(y2 - y1) * inv_area
    a1 = -(y0 - y2) * inv_area
    for row in range(rmin, rmax + 1):
        py = row + 0.5
        c0 = (x1 * (y2 - py) - x2 * (y1 - py)) * inv_area
        c1 = (x2 * (y0 - py) - x0 * (y2 - py)) * inv_area
        lo, hi = -1e300, 1e300
        for ak, ck in ((a0, c0), (a1, c1), (-a0 - a1, 1.0 - c0 - c1)):
            if ak > 0.0:
                lo = max(lo, -ck / ak)
            elif ak < 0.0:
                hi = min(hi, -ck / ak)
            elif ck < 0.0:
                hi = -1e300
        if lo > hi:
            continue
        start = max(cmin, int(math.ceil(max(lo, -1.0) - 0.5)) - 1)
        stop = min(cmax, int(math.floor(min(hi, width + 1.0) - 0.5)) + 1)
        for col in range(start, stop + 1):
            px = col + 0.5
            b0 = ((x1 - px) * (y2 - py) - (x2 - px) * (y1 - py)) * inv_area
            b1 = ((x2 - px) * (y0 - py) - (x0 - px) * (y2 - py)) * inv_area
            b2 = 1.0 - b0 - b1
            if b0 < 0.0 or b1 < 0.0 or b2 < 0.0:
                continue
            iz = np.float32(b0 * iz0 + b1 * iz1 + b2 * iz2)
            current = inv_depth[row, col]
            if iz > current or (over and iz == current and face_id[row, col] > f):
                inv_depth[row, col] = iz
                face_id[row, col] = f


@numba.njit(parallel=True, cache=True, nogil=True)
def rasterize_zbuffer(uv, z, faces, valid, height, width, face_id, inv_depth, bands):
    """Closest face per pixel centre (largest 1/z wins; the first face wins exact ties).

    uv (V, 2) float64 pixel coordinates, z (V,) camera depth, faces (F, 3), valid (F,) bool.
    Fills face_id (H, W) int32 (-1 = background) and inv_depth (H, W) float32 (0 = background),
    both cleared here. Rows are split into bands processed in parallel; each band sees every
    face in order, so the result does not depend on the number of bands.
    """
    bands = max(1, min(height, bands))
    for band in numba.prange(bands):
        row_lo = band * height // bands
        row_hi = (band + 1) * height // bands
        face_id[row_lo:row_hi] = -1
        inv_depth[row_lo:row_hi] = 0.0
        for f in range(faces.shape[0]):
            if valid[f]:
                _raster_face(f, uv, z, faces, row_lo, row_hi, width, face_id, inv_depth, False)


@numba.njit(parallel=True, cache=True, nogil=True)
def rasterize_zbuffer_over(uv, z, faces, valid, count, height, width, face_id, inv_depth, bands):
    """The first `count` faces z-buffered over buffers that already hold the others (numbered
    from `count` on): the same buffers as `rasterize_zbuffer` of all faces (largest 1/z wins,
    the lower face index on exact ties), without redoing the faces that are already in."""
    bands = max(1, min(height, bands))
    for band in numba.prange(bands):
        row_lo = band * height // bands
        row_hi = (band + 1) * height // bands
        for f in range(count):
            if valid[f]:
                _raster_face(f, uv, z, faces, row_lo, row_hi, width, face_id, inv_depth, True)


@numba.njit(parallel=True, cache=True, nogil=True)
def covered_pixels(face_id, bands):
    """Flat indices and face ids of all covered pixels, in row-major order (bands in parallel)."""
    flat = face_id.ravel()
    n = flat.size
    bands = max(1, min(bands, n))
    counts = np.zeros(bands + 1, np.int64)
    for band in numba.prange(bands):
        lo, hi = band * n // bands, (band + 1) * n // bands
        count = 0
        for i in range(lo, hi):
            if flat[i] >= 0:
                count += 1
        counts[band + 1] = count
    for band in range(bands):
        counts[band + 1] += counts[band]
    idx = np.empty(counts[bands], np.int64)
    fid = np.empty(counts[bands], np.int64)
    for band in numba.prange(bands):
        lo, hi = band * n // bands, (band + 1) * n // bands
        k = counts[band]
        for i in range(lo, hi):
            if flat[i] >= 0:
                idx[k] = i
                fid[k] = flat[i]
                k += 1
    return idx, fid


@numba.njit(**_NB)
def _plane_inv_depth(f, uv, z, faces, px, py):
    """1/z of face f's plane at pixel position (px, py): affine in screen space."""
    a, b, c = faces[f, 0], faces[f, 1], faces[f, 2]
    x0, y0, x1, y1, x2, y2 = uv[a, 0], uv[a, 1], uv[b, 0], uv[b, 1], uv[c, 0], uv[c, 1]
    area = (x1 - x0) * (y2 - y0) - (x2 - x0) * (y1 - y0)
    if area == 0.0:
        return 0.0
    b0 = ((x1 - px) * (y2 - py) - (x2 - px) * (y1 - py)) / area
    b1 = ((x2 - px) * (y0 - py) - (x0 - px) * (y2 - py)) / area
    return b0 / z[a] + b1 / z[b] + (1.0 - b0 - b1) / z[c]


@numba.njit(**_NB)
def _accept_crossing(e, edges, edge_faces, uv, z, faces, inv_depth, width, pin, pout, s, tol):
    """Is the edge the visible boundary between pixel pin (its side) and pout, at edge parameter s?"""
    row_in, col_in = pin // width, pin % width
    row_out, col_out = pout // width, pout % width
    edge_iz = (1.0 - s) / z[edges[e, 0]] + s / z[edges[e, 1]]
    # outside: background or behind the edge
    if not inv_depth[row_out, col_out] < edge_iz * (1.0 - tol):
        return False
    # inside: covered, and by this surface or something behind it, not by an occluder
    iz_in = inv_depth[row_in, col_in]
    if iz_in == 0.0:
        return False
    px, py = col_in + 0.5, row_in + 0.5
    plane = _plane_inv_depth(edge_faces[e, 0], uv, z, faces, px, py)
    if edge_faces[e, 1] >= 0:
        plane = max(plane, _plane_inv_depth(edge_faces[e, 1], uv, z, faces, px, py))
    plane = max(plane, edge_iz)
    return iz_in <= plane * (1.0 + tol)


@numba.njit(**_NB)
def _edge_lines(uv, edges, e, height, width):
    """The axis an edge blends along (the one closer to its normal, so that the blended area changes
    at the rate the covered area does; both axes would count it twice) and the pixel-centre lines
    it crosses: (axis, first, last)."""
    a, b = edges[e, 0], edges[e, 1]
    ax, ay, bx, by = uv[a, 0], uv[a, 1], uv[b, 0], uv[b, 1]
    if abs(by - ay) >= abs(bx - ax):  # steep: crosses rows, neighbours left/right
        axis, ha, hb, span = 0, ay, by, height
    else:                              # flat: crosses columns, neighbours up/down
        axis, ha, hb, span = 1, ax, bx, width
    if ha == hb or not math.isfinite(ha) or not math.isfinite(hb):
        return axis, 0, -1
    first = _clamp_int(math.ceil(min(ha, hb) - 0.5), 0, span)
    last = _clamp_int(math.ceil(max(ha, hb) - 0.5) - 1, -1, span - 1)
    return axis, first, last


@numba.njit(parallel=True, cache=True, nogil=True)
def silhouette_crossings(uv, z, faces, edges, edge_faces, inside, inv_depth, tol):
    """Where silhouette edges cross the segments between neighbouring pixel centres.

    edges (E, 2) vertex indices, edge_faces (E, 2) faces on the edge (second -1 at borders),
    inside (E,) +1 or -1: the sign of cross(B - A, P - A) for points P on the faces' side.
    Returns (edge (M,), pixel inside (M,), pixel outside (M,), axis (M,): 0 for a horizontal
    neighbour pair, 1 for vertical) for every crossing that is a visible boundary: the inside
    pixel shows the edge's surface (or something behind it) and the outside pixel is empty or
    behind the edge (relative inverse-depth tolerance tol). Edges run in parallel, each writing
    into its own slots (one per line it crosses); the accepted ones are compacted in edge order.
    """
    height, width = inv_depth.shape
    n_edges = edges.shape[0]
    start = np.zeros(n_edges + 1, np.int64)
    for e in range(n_edges):
        _, first, last = _edge_lines(uv, edges, e, height, width)
        start[e + 1] = start[e] + max(0, last - first + 1)
    slot_in = np.full(start[n_edges], -1, np.int64)
    slot_out = np.empty(start[n_edges], np.int64)
    for e in numba.prange(n_edges):
        axis, first, last = _edge_lines(uv, edges, e, height, width)
        a, b = edges[e, 0], edges[e, 1]
        ax, ay, bx, by = uv[a, 0], uv[a, 1], uv[b, 0], uv[b, 1]
        ha, hb = (ay, by) if axis == 0 else (ax, bx)
        other = width if axis == 0 else height
        for line in range(first, last + 1):
            y = line + 0.5
            s = (y - ha) / (hb - ha)
            x = (ax + s * (bx - ax)) if axis == 0 else (ay + s * (by - ay))
            c = int(math.floor(x - 0.5))
            if c < 0 or c + 1 >= other:
                continue
            if axis == 0:
                p0, p1 = line * width + c, line * width + c + 1
                side = ((bx - ax) * (y - ay) - (by - ay) * (c + 0.5 - ax)) * inside[e]
            else:
                p0, p1 = c * width + line, (c + 1) * width + line
                side = ((bx - ax) * (c + 0.5 - ay) - (by - ay) * (y - ax)) * inside[e]
            pin, pout = (p0, p1) if side > 0 else (p1, p0)
            if _accept_crossing(e, edges, edge_faces, uv, z, faces, inv_depth, width, pin, pout, s, tol):
                slot_in[start[e] + line - first] = pin
                slot_out[start[e] + line - first] = pout
    m = 0
    for k in range(slot_in.shape[0]):
        if slot_in[k] >= 0:
            m += 1
    out_e = np.empty(m, np.int64)
    out_in = np.empty(m, np.int64)
    out_out = np.empty(m, np.int64)
    out_axis = np.empty(m, np.int64)
    k = 0
    for e in range(n_edges):
        axis, _, _ = _edge_lines(uv, edges, e, height, width)
        for j in range(start[e], start[e + 1]):
            if slot_in[j] >= 0:
                out_e[k] = e
                out_in[k] = slot_in[j]
                out_out[k] = slot_out[j]
                out_axis[k] = axis
                k += 1
    return out_e, out_in, out_out, out_axis


@numba.njit(**_NB)
def closest_per_pair(key, nearness):
    """Indices of the crossings to keep, one per pixel pair (`key`): the largest `nearness`, the lowest
    index among equals, in ascending key order; all of them, in their order, when no pair repeats."""
    m = key.shape[0]
    order = np.argsort(key, kind="mergesort")
    repeated = False
    for i in range(1, m):
        if key[order[i]] == key[order[i - 1]]:
            repeated = True
            break
    if not repeated:
        return np.arange(m)
    out = np.empty(m, np.int64)
    n = 0
    i = 0
    while i < m:
        best = order[i]
        j = i + 1
        while j < m and key[order[j]] == key[order[i]]:
            if nearness[order[j]] > nearness[best]:
                best = order[j]
            j += 1
        out[n] = best
        n += 1
        i = j
    return out[:n]


# ---------------------------------------------------------------------------------------------------
# Soft silhouettes (SoftRas-style): per object, A = 1 - prod_f (1 - sigmoid(delta_f d_f^2 / sigma^2)),
# accumulated in log space: log(1 - A) = -sum_f softplus(x_f), x_f = delta_f d_f^2 / sigma^2.
# ---------------------------------------------------------------------------------------------------


@numba.njit(**_NB)
def _softplus(x):
    if x > 30.0:
        return x
    if x < -30.0:
        return math.exp(x)
    return math.log1p(math.exp(x))


@numba.njit(**_NB)
def _sigmoid(x):
    if x >= 0:
        return 1.0 / (1.0 + math.exp(-x))
    e = math.exp(x)
    return e / (1.0 + e)


@numba.njit(**_NB)
def _segment_dist2(px, py, ax, ay, bx, by):
    """Squared distance from P to segment AB and the clamped parameter t of the closest point."""
    ex, ey = bx - ax, by - ay
    len2 = ex * ex + ey * ey
    t = 0.0
    if len2 > 0.0:
        t = ((px - ax) * ex + (py - ay) * ey) / len2
        if t < 0.0:
            t = 0.0
        elif t > 1.0:
            t = 1.0
    dx = px - (ax + t * ex)
    dy = py - (ay + t * ey)
    return dx * dx + dy * dy, t


@numba.njit(**_NB)
def _face_box(f, uv, faces, radius, height, width):
    a, b, c = faces[f, 0], faces[f, 1], faces[f, 2]
    xs_min = min(uv[a, 0], uv[b, 0], uv[c, 0]) - radius
    xs_max = max(uv[a, 0], uv[b, 0], uv[c, 0]) + radius
    ys_min = min(uv[a, 1], uv[b, 1], uv[c, 1]) - radius
    ys_max = max(uv[a, 1], uv[b, 1], uv[c, 1]) + radius
    cmin = _clamp_int(math.ceil(xs_min - 0.5), 0, width)
    cmax = _clamp_int(math.floor(xs_max - 0.5), -1, width - 1)
    rmin = _clamp_int(math.ceil(ys_min - 0.5), 0, height)
    rmax = _clamp_int(math.floor(ys_max - 0.5), -1, height - 1)
    return cmin, cmax, rmin, rmax


@numba.njit(**_NB)
def _face_corners(f, uv, faces):
    """Screen corners of face f and its orientation (+1 / -1; 0 for a degenerate face)."""
    a, b, c = faces[f, 0], faces[f, 1], faces[f, 2]
    x0, y0, x1, y1, x2, y2 = uv[a, 0], uv[a, 1], uv[b, 0], uv[b, 1], uv[c, 0], uv[c, 1]
    area = (x1 - x0) * (y2 - y0) - (x2 - x0) * (y1 - y0)
    orient = 0.0
    if area != 0.0 and math.isfinite(area):
        orient = 1.0 if area > 0 else -1.0
    return x0, y0, x1, y1, x2, y2, orient


@numba.njit(**_NB)
def _soft_x(px, py, x0, y0, x1, y1, x2, y2, orient, inv_s2):
    """x = delta d^2 / sigma^2 for one pixel, plus which edge is closest and its parameter t."""
    d0, t0 = _segment_dist2(px, py, x0, y0, x1, y1)
    d1, t1 = _segment_dist2(px, py, x1, y1, x2, y2)
    d2, t2 = _segment_dist2(px, py, x2, y2, x0, y0)
    edge, d, t = 0, d0, t0
    if d1 < d:
        edge, d, t = 1, d1, t1
    if d2 < d:
        edge, d, t = 2, d2, t2
    e0 = ((x1 - x0) * (py - y0) - (y1 - y0) * (px - x0)) * orient
    e1 = ((x2 - x1) * (py - y1) - (y2 - y1) * (px - x1)) * orient
    e2 = ((x0 - x2) * (py - y2) - (y0 - y2) * (px - x2)) * orient
    inside = e0 >= 0.0 and e1 >= 0.0 and e2 >= 0.0
    sign = 1.0 if inside else -1.0
    return sign * d * inv_s2, edge, t, sign


@numba.njit(parallel=True, cache=True, nogil=True)
def soft_silhouette_forward(uv, faces, valid, face_object, object_faces_start, num_objects,
                            height, width, sigma, radius, log_keep):
    """log(1 - A) per object and pixel into log_keep (N, H, W); objects run in parallel."""
    inv_s2 = 1.0 / (sigma * sigma)
    for obj in numba.prange(num_objects):
        for f in range(object_faces_start[obj], object_faces_start[obj + 1]):
            if not valid[f]:
                continue
            x0, y0, x1, y1, x2, y2, orient = _face_corners(f, uv, faces)
            if orient == 0.0:
                continue
            cmin, cmax, rmin, rmax = _face_box(f, uv, faces, radius, height, width)
            for row in range(rmin, rmax + 1):
                py = row + 0.5
                for col in range(cmin, cmax + 1):
                    x, _, _, _ = _soft_x(col + 0.5, py, x0, y0, x1, y1, x2, y2, orient, inv_s2)
                    if x < -40.0:
                        continue
                    log_keep[obj, row, col] -= _softplus(x)


@numba.njit(parallel=True, cache=True, nogil=True)
def soft_silhouette_backward(uv, faces, valid, face_object, height, width, sigma, radius,
                             grad_log_keep, grad_corner):
    """dL/d(uv) per face corner (F, 3, 2) from dL/d(log(1 - A)) (N, H, W); faces in parallel."""
    inv_s2 = 1.0 / (sigma * sigma)
    for f in numba.prange(faces.shape[0]):
        if not valid[f]:
            continue
        obj = face_object[f]
        x0, y0, x1, y1, x2, y2, orient = _face_corners(f, uv, faces)
        if orient == 0.0:
            continue
        cmin, cmax, rmin, rmax = _face_box(f, uv, faces, radius, height, width)
        g00 = g01 = g10 = g11 = g20 = g21 = 0.0
        for row in range(rmin, rmax + 1):
            py = row + 0.5
            for col in range(cmin, cmax + 1):
                px = col + 0.5
                g = grad_log_keep[obj, row, col]
                if g == 0.0:
                    continue
                x, edge, t, sign = _soft_x(px, py, x0, y0, x1, y1, x2, y2, orient, inv_s2)
                if x < -40.0:
                    continue
                # d(-softplus(x))/dx = -sigmoid(x); dx/d(d^2) = sign / sigma^2
                gd2 = -g * _sigmoid(x) * sign * inv_s2
                if edge == 0:
                    ax, ay, bx, by = x0, y0, x1, y1
                elif edge == 1:
                    ax, ay, bx, by = x1, y1, x2, y2
                else:
                    ax, ay, bx, by = x2, y2, x0, y0
                rx = px - (ax + t * (bx - ax))
                ry = py - (ay + t * (by - ay))
                # d(d^2)/dA = -2 r (1 - t), d(d^2)/dB = -2 r t
                ga_x, ga_y = -2.0 * rx * (1.0 - t) * gd2, -2.0 * ry * (1.0 - t) * gd2
                gb_x, gb_y = -2.0 * rx * t * gd2, -2.0 * ry * t * gd2
                if edge == 0:
                    g00 += ga_x
                    g01 += ga_y
                    g10 += gb_x
                    g11 += gb_y
                elif edge == 1:
                    g10 += ga_x
                    g11 += ga_y
                    g20 += gb_x
                    g21 += gb_y
                else:
                    g20 += ga_x
                    g21 += ga_y
                    g00 += gb_x
                    g01 += gb_y
        grad_corner[f, 0, 0] = g00
        grad_corner[f, 0, 1] = g01
        grad_corner[f, 1, 0] = g10
        grad_corner[f, 1, 1] = g11
        grad_corner[f, 2, 0] = g20
        grad_corner[f, 2, 1] = g21


@numba.njit(**_NB)
def _listed_edge(f, k, valid, adjacency, facing):
    """Edge k of valid face f is a border, or a fold listed by its lower-numbered face."""
    if not valid[f]:
        return False
    g = adjacency[f, k]
    return g < 0 or not valid[g] or (facing[g] != facing[f] and g > f)


@numba.njit(**_NB)
def silhouette_edge_list(uv, faces, valid, adjacency):
    """Borders and folds of the valid faces, each once: see antialias.silhouette_edges."""
    nf = faces.shape[0]
    facing = np.zeros(nf, np.float64)
    for f in range(nf):
        a, b, c = faces[f, 0], faces[f, 1], faces[f, 2]
        area = (uv[b, 0] - uv[a, 0]) * (uv[c, 1] - uv[a, 1]) - (uv[c, 0] - uv[a, 0]) * (uv[b, 1] - uv[a, 1])
        facing[f] = 1.0 if area > 0 else (-1.0 if area < 0 else 0.0)
    count = 0
    for f in range(nf):
        for k in range(3):
            if _listed_edge(f, k, valid, adjacency, facing):
                count += 1
    verts = np.empty((count, 2), np.int64)
    owners = np.empty((count, 2), np.int64)
    inside = np.empty(count, np.float64)
    m = 0
    for f in range(nf):
        for k in range(3):
            if not _listed_edge(f, k, valid, adjacency, facing):
                continue
            g = adjacency[f, k]
            border = g < 0 or not valid[g]
            a, b, c = faces[f, k], faces[f, (k + 1) % 3], faces[f, (k + 2) % 3]
            cross = (uv[b, 0] - uv[a, 0]) * (uv[c, 1] - uv[a, 1]) - (uv[b, 1] - uv[a, 1]) * (uv[c, 0] - uv[a, 0])
            verts[m, 0] = a
            verts[m, 1] = b
            owners[m, 0] = f
            owners[m, 1] = -1 if border else g
            inside[m] = 1.0 if cross > 0 else (-1.0 if cross < 0 else 0.0)
            m += 1
    return verts, owners, inside
