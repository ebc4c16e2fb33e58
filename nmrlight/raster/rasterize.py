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
class Visibility:
    """Result of the visibility pass. Integer tensors, no gradients.

    pairs: 4-neighbour pixel pairs (M, 2) whose faces differ and where at least one side's face was
    flagged in `rasterize(..., pair_faces=...)` (empty when not asked for), with the inverse
    depth (1/z, 0 for background) of both pixels in pair_inv_depth (M, 2).
    """

    face_id: torch.Tensor         # (H, W) int32, -1 for background
    pixels: torch.Tensor          # (N,) flat indices of covered pixels, row-major
    pixel_face: torch.Tensor      # (N,) face covering each of them
    pairs: torch.Tensor           # (M, 2) flat pixel indices
    pair_inv_depth: torch.Tensor  # (M, 2) float64


class _Workspace(threading.local):
    """Per-thread depth buffer reused between calls (a fresh 30 MB buffer costs page faults)."""

    inv_depth: np.ndarray | None = None

    def depth_buffer(self, height: int, width: int) -> np.ndarray:
        if self.inv_depth is None or self.inv_depth.shape != (height, width):
            self.inv_depth = np.zeros((height, width), dtype=np.float64)
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


def rasterize(mesh: ScreenMesh, pair_faces: torch.Tensor | None = None, backend: str = "auto") -> Visibility:
    """Closest valid face at every pixel centre (ties go to the lower face index).

    pair_faces (F,) bool: also list the boundary pixel pairs touching these faces (for antialias).
    """
    backend = pick_backend(mesh.uv.device, backend)
    device = mesh.uv.device
    if backend == "numba":
        face_id = np.empty((mesh.height, mesh.width), dtype=np.int32)
        inv_depth = _WORKSPACE.depth_buffer(mesh.height, mesh.width)
        kernels.rasterize_zbuffer(mesh.uv.detach().double().numpy(), mesh.z.detach().double().numpy(),
                                  mesh.faces.numpy(), mesh.valid.numpy(), mesh.height, mesh.width,
                                  face_id, inv_depth, 4 * numba.get_num_threads())
        pixels, pixel_face = kernels.covered_pixels(face_id)
        if pair_faces is not None:
            pairs, pair_depth = kernels.discontinuity_pairs(face_id, pair_faces.numpy(), inv_depth)
        else:
            pairs, pair_depth = np.zeros((0, 2), np.int64), np.zeros((0, 2), np.float64)
        return Visibility(torch.from_numpy(face_id), torch.from_numpy(pixels), torch.from_numpy(pixel_face),
                          torch.from_numpy(pairs), torch.from_numpy(pair_depth))
    face_id, inv_depth = reference.rasterize_zbuffer(mesh.uv, mesh.z, mesh.faces, mesh.valid,
                                                     mesh.height, mesh.width)
    flat = face_id.view(-1)
    pixels = torch.nonzero(flat >= 0).squeeze(1)
    if pair_faces is not None:
        pairs, pair_depth = reference.discontinuity_pairs(face_id, pair_faces, inv_depth)
    else:
        pairs = torch.zeros((0, 2), dtype=torch.long, device=device)
        pair_depth = torch.zeros((0, 2), dtype=torch.float64, device=device)
    return Visibility(face_id.to(torch.int32), pixels, flat[pixels], pairs, pair_depth)


def screen_barycentrics(tri_uv: torch.Tensor, px: torch.Tensor, py: torch.Tensor) -> torch.Tensor:
    """Screen-space (affine) barycentrics (N, 3) of points (px, py) in triangles tri_uv (N, 3, 2)."""
    x0, y0 = tri_uv[:, 0, 0], tri_uv[:, 0, 1]
    x1, y1 = tri_uv[:, 1, 0], tri_uv[:, 1, 1]
    x2, y2 = tri_uv[:, 2, 0], tri_uv[:, 2, 1]
    area = (x1 - x0) * (y2 - y0) - (x2 - x0) * (y1 - y0)
    b0 = ((x1 - px) * (y2 - py) - (x2 - px) * (y1 - py)) / area
    b1 = ((x2 - px) * (y0 - py) - (x0 - px) * (y2 - py)) / area
    return torch.stack([b0, b1, 1.0 - b0 - b1], dim=-1)


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
