"""A car's loss to second order around a pose, from one render: what Levenberg-Marquardt steps on.

With the visibility of a render held fixed (which pixels the car covers, which silhouette edges
cross which pixel pairs), the car's anti-aliased silhouette is linear in the crossings' blend
weights, alpha = A0 + sum_k w_k (A0[source_k] - A0[target_k]) e_target_k, and each weight
|t_k - 1/2| is a small closed-form function of its edge's two projected end points
(`raster.antialias.blend_weights`). So d alpha / d pose is cheap: derivatives of a few hundred
weights in the 6 pose numbers (central differences in float64 of one batched evaluation), scattered
onto their pixels, with no backward pass through the renderer. From it:

- the gradient of the whole loss, J^T (d loss / d alpha) + the direct terms (prior, mask offset),
  the same as autograd through the renderer;
- the Gauss-Newton Hessian of the silhouette term (a sum of squares of blurred residuals) plus the
  prior's, positive semi-definite. The photo-edge term enters through its gradient only (it is a
  ratio, with no least-squares form); Levenberg-Marquardt's damping covers its curvature.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from nmrlight.raster.antialias import crossing_fraction
from nmrlight.render import RenderOutput


@dataclass
class LocalModel:
    """loss(x + d) ~ loss + gradient . d + d^T hessian d / 2 near the pose x the render was made at."""

    loss: float
    gradient: torch.Tensor   # (P,) float64
    hessian: torch.Tensor    # (P, P) float64, positive semi-definite
    iou: float
    hard: torch.Tensor       # (H, W) bool: the car's pixels in this render


UvOf = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]

# central-difference steps of the pose vector (omega in radians, uv in image pixels, log depth): the
# weights are smooth in the pose (the side of each crossing is held), so in float64 these steps
# leave errors far below the float32 renders' rounding
_STEPS = torch.tensor([1e-6, 1e-6, 1e-6, 1e-4, 1e-4, 1e-7], dtype=torch.float64)


def alpha_jacobian(out: RenderOutput, covered: torch.Tensor, vertex_count: int, uv_of: UvOf, pose: torch.Tensor
                   ) -> torch.Tensor:
    """(6, H*W) float64: d (object 0's anti-aliased silhouette) / d pose, visibility held fixed.

    `out` must come from `render(..., alpha_objects=1)` with analytic edges and the moving object
    first, `covered` (H, W) its pixels (`out.object_id == 0`); only crossings of edges among its first
    `vertex_count` vertices move; `uv_of(poses, index)` gives those vertices' pixel coordinates
    (B, V, 2) at a batch of pose vectors (B, 6).
    """
    height, width = out.object_alpha.shape[-2:]
    jac = torch.zeros(len(pose), height * width, dtype=torch.float64)
    blend = out.blend
    if blend is None or blend.geometry is None or len(blend.target) == 0:
        return jac
    geometry = blend.geometry
    covered = covered.reshape(-1).to(torch.float64)
    delta = covered[blend.source] - covered[blend.target]
    keep = (geometry.a < vertex_count) & (delta != 0)
    if not bool(keep.any()):
        return jac
    moving = geometry.subset(keep)
    used, local = torch.unique(torch.cat([moving.a, moving.b]), return_inverse=True)
    first, second = local[: len(moving.a)], local[len(moving.a):]
    steps = torch.diag(_STEPS)
    poses = pose.to(torch.float64)[None] + torch.cat([steps, -steps])          # (12, 6)
    uv = uv_of(poses, used)
    t = crossing_fraction(uv[:, first], uv[:, second], moving)                 # (12, K)
    dt = (t[:6] - t[6:]) / (2 * _STEPS[:, None])                               # (6, K)
    sign = torch.where(moving.beyond, 1.0, -1.0).to(torch.float64)            # w = |t - 1/2|, side held
    return jac.index_add_(1, blend.target[keep], dt * (sign * delta[keep]))


def gauss_newton(columns: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """2 sum_pixels weight * c_i * c_j over residual-derivative images columns (P, H, W): the
    Gauss-Newton Hessian of sum weight * residual^2."""
    flat = columns.reshape(len(columns), -1)
    used = flat.abs().sum(0) > 0          # unblurred, the columns live on the outline only
    flat = flat[:, used]
    return 2.0 * (flat * weight.reshape(-1)[used]) @ flat.T
