"""Plain PyTorch twins of the compiled kernels: the CUDA path and the reference for tests.

Work is enumerated as (face, pixel) fragments inside each face's bounding box and processed in
chunks of at most `chunk` fragments, so memory stays bounded (never faces x pixels).
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
import torch.nn.functional as F

from nmrlight.raster.geometry import screen_barycentrics, triangle_areas

DEFAULT_CHUNK = 1 << 22


def _face_boxes(tri: torch.Tensor, radius: float, height: int, width: int):
    lo = tri.amin(dim=1) - radius - 0.5
    hi = tri.amax(dim=1) + radius - 0.5
    cmin = torch.ceil(lo[:, 0]).clamp(0, width).long()
    cmax = torch.floor(hi[:, 0]).clamp(-1, width - 1).long()
    rmin = torch.ceil(lo[:, 1]).clamp(0, height).long()
    rmax = torch.floor(hi[:, 1]).clamp(-1, height - 1).long()
    return cmin, cmax, rmin, rmax


def fragments(tri: torch.Tensor, valid: torch.Tensor, height: int, width: int, radius: float = 0.0,
              chunk: int = DEFAULT_CHUNK) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    """Yield (face, row, col) index triples of every pixel centre in each valid face's box."""
    tri = tri.detach()
    finite = torch.isfinite(tri).all(dim=2).all(dim=1)
    cmin, cmax, rmin, rmax = _face_boxes(torch.nan_to_num(tri), radius, height, width)
    nx = (cmax - cmin + 1).clamp(min=0)
    ny = (rmax - rmin + 1).clamp(min=0)
    counts = nx * ny * (valid & finite).long()
    ends = torch.cumsum(counts, 0)
    total = int(ends[-1]) if len(ends) else 0
    start_face = 0
    num_faces = len(counts)
    while start_face < num_faces and total > 0:
        base = int(ends[start_face - 1]) if start_face > 0 else 0
        stop_face = int(torch.searchsorted(ends, base + chunk, right=True))
        stop_face = max(stop_face, start_face + 1)
        faces_here = torch.arange(start_face, stop_face, device=tri.device)
        c = counts[start_face:stop_face]
        n = int(c.sum())
        if n:
            f = torch.repeat_interleave(faces_here, c)
            offset = torch.cumsum(c, 0) - c
            local = torch.arange(n, device=tri.device) - torch.repeat_interleave(offset, c)
            col = cmin[f] + local % nx[f]
            row = rmin[f] + torch.div(local, nx[f], rounding_mode="floor")
            yield f, row, col
        start_face = stop_face


def rasterize_zbuffer(uv: torch.Tensor, z: torch.Tensor, faces: torch.Tensor, valid: torch.Tensor,
                      height: int, width: int, chunk: int = DEFAULT_CHUNK) -> tuple[torch.Tensor, torch.Tensor]:
    """Same contract as kernels.rasterize_zbuffer: (face_id (H, W) long, inv_depth (H, W) float32)."""
    uv = uv.detach().double()
    iz = 1.0 / z.detach().double()
    tri = uv[faces]
    tiz = iz[faces]
    area = triangle_areas(tri)
    valid = valid & (area != 0) & torch.isfinite(area)
    inv_depth = torch.zeros(height * width, dtype=torch.float32, device=uv.device)
    face_id = torch.full((height * width,), torch.iinfo(torch.long).max, dtype=torch.long, device=uv.device)

    def covered():
        for f, row, col in fragments(tri, valid, height, width, chunk=chunk):
            b0, b1, b2 = screen_barycentrics(tri[f], col + 0.5, row + 0.5).unbind(-1)
            inside = (b0 >= 0) & (b1 >= 0) & (b2 >= 0)
            f, pix = f[inside], (row * width + col)[inside]
            depth = b0[inside] * tiz[f, 0] + b1[inside] * tiz[f, 1] + b2[inside] * tiz[f, 2]
            yield f, pix, depth.float()  # the depth buffer is float32, as in the compiled kernel

    for _, pix, depth in covered():
        inv_depth.scatter_reduce_(0, pix, depth, reduce="amax", include_self=True)
    for f, pix, depth in covered():
        best = depth == inv_depth[pix]
        face_id.scatter_reduce_(0, pix[best], f[best], reduce="amin", include_self=True)
    face_id[inv_depth == 0] = -1
    return face_id.view(height, width), inv_depth.view(height, width)


def _plane_inv_depth(uv, z, corners, px, py):
    """1/z of each face's plane at (px, py), 0 for degenerate faces (as in the kernel)."""
    tri = uv[corners]
    area = triangle_areas(tri)
    value = (screen_barycentrics(tri, px, py) / z[corners]).sum(-1)
    return torch.where(area == 0, torch.zeros_like(value), value)


