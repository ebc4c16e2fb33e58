"""Visibility (which face covers each pixel centre) and differentiable barycentric interpolation.

Like nvdiffrast, the renderer splits rasterisation in two: a non-differentiable visibility pass
(compiled z-buffer on the CPU, chunked PyTorch elsewhere) and a differentiable pass that recomputes
perspective-correct barycentrics of the covered pixels from the projected vertices, so gradients
reach the vertices, the camera and everything interpolated.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

import numba
import numpy as np
import torch

from nmrlight.raster import kernels, reference
from nmrlight.raster.geometry import screen_barycentrics


@dataclass
class ScreenMesh:
    """Projected geometry: pixel coordinates uv (V, 2), camera depth z (V,), faces, valid faces."""

    uv: torch.Tensor
    z: torch.Tensor
    faces: torch.Tensor
    valid: torch.Tensor
    height: int
    width: int


@dataclass
class EdgeList:
    """Candidate silhouette edges: vertex pairs, the faces on them, and which side those faces lie."""

    vertices: torch.Tensor  # (E, 2) long
    faces: torch.Tensor     # (E, 2) long, second -1 at borders
    inside: torch.Tensor    # (E,) float64, sign of cross(B - A, P - A) on the faces' side


@dataclass
class Crossings:
    """Visible silhouette edges crossing the segments between neighbouring pixel centres."""

    edge: torch.Tensor      # (M,) index into the EdgeList
    inside: torch.Tensor    # (M,) flat index of the pixel on the surface side
    outside: torch.Tensor   # (M,) flat index of its neighbour across the edge
    axis: torch.Tensor      # (M,) 0: left/right neighbours, 1: up/down neighbours


@dataclass
class Visibility:
    """Result of the visibility pass. Integer tensors, no gradients."""

    face_id: torch.Tensor         # (H, W) int32, -1 for background
    pixels: torch.Tensor          # (N,) flat indices of covered pixels, row-major
    pixel_face: torch.Tensor      # (N,) face covering each of them
    crossings: Crossings | None   # when asked for with an EdgeList


CROSSING_TOLERANCE = 0.01  # relative inverse depth: how far in front of an edge an occluder must be


class _Workspace(threading.local):
    """Per-thread depth buffer reused between calls (a fresh full-frame buffer costs page faults)."""

    inv_depth: np.ndarray | None = None

    def depth_buffer(self, height: int, width: int) -> np.ndarray:
        if self.inv_depth is None or self.inv_depth.shape != (height, width):
            self.inv_depth = np.zeros((height, width), dtype=np.float32)
        return self.inv_depth


_WORKSPACE = _Workspace()


def pick_backend(device: torch.device, backend: str = "auto") -> str:
    if backend not in ("auto", "numba", "torch"):
        raise ValueError(f"backend must be 'auto', 'numba' or 'torch', got {backend!r}")
    if backend == "auto":
        return "numba" if device.type == "cpu" else "torch"
    if backend == "numba" and device.type != "cpu":
        raise ValueError("the numba backend runs on the CPU only")
    return backend


@dataclass
class DepthBase:
    """A z-buffer already holding the faces numbered from `count` on (e.g. objects that do not move):
    `rasterize` then draws only the first `count` faces over copies of it, with the same result."""

    face_id: np.ndarray     # (H, W) int32, packed face index or -1
    inv_depth: np.ndarray   # (H, W) float32, 0 for background
    count: int


def rasterize(mesh: ScreenMesh, edges: EdgeList | None = None, backend: str = "auto",
              base: DepthBase | None = None) -> Visibility:
    """Closest valid face at every pixel centre (ties go to the lower face index).

    With `edges`, also find where those edges visibly cross between neighbouring pixel centres
    (for analytic anti-aliasing); this needs the depth buffer, so it happens here. With `base`
    (numba backend only), the faces from `base.count` on are taken from it instead of drawn.
    """
    backend = pick_backend(mesh.uv.device, backend)
    empty = torch.zeros(0, dtype=torch.long, device=mesh.uv.device)
    if base is not None and backend != "numba":
        raise ValueError("a depth base needs the numba backend")
    if backend == "numba":
        uv = mesh.uv.detach().double().numpy()
        z = mesh.z.detach().double().numpy()
        faces = mesh.faces.numpy()
        if base is None:
            face_id = np.empty((mesh.height, mesh.width), dtype=np.int32)
            inv_depth = _WORKSPACE.depth_buffer(mesh.height, mesh.width)
            kernels.rasterize_zbuffer(uv, z, faces, mesh.valid.numpy(), mesh.height, mesh.width,
                                      face_id, inv_depth, 4 * numba.get_num_threads())
        else:
            face_id = base.face_id.copy()
            inv_depth = base.inv_depth.copy()
            kernels.rasterize_zbuffer_over(uv, z, faces, mesh.valid.numpy(), base.count, mesh.height,
                                           mesh.width, face_id, inv_depth, 4 * numba.get_num_threads())
        pixels, pixel_face = kernels.covered_pixels(face_id, 4 * numba.get_num_threads())
        crossings = None
        if edges is not None:
            found = kernels.silhouette_crossings(uv, z, faces, edges.vertices.numpy(), edges.faces.numpy(),
                                                 edges.inside.numpy(), inv_depth, CROSSING_TOLERANCE)
            crossings = Crossings(*(torch.from_numpy(x) for x in found))
        return Visibility(torch.from_numpy(face_id), torch.from_numpy(pixels), torch.from_numpy(pixel_face),
                          crossings)
    face_id, inv_depth = reference.rasterize_zbuffer(mesh.uv, mesh.z, mesh.faces, mesh.valid,
                                                     mesh.height, mesh.width)
    flat = face_id.view(-1)
    pixels = torch.nonzero(flat >= 0).squeeze(1)
    crossings = None
    if edges is not None:
        if len(edges.vertices):
            crossings = Crossings(*reference.silhouette_crossings(
                mesh.uv, mesh.z, mesh.faces, edges.vertices, edges.faces, edges.inside, inv_depth,
                CROSSING_TOLERANCE))
        else:
            crossings = Crossings(empty, empty, empty, empty)
    return Visibility(face_id.to(torch.int32), pixels, flat[pixels], crossings)


def interpolate_barycentrics(mesh: ScreenMesh, vis: Visibility) -> tuple[torch.Tensor, torch.Tensor]:
    """Perspective-correct barycentrics (N, 3) and depth (N,) of the covered pixels, differentiable."""
    width = mesh.width
    pix = vis.pixels
    px = (pix % width).to(mesh.uv.dtype) + 0.5
    py = torch.div(pix, width, rounding_mode="floor").to(mesh.uv.dtype) + 0.5
    corners = mesh.faces[vis.pixel_face]
    screen = screen_barycentrics(mesh.uv[corners], px, py)
    weighted = screen / mesh.z[corners]
    inv_depth = weighted.sum(-1)
    return weighted / inv_depth[:, None], 1.0 / inv_depth
