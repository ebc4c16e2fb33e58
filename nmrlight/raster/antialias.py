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
class CrossingGeometry:
    """What fixes a crossing's blend weight besides its edge's projected end points: the edge's
    vertices (a, b: packed indices), whether the pixel line is a row (`rows`: the crossing lies between
    left/right neighbours) or a column, that line and the start and direction of the pixel step it
    crosses, and the side
    (`beyond`: the crossing lies past the midpoint, so the outside pixel is the one blended).
    `blend_weights(uv[a], uv[b], geometry)` is the weight, differentiable in the end points."""

    a: torch.Tensor          # (M,) vertex index
    b: torch.Tensor          # (M,) vertex index
    rows: torch.Tensor       # (M,) bool
    line: torch.Tensor       # (M,) pixel-centre coordinate of the line
    start: torch.Tensor      # (M,) pixel-centre coordinate of the inside pixel along the line
    step: torch.Tensor       # (M,) +1 or -1 toward the outside pixel
    beyond: torch.Tensor     # (M,) bool, fixed at the render (the weight's kink is not crossed)

    def subset(self, keep: torch.Tensor) -> CrossingGeometry:
        return CrossingGeometry(self.a[keep], self.b[keep], self.rows[keep], self.line[keep], self.start[keep],
                                self.step[keep], self.beyond[keep])


def crossing_fraction(uv_a: torch.Tensor, uv_b: torch.Tensor, geometry: CrossingGeometry) -> torch.Tensor:
    """t of each crossing: where the edge a-b crosses its pixel line, from the inside pixel's centre
    (0) toward the outside one's (1). uv_a, uv_b: (..., M, 2) end points."""
    rows = geometry.rows
    ha = torch.where(rows, uv_a[..., 1], uv_a[..., 0])
    hb = torch.where(rows, uv_b[..., 1], uv_b[..., 0])
    xa = torch.where(rows, uv_a[..., 0], uv_a[..., 1])
    xb = torch.where(rows, uv_b[..., 0], uv_b[..., 1])
    x = xa + (geometry.line.to(uv_a.dtype) - ha) / (hb - ha) * (xb - xa)
    return (x - geometry.start.to(uv_a.dtype)) * geometry.step.to(uv_a.dtype)


def blend_weights(uv_a: torch.Tensor, uv_b: torch.Tensor, geometry: CrossingGeometry) -> torch.Tensor:
    """|t - 1/2|: the share of its neighbour's value a boundary pixel takes (see the module docstring)."""
    return (crossing_fraction(uv_a, uv_b, geometry) - 0.5).abs()


@dataclass
class EdgeBlend:
    """Per boundary pair: the pixel to modify, the pixel it borrows from, and the weight |t - 1/2|."""

    target: torch.Tensor   # (M,) flat pixel index
    source: torch.Tensor   # (M,) flat pixel index
    weight: torch.Tensor   # (M,) differentiable, in [0, 1/2]
    geometry: CrossingGeometry | None = None   # to recompute the weights at other vertex positions

    def apply(self, values: torch.Tensor) -> torch.Tensor:
        """Blend a stack of per-pixel values (C, H*W): value[target] += w (value[source] - value[target]).

        Works in place (no full-frame copy): pass a tensor this render created itself. The backward
        pass scatters into the incoming gradient instead of building full-frame zero tensors for
        each gather (`_Blend`).
        """
        if len(self.target) == 0:
            return values
        return _Blend.apply(values, self.weight, self.source, self.target)


class _Blend(torch.autograd.Function):
    """out = values; out[:, target] += w (values[:, source] - values[:, target]) (in place).

    Backward: d/d values = grad + scatter_source(w g_t) - scatter_target(w g_t), with g_t = grad[:, target];
    d/d w = sum over channels of g_t (values[:, source] - values[:, target])."""

    @staticmethod
    def forward(ctx, values, weight, source, target):
        difference = values[:, source] - values[:, target]
        ctx.save_for_backward(weight, source, target, difference)
        ctx.mark_dirty(values)
        return values.index_add_(1, target, weight * difference)

    @staticmethod
    def backward(ctx, grad):
        weight, source, target, difference = ctx.saved_tensors
        at_target = grad[:, target]
        grad_values = grad_weight = None
        if ctx.needs_input_grad[0]:
            moved = weight * at_target
            grad_values = grad.index_add(1, source, moved).index_add_(1, target, -moved)
        if ctx.needs_input_grad[1]:
            grad_weight = (at_target * difference).sum(0)
        return grad_values, grad_weight, None, None


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
    a = edges.vertices[cross.edge, 0]
    b = edges.vertices[cross.edge, 1]
    z = mesh.z.detach()
    if key.device.type == "cpu":   # one compiled pass instead of a sort and three scatters
        nearness = 1 / z[a] + 1 / z[b]
        keep = torch.from_numpy(kernels.closest_per_pair(key.numpy(), nearness.numpy()))
        if len(keep) == len(key):
            return cross
        return Crossings(cross.edge[keep], cross.inside[keep], cross.outside[keep], cross.axis[keep])
    unique, slot = torch.unique(key, return_inverse=True)
    if len(unique) == len(key):
        return cross
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
    a = edges.vertices[cross.edge, 0]
    b = edges.vertices[cross.edge, 1]
    horizontal = cross.axis == 0
    row = torch.div(cross.inside, width, rounding_mode="floor")
    col = cross.inside % width
    geometry = CrossingGeometry(
        a, b,
        rows=horizontal,
        line=torch.where(horizontal, row, col).to(dtype) + 0.5,
        start=torch.where(horizontal, col, row).to(dtype) + 0.5,
        step=torch.where(horizontal, cross.outside - cross.inside,
                         torch.div(cross.outside - cross.inside, width, rounding_mode="floor")).to(dtype),
        beyond=torch.zeros(0, dtype=torch.bool))
    t = crossing_fraction(mesh.uv[a], mesh.uv[b], geometry)
    beyond = t.detach() > 0.5
    geometry.beyond = beyond
    target = torch.where(beyond, cross.outside, cross.inside)
    source = torch.where(beyond, cross.inside, cross.outside)
    return EdgeBlend(target, source, (t - 0.5).abs(), geometry)
