"""Soft silhouettes in the spirit of SoftRas: a wide, smooth basin for poses that start far off.

Each face contributes D_f(p) = sigmoid(delta d^2 / sigma^2) at pixel p, where d is the distance in
pixels from p to the face's projected triangle and delta = +1 inside, -1 outside; an object's soft
silhouette is A = 1 - prod_f (1 - D_f). Only pixels within about 3 sigma of a face are visited, so
cost and memory grow with covered pixels, not faces x pixels. The sum runs in log space,
log(1 - A) = -sum softplus(delta d^2 / sigma^2), which keeps interior pixels and gradients finite.

Use the analytic edges (nmrlight.raster.antialias) when the pose is close (gradients exact, live in
a one-pixel band); use soft silhouettes with sigma of a few pixels when it is far off, and shrink
sigma as the fit converges.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from nmrlight.raster import kernels, reference
from nmrlight.raster.rasterize import ScreenMesh, pick_backend

_EPS = 1e-8  # contributions below this are dropped: radius = sigma * sqrt(log(1/eps - 1))


def band_radius(sigma: float) -> float:
    return sigma * math.sqrt(math.log(1.0 / _EPS - 1.0))


class _SoftLogKeep(torch.autograd.Function):
    @staticmethod
    def forward(ctx, uv, faces, valid, face_object, object_start, num_objects, height, width, sigma):
        radius = band_radius(sigma)
        uv_np = uv.detach().double().numpy()
        faces_np = faces.numpy()
        valid_np = valid.numpy()
        log_keep = np.zeros((num_objects, height, width), dtype=np.float64)
        kernels.soft_silhouette_forward(uv_np, faces_np, valid_np, face_object.numpy(), object_start,
                                        num_objects, height, width, float(sigma), radius, log_keep)
        ctx.save_for_backward(uv, faces, valid, face_object)
        ctx.shape = (height, width, float(sigma), radius)
        return torch.from_numpy(log_keep).to(uv.dtype)

    @staticmethod
    def backward(ctx, grad_out):
        uv, faces, valid, face_object = ctx.saved_tensors
        height, width, sigma, radius = ctx.shape
        grad_corner = np.zeros((faces.shape[0], 3, 2), dtype=np.float64)
        kernels.soft_silhouette_backward(uv.detach().double().numpy(), faces.numpy(), valid.numpy(),
                                         face_object.numpy(), height, width, sigma, radius,
                                         np.ascontiguousarray(grad_out.double().numpy()), grad_corner)
        grad_uv = torch.zeros(uv.shape, dtype=torch.float64)
        grad_uv.index_add_(0, faces.reshape(-1), torch.from_numpy(grad_corner).reshape(-1, 2))
        return grad_uv.to(uv.dtype), None, None, None, None, None, None, None, None


def soft_silhouettes(mesh: ScreenMesh, face_object: torch.Tensor, num_objects: int, sigma: float,
                     backend: str = "auto") -> torch.Tensor:
    """Soft silhouette of each object, (N, H, W) in [0, 1), ignoring occlusion between objects."""
    if not sigma > 0:
        raise ValueError(f"soft silhouette sigma must be positive (pixels), got {sigma}")
    backend = pick_backend(mesh.uv.device, backend)
    if backend == "numba":
        order = torch.argsort(face_object, stable=True)
        if not torch.equal(order, torch.arange(len(order))):
            raise ValueError("faces must be grouped by object (as Scene.pack produces them)")
        counts = torch.bincount(face_object, minlength=num_objects)
        start = np.concatenate([[0], np.cumsum(counts.numpy())]).astype(np.int64)
        log_keep = _SoftLogKeep.apply(mesh.uv, mesh.faces, mesh.valid, face_object, start,
                                      num_objects, mesh.height, mesh.width, float(sigma))
    else:
        log_keep = reference.soft_log_keep(mesh.uv, mesh.faces, mesh.valid, face_object, num_objects,
                                           mesh.height, mesh.width, float(sigma), band_radius(sigma))
    return -torch.expm1(log_keep)
