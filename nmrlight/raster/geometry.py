"""Screen-space triangle arithmetic shared by the PyTorch passes (the numba kernels inline the same
formulas, in the same order, so both back ends round alike)."""

from __future__ import annotations

import torch


def triangle_areas(tri: torch.Tensor) -> torch.Tensor:
    """Twice the signed area (N,) of screen triangles tri (N, 3, 2); its sign is the facing."""
    return ((tri[:, 1, 0] - tri[:, 0, 0]) * (tri[:, 2, 1] - tri[:, 0, 1])
            - (tri[:, 2, 0] - tri[:, 0, 0]) * (tri[:, 1, 1] - tri[:, 0, 1]))


def screen_barycentrics(tri: torch.Tensor, px: torch.Tensor, py: torch.Tensor) -> torch.Tensor:
    """Affine barycentrics (N, 3) of points (px, py) in screen triangles tri (N, 3, 2)."""
    x0, y0 = tri[:, 0, 0], tri[:, 0, 1]
    x1, y1 = tri[:, 1, 0], tri[:, 1, 1]
    x2, y2 = tri[:, 2, 0], tri[:, 2, 1]
    inv_area = 1.0 / triangle_areas(tri)
    b0 = ((x1 - px) * (y2 - py) - (x2 - px) * (y1 - py)) * inv_area
    b1 = ((x2 - px) * (y0 - py) - (x0 - px) * (y2 - py)) * inv_area
    return torch.stack([b0, b1, 1.0 - b0 - b1], dim=-1)
