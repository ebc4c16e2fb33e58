"""NMR's geometric helpers: look_at, look, perspective, projection, vertices_to_faces, viewpoints.

Same signatures, shapes and conventions as the Neural Mesh Renderer (PyTorch port):
vertices are (batch, V, 3); `look_at`/`look` return camera-frame vertices with x right, y UP and z
forward (NMR's frame, unlike nmrlight's y-down frame); `perspective` and `projection` return NMR's
normalised device coordinates (x, y in [-1, 1] across the image, y up, plus the camera depth z),
which is what NMR's rasteriser consumed. The Renderer does not go through these NDCs: it maps the
same camera onto an nmrlight Camera (see renderer.py); these functions exist for scripts that call
them directly and as the definition the Renderer is tested against.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from nmrlight.compat.neural_renderer._util import check_batched, size_pair, to_tensor
from nmrlight.errors import NmrlightError


def _batched_vector(value, like: torch.Tensor, batch: int) -> torch.Tensor:
    v = to_tensor(value, like)
    if v.ndim == 1:
        v = v[None]
    if v.shape[-1] != 3:
        raise NmrlightError(f"expected 3-vectors, got shape {tuple(v.shape)}")
    return v.expand(batch, 3) if v.shape[0] == 1 else v


def look_rotation(direction: torch.Tensor, up: torch.Tensor) -> torch.Tensor:
    """(B, 3, 3) rotation whose rows are NMR's camera axes: z along `direction`, x = up x z, y = z x x."""
    z_axis = F.normalize(direction, eps=1e-5)
    x_axis = F.normalize(torch.cross(up.expand_as(z_axis), z_axis, dim=-1), eps=1e-5)
    y_axis = F.normalize(torch.cross(z_axis, x_axis, dim=-1), eps=1e-5)
    return torch.stack([x_axis, y_axis, z_axis], dim=1)


def look_at_rotation(eye, at=(0, 0, 0), up=(0, 1, 0), like: torch.Tensor | None = None) -> torch.Tensor:
    """(B, 3, 3) rotation of `look_at`: the camera at `eye` looks at `at` with `up` pointing up."""
    like = like if like is not None else torch.zeros(0)
    eye_t = to_tensor(eye, like)
    batch = eye_t.shape[0] if eye_t.ndim == 2 else 1
    eye_t = _batched_vector(eye_t, like, batch)
    at_t = _batched_vector(at, like, eye_t.shape[0])
    up_t = _batched_vector(up, like, eye_t.shape[0])
    return look_rotation(at_t - eye_t, up_t)


def _apply(vertices: torch.Tensor, eye: torch.Tensor, rotation: torch.Tensor) -> torch.Tensor:
    return torch.matmul(vertices - eye[:, None, :], rotation.transpose(1, 2))


def look_at(vertices: torch.Tensor, eye, at=(0, 0, 0), up=(0, 1, 0)) -> torch.Tensor:
    """World -> NMR camera frame for a camera at `eye` looking at `at` (x right, y up, z forward)."""
    check_batched(vertices, "vertices")
    batch = vertices.shape[0]
    eye_t = _batched_vector(eye, vertices, batch)
    rotation = look_rotation(_batched_vector(at, vertices, batch) - eye_t, _batched_vector(up, vertices, batch))
    return _apply(vertices, eye_t, rotation)


def look(vertices: torch.Tensor, eye, direction=(0, 0, 1), up=(0, 1, 0)) -> torch.Tensor:
    """World -> NMR camera frame for a camera at `eye` looking along `direction`.

    NMR's PyTorch port defaulted `direction` to (0, 1, 0) and left `up` unset (calling it with the
    defaults failed); we use the Chainer original's defaults, direction (0, 0, 1) and up (0, 1, 0),
    which is also what Renderer(camera_mode='look') passes.
    """
    check_batched(vertices, "vertices")
    batch = vertices.shape[0]
    eye_t = _batched_vector(eye, vertices, batch)
    rotation = look_rotation(_batched_vector(direction, vertices, batch), _batched_vector(up, vertices, batch))
    return _apply(vertices, eye_t, rotation)


def perspective(vertices: torch.Tensor, angle: float = 30.0) -> torch.Tensor:
    """NMR perspective: (x, y, z) -> (x / (z tan a), y / (z tan a), z), `angle` a in degrees.

    Note NMR's convention: `angle` is the HALF field of view (tan a maps to the image border).
    """
    check_batched(vertices, "vertices")
    width = math.tan(math.radians(float(angle)))
    z = vertices[..., 2]
    return torch.stack([vertices[..., 0] / z / width, vertices[..., 1] / z / width, z], dim=-1)


