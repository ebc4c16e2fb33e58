"""A car's pose as the refinement sees it, and the prior that holds it near its start.

Rotation on SO(3) as R = exp(omega) R0; translation as the projected centre (u, v) in image pixels
plus log depth, so image position and depth are separate, well-scaled directions; a mask offset
(pixels the detector's mask is grown or shrunk by) as a nuisance parameter. The prior is a Gaussian
around the initial pose (or a pose it is moved to), weighted up for mostly hidden cars.
"""

from __future__ import annotations

import math

import torch

from nmrlight.camera import Camera
from nmrlight.refine.config import RefineConfig
from nmrlight.rotations import so3_exp, so3_log


class PoseParams:
    """Learnable pose of one car: omega (3), centre pixel uv (2, image pixels), log depth."""

    def __init__(self, rotation: torch.Tensor, translation: torch.Tensor, camera: Camera) -> None:
        self.R0 = rotation.detach().float()
        self.fx, self.fy, self.cx, self.cy = camera.fx, camera.fy, camera.cx, camera.cy
        t = translation.detach().double()
        z = float(t[2])
        self.omega = torch.zeros(3, requires_grad=True)
        self.uv = torch.tensor([self.fx * float(t[0]) / z + self.cx, self.fy * float(t[1]) / z + self.cy],
                               requires_grad=True)
        self.log_z = torch.tensor(math.log(z), requires_grad=True)
        self.log_z0 = math.log(z)
        self.dilation = torch.zeros((), requires_grad=True)  # mask offset, image pixels (nuisance)
        self.dilation_range: tuple[float, float] = (-math.inf, math.inf)  # where it acts (`bound_dilation`)
        self.prior_scale = 1.0  # the prior's weight relative to the image terms' (see refine_pose)
        self.depth_prior_scale = 1.0  # ... of its depth term (see refine_pose)
        self.visible = 1.0      # mask area over rendered area at the prior's centre (see refine_pose)
        # the prior's centre: the initial pose unless `centre_prior` moves it (a later joint pass)
        self.omega_prior = torch.zeros(3)
        self.log_z_prior = self.log_z0
        self.depth_wall: float | None = None  # largest |log depth - prior's| without penalty (refine_pose)

    def centre_prior(self, rotation: torch.Tensor, translation: torch.Tensor) -> None:
        """Centre the prior on another pose (e.g. the detector's, when refining from a refined pose)."""
        self.omega_prior = so3_log(rotation.detach().float() @ self.R0.T).float()
        self.log_z_prior = math.log(float(translation[2]))

    def bound_dilation(self, mask_thickness: float, config: RefineConfig) -> None:
        """Limit the offset that acts on the mask (`config.dilation_max`): a car whose render misses
        its sliver of mask would otherwise erode the sliver away (or grow it over the car) instead of
        moving; `mask_thickness` is the mask's largest inscribed radius (image pixels)."""
        if config.dilation_max is None:
            return
        erode = min(config.dilation_max, config.dilation_max_erode * max(mask_thickness, 0.0))
        self.dilation_range = (-erode, config.dilation_max)

    def acting_dilation(self) -> torch.Tensor:
        """The offset that grows the mask: `dilation` clamped to its range (beyond it only the prior acts)."""
        low, high = self.dilation_range
        return self.dilation.clamp(low, high)

    def dilation_free(self) -> bool:
        """Whether the offset is inside its range (its image terms' derivative is then not zero)."""
        low, high = self.dilation_range
        return low < float(self.dilation.detach()) < high

    def parameters(self) -> list[torch.Tensor]:
        return [self.omega, self.uv, self.log_z, self.dilation]

    # the largest change one second-order step may make to each of `parameters()` (rad, px, log depth,
    # px): far beyond any step a local model is good for, so only a runaway step is refused
    STEP_BOUNDS = (0.5, 1000.0, 0.5, 10.0)

    def rotation(self, omega: torch.Tensor | None = None) -> torch.Tensor:
        """R = exp(omega) R0, of the current omega or the ones given (..., 3)."""
        omega = self.omega if omega is None else omega
        return so3_exp(omega) @ self.R0.to(omega.dtype)

    def translation(self, uv: torch.Tensor | None = None, log_z: torch.Tensor | None = None) -> torch.Tensor:
        """The centre in metres from the projected centre and log depth (current, or the ones given:
        uv (..., 2), log_z (...))."""
        uv = self.uv if uv is None else uv
        z = torch.exp(self.log_z if log_z is None else log_z)
        x = (uv[..., 0] - self.cx) * z / self.fx
        y = (uv[..., 1] - self.cy) * z / self.fy
        return torch.stack([x, y, z], dim=-1)

    def pose_vector(self) -> torch.Tensor:
        """(omega, uv, log depth) as one detached 6-vector: the pose `uv_of` takes."""
        return torch.cat([self.omega.detach(), self.uv.detach(), self.log_z.detach().reshape(1)])

    def uv_of(self, vertices: torch.Tensor, camera: Camera, poses: torch.Tensor) -> torch.Tensor:
        """Pixel coordinates (B, V, 2) of object-frame vertices (V, 3) at pose vectors (B, 6)."""
        rotation = self.rotation(poses[:, :3])
        translation = self.translation(poses[:, 3:5], poses[:, 5])
        posed = vertices.to(poses.dtype) @ rotation.transpose(-1, -2) + translation[:, None, :]
        return camera.project(posed)[0]

    def state(self) -> tuple[torch.Tensor, ...]:
        return tuple(p.detach().clone() for p in self.parameters())

    def load(self, state: tuple[torch.Tensor, ...]) -> None:
        with torch.no_grad():
            for p, s in zip(self.parameters(), state, strict=True):
                p.copy_(s)




