"""Analytic edge anti-aliasing with gradients, in the spirit of nvdiffrast's `antialias`.

A hard rasteriser has no gradient with respect to where an edge lies: moving it a little changes no
pixel. For every pair of neighbouring pixel centres whose faces differ, we look for the silhouette
edge of the front face that crosses the segment between the two centres; at the crossing fraction t
(measured from the centre inside that face) the face covers t of the way, so the pixel on the wrong
side of the midpoint takes |t - 1/2| of its neighbour's value. t is a differentiable function of the
edge's projected vertices, so image losses get gradients that move silhouette and occlusion edges.
Exact in the limit of small pixels; costs work only at boundary pixels.

Silhouette edges are mesh borders (open soups have many), non-manifold edges, and edges whose two
faces point to opposite sides in screen space (the fold of a closed surface).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from nmrlight.raster.rasterize import ScreenMesh, Visibility


@dataclass
class EdgeBlend:
    """Per boundary pair: the pixel to modify, the pixel it borrows from, and the weight |t - 1/2|."""

    target: torch.Tensor   # (M,) flat pixel index
    source: torch.Tensor   # (M,) flat pixel index
    weight: torch.Tensor   # (M,) differentiable, in [0, 1/2]

    def apply(self, values: torch.Tensor) -> torch.Tensor:
        """Blend a stack of per-pixel values (C, H*W): value[target] += w (value[source] - value[target])."""
        if len(self.target) == 0:
            return values
        delta = self.weight * (values[:, self.source] - values[:, self.target])
        return values.index_add(1, self.target, delta)


def signed_areas(mesh: ScreenMesh) -> torch.Tensor:
    tri = mesh.uv.detach()[mesh.faces]
    return ((tri[:, 1, 0] - tri[:, 0, 0]) * (tri[:, 2, 1] - tri[:, 0, 1])
            - (tri[:, 2, 0] - tri[:, 0, 0]) * (tri[:, 1, 1] - tri[:, 0, 1]))


def silhouette_edges(mesh: ScreenMesh, adjacency: torch.Tensor) -> torch.Tensor:
    """(F, 3) bool: can edge k of face f (v_k -> v_k+1) bound the visible surface in this view?"""
    facing = torch.sign(signed_areas(mesh))
    neighbour = adjacency.clamp_min(0)
    border = (adjacency < 0) | ~mesh.valid[neighbour]
    fold = facing[neighbour] != facing[:, None]
    return border | fold


def _crossing(mesh: ScreenMesh, face: torch.Tensor, start: torch.Tensor, end: torch.Tensor,
              sil: torch.Tensor, other_inv_depth: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Where the segment start->end leaves `face` through a silhouette edge, as fraction t.

    Returns (t, ok): ok where the first edge crossed is a silhouette edge and whatever lies at `end`
    is behind the face's plane (or background, other_inv_depth == 0).
    """
    corners = mesh.faces[face]
    tri = mesh.uv[corners]                                   # (M, 3, 2), differentiable
    area = ((tri[:, 1, 0] - tri[:, 0, 0]) * (tri[:, 2, 1] - tri[:, 0, 1])
            - (tri[:, 2, 0] - tri[:, 0, 0]) * (tri[:, 1, 1] - tri[:, 0, 1]))
    orient = torch.sign(area.detach())
    best_t = torch.full_like(start[:, 0], 2.0)
    best_edge = torch.full(face.shape, -1, dtype=torch.long, device=face.device)
    ts = []
    for k in range(3):
        a, b = tri[:, k], tri[:, (k + 1) % 3]
        e = b - a
        es = (e[:, 0] * (start[:, 1] - a[:, 1]) - e[:, 1] * (start[:, 0] - a[:, 0])) * orient
        ee = (e[:, 0] * (end[:, 1] - a[:, 1]) - e[:, 1] * (end[:, 0] - a[:, 0])) * orient
        crosses = (es.detach() >= 0) & (ee.detach() < 0)
        t = es / torch.where(crosses, es - ee, torch.ones_like(es))
        ts.append(t)
        better = crosses & (t.detach() < best_t)
        best_t = torch.where(better, t.detach(), best_t)
        best_edge = torch.where(better, torch.full_like(best_edge, k), best_edge)
    found = best_edge >= 0
    edge = best_edge.clamp_min(0)
    t = torch.stack(ts, dim=1).gather(1, edge[:, None]).squeeze(1)
    is_sil = sil[face, edge] & found
    # depth test at `end`: inverse depth of the face's plane there (affine in screen space)
    b = _affine_barycentrics(tri.detach(), end)
    plane_inv_depth = (b / mesh.z.detach()[corners]).sum(-1)
    behind = (other_inv_depth == 0) | (other_inv_depth < plane_inv_depth)
    return t, is_sil & behind


def _affine_barycentrics(tri: torch.Tensor, p: torch.Tensor) -> torch.Tensor:
    x0, y0 = tri[:, 0, 0], tri[:, 0, 1]
    x1, y1 = tri[:, 1, 0], tri[:, 1, 1]
    x2, y2 = tri[:, 2, 0], tri[:, 2, 1]
    area = (x1 - x0) * (y2 - y0) - (x2 - x0) * (y1 - y0)
    b0 = ((x1 - p[:, 0]) * (y2 - p[:, 1]) - (x2 - p[:, 0]) * (y1 - p[:, 1])) / area
    b1 = ((x2 - p[:, 0]) * (y0 - p[:, 1]) - (x0 - p[:, 0]) * (y2 - p[:, 1])) / area
    return torch.stack([b0, b1, 1 - b0 - b1], dim=-1)


def edge_blend(mesh: ScreenMesh, vis: Visibility, sil: torch.Tensor) -> EdgeBlend:
    """Differentiable blend weights of the boundary pairs found by the visibility pass.

    vis must come from `rasterize(mesh, pair_faces=sil.any(1))`; sil from `silhouette_edges`.
    """
    device, dtype = mesh.uv.device, mesh.uv.dtype
    if len(vis.pairs) == 0:
        none = torch.zeros(0, dtype=torch.long, device=device)
        return EdgeBlend(none, none, torch.zeros(0, dtype=dtype, device=device))
    flat = vis.face_id.view(-1)
    p, q = vis.pairs[:, 0], vis.pairs[:, 1]
    fp, fq = flat[p].long(), flat[q].long()
    dp, dq = vis.pair_inv_depth[:, 0], vis.pair_inv_depth[:, 1]
    width = mesh.width

    def centre(i):
        return torch.stack([(i % width).to(dtype) + 0.5,
                            torch.div(i, width, rounding_mode="floor").to(dtype) + 0.5], dim=-1)

    cp, cq = centre(p), centre(q)
    t_p, ok_p = _crossing(mesh, fp.clamp_min(0), cp, cq, sil, dq)
    ok_p &= fp >= 0
    t_q, ok_q = _crossing(mesh, fq.clamp_min(0), cq, cp, sil, dp)
    ok_q &= fq >= 0
    # both sides claim the pair only in odd configurations: keep the closer face
    use_q = ok_q & (~ok_p | (dq > dp))
    use_p = ok_p & ~use_q
    inside = torch.cat([p[use_p], q[use_q]])
    outside = torch.cat([q[use_p], p[use_q]])
    t = torch.cat([t_p[use_p], t_q[use_q]])
    beyond = t.detach() > 0.5
    target = torch.where(beyond, outside, inside)
    source = torch.where(beyond, inside, outside)
    return EdgeBlend(target, source, (t - 0.5).abs())
