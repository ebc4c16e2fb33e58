"""Analytic edge anti-aliasing with gradients, in the spirit of nvdiffrast's `antialias`.

A hard rasteriser has no gradient with respect to where an edge lies: moving it a little changes no
pixel. For every silhouette edge we find where it crosses the segments between neighbouring pixel
centres (a horizontal or vertical step), keep the crossings where it is the visible boundary (the
pixel on its side shows its surface, the other is empty or behind it), and blend: at crossing
fraction t, measured from the centre on the surface side, the surface covers t of the way, so the
pixel on the wrong side of the midpoint takes |t - 1/2| of its neighbour's value. Each edge uses
the axis closer to its normal (rows for steep edges, columns for flat ones), so the blended area
changes at exactly the rate the covered area does. t is a
differentiable function of the edge's projected end points, so image and silhouette losses get
gradients that move silhouette and occlusion edges. Exact in the limit of small pixels; costs work
only along silhouettes.

Walking the edges (rather than the pixel pairs, as nvdiffrast does) finds the crossing even when
the pixel on the surface side is covered by a neighbouring triangle, which is the common case for
meshes of small triangles rendered at a reduced scale.

Silhouette edges are mesh borders (open soups have many), non-manifold edges, and edges whose two
faces point to opposite sides in screen space (the fold of a closed surface).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from nmrlight.raster import kernels
from nmrlight.raster.geometry import triangle_areas
from nmrlight.raster.rasterize import Crossings, EdgeList, ScreenMesh, Visibility, pick_backend


@dataclass
class EdgeBlend:
    """Per boundary pair: the pixel to modify, the pixel it borrows from, and the weight |t - 1/2|."""

    target: torch.Tensor   # (M,) flat pixel index
    source: torch.Tensor   # (M,) flat pixel index
    weight: torch.Tensor   # (M,) differentiable, in [0, 1/2]

    def apply(self, values: torch.Tensor) -> torch.Tensor:
        """Blend a stack of per-pixel values (C, H*W): value[target] += w (value[source] - value[target]).

        Works in place (no full-frame copy): pass a tensor this render created itself.
        """
        if len(self.target) == 0:
            return values
        delta = self.weight * (values[:, self.source] - values[:, self.target])
        return values.index_add_(1, self.target, delta)


def silhouette_edges(mesh: ScreenMesh, adjacency: torch.Tensor, backend: str = "auto") -> EdgeList:
    """The edges that can bound the visible surface in this view, each once."""
    if pick_backend(mesh.uv.device, backend) == "numba":
        found = kernels.silhouette_edge_list(mesh.uv.detach().double().numpy(), mesh.faces.numpy(),
                                             mesh.valid.numpy(), adjacency.numpy())
        return EdgeList(*(torch.from_numpy(x) for x in found))
    faces = mesh.faces
    facing = torch.sign(triangle_areas(mesh.uv.detach()[faces]))
    neighbour = adjacency.clamp_min(0)
    has_neighbour = (adjacency >= 0) & mesh.valid[neighbour]
    fold = has_neighbour & (facing[neighbour] != facing[:, None])
    # a fold is listed by its lower-numbered face, a border by its only face
    keep = mesh.valid[:, None] & ((~has_neighbour) | (fold & (adjacency > torch.arange(len(faces),
                                                                                       device=faces.device)[:, None])))
    face, k = torch.nonzero(keep, as_tuple=True)
    a = faces[face, k]
    b = faces[face, (k + 1) % 3]
    c = faces[face, (k + 2) % 3]
    uv = mesh.uv.detach().double()
    ab, ac = uv[b] - uv[a], uv[c] - uv[a]
    inside = torch.sign(ab[:, 0] * ac[:, 1] - ab[:, 1] * ac[:, 0])
    other = torch.where(has_neighbour[face, k], adjacency[face, k], torch.full_like(face, -1))
    return EdgeList(torch.stack([a, b], 1), torch.stack([face, other], 1), inside)


def _closest_per_pair(mesh: ScreenMesh, cross: Crossings, edges: EdgeList) -> Crossings:
    """Keep one crossing per pixel pair: the nearest edge. Duplicated border vertices and layered
    shells (a panel over the body, within the depth tolerance) would otherwise count twice."""
    if len(cross.edge) < 2:
        return cross
    key = torch.minimum(cross.inside, cross.outside) * 2 + cross.axis
    unique, slot = torch.unique(key, return_inverse=True)
    if len(unique) == len(key):
        return cross
    a = edges.vertices[cross.edge, 0]
    b = edges.vertices[cross.edge, 1]
    z = mesh.z.detach()
    nearness = 1 / z[a] + 1 / z[b]   # good enough to rank edges crossing the same pair
    best = torch.full((len(unique),), -float("inf"), dtype=nearness.dtype, device=key.device)
    best = best.scatter_reduce(0, slot, nearness, reduce="amax")
    candidates = torch.nonzero(nearness == best[slot]).squeeze(1)
    first = torch.full((len(unique),), len(key), dtype=torch.long, device=key.device)
    first = first.scatter_reduce(0, slot[candidates], candidates, reduce="amin")
    return Crossings(cross.edge[first], cross.inside[first], cross.outside[first], cross.axis[first])


def edge_blend(mesh: ScreenMesh, vis: Visibility, edges: EdgeList) -> EdgeBlend:
    """Differentiable blend weights of the visible crossings found by `rasterize(mesh, edges)`."""
    cross = _closest_per_pair(mesh, vis.crossings, edges)
    dtype = mesh.uv.dtype
    width = mesh.width
    a = mesh.uv[edges.vertices[cross.edge, 0]]
    b = mesh.uv[edges.vertices[cross.edge, 1]]
    horizontal = cross.axis == 0
    along = torch.where(horizontal, 1, 0)[:, None]     # coordinate fixed by the line (y for rows)
    across = 1 - along                                 # coordinate where the edge crosses it
    row = torch.div(cross.inside, width, rounding_mode="floor")
    col = cross.inside % width
    line = torch.where(horizontal, row, col).to(dtype) + 0.5
    start = torch.where(horizontal, col, row).to(dtype) + 0.5
    step = torch.where(horizontal, cross.outside - cross.inside, torch.div(cross.outside - cross.inside, width,
                                                                          rounding_mode="floor")).to(dtype)
    ha, hb = a.gather(1, along).squeeze(1), b.gather(1, along).squeeze(1)
    xa, xb = a.gather(1, across).squeeze(1), b.gather(1, across).squeeze(1)
    x = xa + (line - ha) / (hb - ha) * (xb - xa)
    t = (x - start) * step
    beyond = t.detach() > 0.5
    target = torch.where(beyond, cross.outside, cross.inside)
    source = torch.where(beyond, cross.inside, cross.outside)
    return EdgeBlend(target, source, (t - 0.5).abs())
