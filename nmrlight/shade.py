"""Lighting and shading: the Neural Mesh Renderer model with learnable, camera-frame lights.

I = albedo * (l_a * c_a + l_d * c_d * max(0, n . d)), d normalised inside. Every term may be a
tensor that requires grad. Lights live in the camera frame by default: one lighting for the whole
photograph and every car in it, so the shading of a car changes when the car turns, which is what
makes shading informative about rotation. `frame="object"` reproduces NMR, which lit the vertices
as passed, before the camera transform.

Lighting is two-sided by default: each normal is turned toward the camera, because real car meshes
are open triangle soups whose winding reverses under the y flip.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from nmrlight.errors import NmrlightError


def _tensor(value, like: torch.Tensor | None = None) -> torch.Tensor:
    if torch.is_tensor(value):
        return value
    kwargs = {"dtype": like.dtype, "device": like.device} if like is not None else {"dtype": torch.float32}
    return torch.as_tensor(value, **kwargs)


@dataclass
class Lighting:
    """NMR lighting: ambient and directional intensities and colours, direction toward the light."""

    ambient: torch.Tensor | float = 0.5
    directional: torch.Tensor | float = 0.5
    direction: torch.Tensor | tuple[float, float, float] = (0.0, -1.0, 0.0)
    color_ambient: torch.Tensor | tuple[float, ...] | float = 1.0
    color_directional: torch.Tensor | tuple[float, ...] | float = 1.0
    frame: str = "camera"
    two_sided: bool = True

    def __post_init__(self) -> None:
        if self.frame not in ("camera", "object"):
            raise NmrlightError(f"lighting frame must be 'camera' or 'object', got {self.frame!r}")
        d = _tensor(self.direction)
        if d.shape != (3,):
            raise NmrlightError(f"light direction must have 3 components, got shape {tuple(d.shape)}")
        if not torch.isfinite(d).all() or float(d.detach().norm()) == 0.0:
            raise NmrlightError(f"light direction must be finite and non-zero, got {d.tolist()}")

    def intensity(self, normals: torch.Tensor) -> torch.Tensor:
        """Light reaching unit normals (..., 3): (..., C) with C the number of light colours."""
        d = _tensor(self.direction, normals)
        d = d / d.norm()
        cos = F.relu((normals * d).sum(-1, keepdim=True))
        ambient = _tensor(self.ambient, normals) * _tensor(self.color_ambient, normals).reshape(-1)
        directional = _tensor(self.directional, normals) * _tensor(self.color_directional, normals).reshape(-1)
        return ambient + directional * cos


def face_normals(vertices: torch.Tensor, faces: torch.Tensor) -> torch.Tensor:
    """Unit normals (F, 3) from the winding: (v1 - v0) x (v2 - v0)."""
    tri = vertices[faces]
    n = torch.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0], dim=-1)
    return F.normalize(n, dim=-1, eps=1e-12)


def vertex_normals(vertices: torch.Tensor, faces: torch.Tensor) -> torch.Tensor:
    """Area-weighted unit vertex normals (V, 3) from the winding."""
    tri = vertices[faces]
    n = torch.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0], dim=-1)
    acc = torch.zeros_like(vertices).index_add(0, faces.reshape(-1), n.repeat_interleave(3, dim=0))
    return F.normalize(acc, dim=-1, eps=1e-12)


def toward_camera(normals: torch.Tensor, points: torch.Tensor) -> torch.Tensor:
    """Flip normals (..., 3) that point away from a camera at the origin (two-sided lighting)."""
    facing = (normals * points).sum(-1, keepdim=True).detach()
    return torch.where(facing > 0, -normals, normals)


def sample_textures(textures: torch.Tensor, face: torch.Tensor, bary: torch.Tensor) -> torch.Tensor:
    """NMR texture cubes (F, T, T, T, C) sampled trilinearly at barycentrics (N, 3) -> (N, C)."""
    size = textures.shape[1]
    pos = bary.clamp(0, 1) * (size - 1)
    lo = pos.detach().floor().clamp(0, size - 1).long()
    hi = (lo + 1).clamp(max=size - 1)
    frac = pos - lo.to(pos.dtype)
    out = 0
    for corner in range(8):
        pick = [(corner >> axis) & 1 for axis in range(3)]
        idx = [hi[:, a] if pick[a] else lo[:, a] for a in range(3)]
        w = 1.0
        for a in range(3):
            w = w * (frac[:, a] if pick[a] else 1 - frac[:, a])
        out = out + w[:, None] * textures[face, idx[0], idx[1], idx[2]]
    return out
