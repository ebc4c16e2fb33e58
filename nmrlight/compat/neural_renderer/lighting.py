"""NMR's `lighting`: ambient plus one directional light, per face, multiplied into texture cubes."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from nmrlight.compat.neural_renderer._util import to_tensor


def nmr_face_normals(faces: torch.Tensor) -> torch.Tensor:
    """NMR's face normals for corner coordinates (..., 3, 3): normalize((v0 - v1) x (v2 - v1)).

    This is minus the right-hand-rule normal (v1 - v0) x (v2 - v0). NMR rasterises a face only when
    its corners run counter-clockwise on screen (y up), and for such a face this normal points
    toward the camera, so NMR's visible faces are always lit on the side that is seen.
    """
    v10 = faces[..., 0, :] - faces[..., 1, :]
    v12 = faces[..., 2, :] - faces[..., 1, :]
    return F.normalize(torch.cross(v10, v12, dim=-1), dim=-1, eps=1e-5)


def _per_batch(value, like: torch.Tensor) -> torch.Tensor:
    v = to_tensor(value, like)
    return v[None] if v.ndim <= 1 else v


def lighting(faces: torch.Tensor, textures: torch.Tensor, intensity_ambient=0.5, intensity_directional=0.5,
             color_ambient=(1, 1, 1), color_directional=(1, 1, 1), direction=(0, 1, 0)) -> torch.Tensor:
    """Lit textures (B, F, T, T, T, C) = textures * (l_a c_a + l_d c_d max(0, n . d)).

    faces: (B, F, 3, 3) corner coordinates (from `vertices_to_faces`) in the frame the light lives
    in; `direction` points toward the light and is used as given (NMR did not normalise it either).
    Unlike NMR, which multiplied `textures` in place, this returns a new tensor.
    """
    bs, nf = faces.shape[:2]
    light = torch.zeros(bs, nf, 3, dtype=faces.dtype, device=faces.device)
    ambient = to_tensor(intensity_ambient, faces)
    directional = to_tensor(intensity_directional, faces)
    light = light + ambient.reshape(-1, 1, 1) * _per_batch(color_ambient, faces)[:, None, :]
    normals = nmr_face_normals(faces)
    d = _per_batch(direction, faces)[:, None, :]
    cos = F.relu((normals * d).sum(-1))
    light = light + directional.reshape(-1, 1, 1) * _per_batch(color_directional, faces)[:, None, :] * cos[..., None]
    return textures * light[:, :, None, None, None, :]