def rotation_sigma_rad(config: RefineConfig, depth: float, visible: float = 1.0,
                       dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """The prior's rotation standard deviations (radians, about camera x, y, z) for a car `depth` metres
    away: `prior_sigma_deg`, times up to `prior_sigma_far` for far cars at least
    `prior_sigma_far_visible` visible."""
    far = min(max((depth - 20.0) / 50.0, 0.0), 1.0) if visible >= config.prior_sigma_far_visible else 0.0
    scale = 1.0 + (config.prior_sigma_far - 1.0) * far
    return torch.deg2rad(torch.tensor(config.prior_sigma_deg, dtype=dtype) * scale)


def depth_penalty(deviation: torch.Tensor, config: RefineConfig) -> torch.Tensor:
    """The prior's depth term for a log-depth `deviation` from its centre, in squared standard deviations
    near the centre. With `prior_depth_outliers` > 0 it is -2 log of the detector's depth error model,
    a mixture of N(0, sigma) and a share of N(0, k sigma) outliers (zero at the centre): quadratic
    within about two sigmas, then growing about k^2 times more slowly, so a car the detector put 30 %
    off is not held there when its own pixels say otherwise."""
    u = deviation / config.prior_sigma_depth
    share = config.prior_depth_outliers
    if share <= 0.0:
        return u ** 2
    k = config.prior_depth_outlier_scale
    weights = torch.tensor([math.log1p(-share), math.log(share / k)], dtype=u.dtype)
    centre = torch.logsumexp(weights, 0)
    terms = torch.stack([weights[0] - u ** 2 / 2, weights[1] - u ** 2 / (2 * k * k)])
    return -2.0 * (torch.logsumexp(terms, 0) - centre)


def depth_curvature(deviation: float, config: RefineConfig) -> float:
    """d penalty / du over u (u: the deviation in sigmas), the Gauss-Newton curvature of `depth_penalty`
    (2 for the plain square; between 2 / k^2 and 2 with outliers), positive everywhere."""
    share = config.prior_depth_outliers
    if share <= 0.0:
        return 2.0
    k = config.prior_depth_outlier_scale
    u2 = (deviation / config.prior_sigma_depth) ** 2
    # the inliers' density over the outliers' (the ratio, not each density: it only tends to 0 far out,
    # where the curvature is 2 / k^2)
    inlier = (1.0 - share) * math.exp(min(-u2 / 2 + u2 / (2 * k * k), 0.0))
    return 2.0 * (inlier + share / k ** 3) / (inlier + share / k)


def prior(params: PoseParams, config: RefineConfig) -> torch.Tensor:
    """Squared deviation from the prior's centre (the initial pose unless moved) in standard deviations
    (rotation and log depth; the depth's heavy-tailed with `prior_depth_outliers`)."""
    sigma = rotation_sigma_rad(config, math.exp(params.log_z_prior), params.visible, params.omega.dtype)
    rotation = (((params.omega - params.omega_prior) / sigma) ** 2).sum()
    depth = depth_penalty(params.log_z - params.log_z_prior, config)
    dilation = (params.dilation / config.dilation_sigma) ** 2 if config.fit_dilation else 0.0
    wall = 0.0
    if params.depth_wall is not None:  # steep beyond the wall: 1 unit of loss per 1 % of depth beyond, squared
        excess = torch.relu((params.log_z - params.log_z_prior).abs() - params.depth_wall)
        wall = (excess / 0.01) ** 2 / config.prior_weight * 0.01
    if params.depth_prior_scale == params.prior_scale:  # the default: summed as before, the same poses to the bit
        return params.prior_scale * (rotation + depth) + dilation + wall
    return params.prior_scale * rotation + params.depth_prior_scale * depth + dilation + wall


def prior_hessian(params: PoseParams, config: RefineConfig) -> torch.Tensor:
    """(7,) diagonal of the (Gauss-Newton) Hessian of `config.prior_weight * prior` (the depth wall left
    out)."""
    sigma = rotation_sigma_rad(config, math.exp(params.log_z_prior), params.visible, torch.float64)
    rotation = 2.0 * params.prior_scale / sigma ** 2
    curvature = depth_curvature(float(params.log_z.detach()) - params.log_z_prior, config)
    depth = torch.tensor([0.0, 0.0, curvature * params.depth_prior_scale / config.prior_sigma_depth ** 2],
                         dtype=torch.float64)
    dilation = torch.tensor([2.0 / config.dilation_sigma ** 2 if config.fit_dilation else 0.0], dtype=torch.float64)
    return config.prior_weight * torch.cat([rotation, depth, dilation])