def projection(vertices: torch.Tensor, K, R, t, dist_coeffs, orig_size, eps: float = 1e-9) -> torch.Tensor:
    """NMR projection mode: x_cam = R x + t, pinhole K with OpenCV distortion, to NDC of `orig_size`.

    K (B, 3, 3), R (B, 3, 3), t (B, 1, 3) or (B, 3), dist_coeffs (B, 5) = (k1, k2, p1, p2, k3);
    unbatched values broadcast. orig_size is the photograph's size in pixels: an int (square, as in
    NMR) or a (width, height) pair (the non-square fork). Returns (u_ndc, v_ndc, z) with
    u_ndc = 2 u / width - 1 and v_ndc = 1 - 2 v / height: v is flipped (NMR's `v = orig_size - v`),
    so that after NMR's vertical image flip row 0 is the top of the photograph.
    """
    check_batched(vertices, "vertices")
    width, height = size_pair(orig_size, "orig_size")
    K = to_tensor(K, vertices).reshape(-1, 3, 3)
    R = to_tensor(R, vertices).reshape(-1, 3, 3)
    t = to_tensor(t, vertices).reshape(-1, 1, 3)
    cam = torch.matmul(vertices, R.transpose(1, 2)) + t
    x, y, z = cam.unbind(-1)
    xn, yn = x / (z + eps), y / (z + eps)
    if dist_coeffs is not None:
        d = to_tensor(dist_coeffs, vertices).reshape(-1, 5)
        k1, k2, p1, p2, k3 = (d[:, i, None] for i in range(5))
        r2 = xn ** 2 + yn ** 2
        radial = 1 + k1 * r2 + k2 * r2 ** 2 + k3 * r2 ** 3
        xn, yn = (xn * radial + 2 * p1 * xn * yn + p2 * (r2 + 2 * xn ** 2),
                  yn * radial + p1 * (r2 + 2 * yn ** 2) + 2 * p2 * xn * yn)
    homog = torch.stack([xn, yn, torch.ones_like(z)], dim=-1)
    pix = torch.matmul(homog, K.transpose(1, 2))
    u, v = pix[..., 0], height - pix[..., 1]
    return torch.stack([2 * u / width - 1, 2 * v / height - 1, z], dim=-1)


def vertices_to_faces(vertices: torch.Tensor, faces: torch.Tensor) -> torch.Tensor:
    """(B, V, 3) vertices and (B, F, 3) indices -> (B, F, 3, 3) corner coordinates."""
    check_batched(vertices, "vertices", last=None)
    check_batched(faces, "faces")
    if vertices.shape[0] != faces.shape[0]:
        raise NmrlightError(f"vertices and faces batches differ: {vertices.shape[0]} vs {faces.shape[0]}")
    batch = torch.arange(vertices.shape[0], device=vertices.device)[:, None, None]
    return vertices[batch, faces.long().to(vertices.device)]


def get_points_from_angles(distance, elevation, azimuth, degrees: bool = True):
    """Camera position at `distance` from the origin, `elevation` above the xz plane, `azimuth` about y.

    Azimuth 0 puts the eye on the -z axis (NMR's default view). Python numbers give a tuple (as in
    NMR); tensors give a (B, 3) tensor.
    """
    if isinstance(distance, (int, float)) and not torch.is_tensor(elevation) and not torch.is_tensor(azimuth):
        if degrees:
            elevation, azimuth = math.radians(elevation), math.radians(azimuth)
        return (distance * math.cos(elevation) * math.sin(azimuth),
                distance * math.sin(elevation),
                -distance * math.cos(elevation) * math.cos(azimuth))
    distance, elevation, azimuth = (torch.as_tensor(x, dtype=torch.float32) if not torch.is_tensor(x) else x
                                    for x in (distance, elevation, azimuth))
    if degrees:
        elevation = elevation * (math.pi / 180.0)
        azimuth = azimuth * (math.pi / 180.0)
    points = torch.stack(torch.broadcast_tensors(
        distance * torch.cos(elevation) * torch.sin(azimuth),
        distance * torch.sin(elevation),
        -distance * torch.cos(elevation) * torch.cos(azimuth)), dim=-1)
    return points.reshape(-1, 3)