def silhouette_crossings(uv, z, faces, edges, edge_faces, inside, inv_depth, tol):
    """Same contract as kernels.silhouette_crossings (same set, possibly another order)."""
    uv, z = uv.detach().double(), z.detach().double()
    height, width = inv_depth.shape
    flat_depth = inv_depth.reshape(-1)
    results = []
    for axis in range(2):
        along, across = (1, 0) if axis == 0 else (0, 1)
        span, other = (height, width) if axis == 0 else (width, height)
        ha, hb = uv[edges[:, 0], along], uv[edges[:, 1], along]
        first = torch.ceil(torch.minimum(ha, hb) - 0.5).clamp(0, span).long()
        last = (torch.ceil(torch.maximum(ha, hb) - 0.5) - 1).clamp(-1, span - 1).long()
        steep = (uv[edges[:, 1], 1] - uv[edges[:, 0], 1]).abs() >= (uv[edges[:, 1], 0] - uv[edges[:, 0], 0]).abs()
        use = steep if axis == 0 else ~steep
        counts = (last - first + 1).clamp_min(0) * (use & (ha != hb)).long()
        e = torch.repeat_interleave(torch.arange(len(edges), device=uv.device), counts)
        offset = torch.cumsum(counts, 0) - counts
        line = first[e] + torch.arange(len(e), device=uv.device) - torch.repeat_interleave(offset, counts)
        y = line.double() + 0.5
        s = (y - ha[e]) / (hb[e] - ha[e])
        a, b = uv[edges[e, 0]], uv[edges[e, 1]]
        x = a[:, across] + s * (b[:, across] - a[:, across])
        c = torch.floor(x - 0.5).long()
        ok = (c >= 0) & (c + 1 < other)
        c0 = c.clamp(0, other - 2)
        if axis == 0:
            p0, p1 = line * width + c0, line * width + c0 + 1
            cx, cy = c0.double() + 0.5, y
        else:
            p0, p1 = c0 * width + line, (c0 + 1) * width + line
            cx, cy = y, c0.double() + 0.5
        side = ((b[:, 0] - a[:, 0]) * (cy - a[:, 1]) - (b[:, 1] - a[:, 1]) * (cx - a[:, 0])) * inside[e]
        pin = torch.where(side > 0, p0, p1)
        pout = torch.where(side > 0, p1, p0)
        edge_iz = (1 - s) / z[edges[e, 0]] + s / z[edges[e, 1]]
        ok &= flat_depth[pout] < edge_iz * (1 - tol)
        iz_in = flat_depth[pin]
        ok &= iz_in != 0
        px = (pin % width).double() + 0.5
        py = torch.div(pin, width, rounding_mode="floor").double() + 0.5
        plane = _plane_inv_depth(uv, z, faces[edge_faces[e, 0]], px, py)
        second = edge_faces[e, 1]
        plane2 = _plane_inv_depth(uv, z, faces[second.clamp_min(0)], px, py)
        plane = torch.where(second >= 0, torch.maximum(plane, plane2), plane)
        plane = torch.maximum(plane, edge_iz)
        ok &= iz_in <= plane * (1 + tol)
        results.append((e[ok], pin[ok], pout[ok], torch.full_like(e[ok], axis)))
    return tuple(torch.cat([r[i] for r in results]) for i in range(4))


def soft_log_keep(uv: torch.Tensor, faces: torch.Tensor, valid: torch.Tensor, face_object: torch.Tensor,
                  num_objects: int, height: int, width: int, sigma: float, radius: float,
                  chunk: int = DEFAULT_CHUNK) -> torch.Tensor:
    """Differentiable log(1 - A) (N, H, W) of the soft silhouettes, by autograd over fragments."""
    tri = uv[faces]
    area = triangle_areas(tri)
    valid = valid & (area.detach() != 0) & torch.isfinite(area.detach())
    orient = torch.sign(area)
    out = torch.zeros(num_objects * height * width, dtype=uv.dtype, device=uv.device)
    for f, row, col in fragments(tri, valid, height, width, radius=radius, chunk=chunk):
        p = torch.stack([col + 0.5, row + 0.5], dim=-1).to(uv.dtype)
        t = tri[f]
        d2 = None
        inside = torch.ones(len(f), dtype=torch.bool, device=uv.device)
        for k in range(3):
            a, b = t[:, k], t[:, (k + 1) % 3]
            e = b - a
            len2 = (e * e).sum(-1)
            s = (((p - a) * e).sum(-1) / len2.clamp_min(1e-30)).clamp(0, 1)
            r = p - (a + s[:, None] * e)
            dk = (r * r).sum(-1)
            d2 = dk if d2 is None else torch.minimum(d2, dk)
            cross = (e[:, 0] * (p[:, 1] - a[:, 1]) - e[:, 1] * (p[:, 0] - a[:, 0])) * orient[f]
            inside &= cross.detach() >= 0
        sign = inside.to(uv.dtype) * 2 - 1
        x = sign * d2 / (sigma * sigma)
        keep = x.detach() >= -40.0
        target = face_object[f] * (height * width) + row * width + col
        out = out.index_add(0, target[keep], -F.softplus(x[keep]))
    return out.view(num_objects, height, width)
