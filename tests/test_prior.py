"""The pose prior: its terms and their Hessian, and how its depth term weighs a partly hidden car."""

from __future__ import annotations

import math
from dataclasses import replace

import pytest
import torch
from conftest import two_car_problem

from nmrlight.camera import Camera
from nmrlight.refine import pose
from nmrlight.refine.config import RefineConfig
from nmrlight.refine.params import (
    PoseParams,
    depth_curvature,
    depth_penalty,
    prior,
    prior_hessian,
    rotation_sigma_rad,
)


@pytest.mark.parametrize("power", [1.0, 0.5, 0.0])
def test_the_depth_term_weighs_the_visibility_scale_to_its_power_and_the_hessian_agrees(power):
    camera = Camera.from_intrinsics(300.0, 300.0, 80.0, 60.0, 160, 120)
    config = RefineConfig(prior_depth_scale_power=power, fit_dilation=False)
    params = PoseParams(torch.eye(3), torch.tensor([0.5, 0.8, 14.0]), camera)
    params.prior_scale, params.depth_prior_scale = 4.0, 4.0 ** power
    omega, log_z = torch.tensor([0.01, -0.03, 0.02]), 0.05
    with torch.no_grad():
        params.omega += omega
        params.log_z += log_z
    sigma = rotation_sigma_rad(config, 14.0)
    rotation = float(((omega / sigma) ** 2).sum())
    depth = (log_z / config.prior_sigma_depth) ** 2
    assert float(prior(params, config).detach()) == pytest.approx(4.0 * rotation + 4.0 ** power * depth, rel=1e-5)

    def weighted(w: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        params.omega, params.log_z = w, z
        return config.prior_weight * prior(params, config)

    w0, z0 = params.omega.detach().clone(), params.log_z.detach().clone()
    hessian = torch.autograd.functional.hessian(weighted, (w0, z0))
    hw, hz = hessian[0][0], hessian[1][1]
    diagonal = prior_hessian(params, config)
    assert torch.allclose(diagonal[:3].float(), torch.diagonal(hw), rtol=1e-4)
    assert float(diagonal[5]) == pytest.approx(float(hz), rel=1e-4)   # (omega 3, uv 2, log z, offset)


def test_an_unscaled_depth_prior_lets_a_mostly_hidden_car_reach_its_depth():
    """The sedan behind the SUV shows about a fifth of itself. Started 12 % too near, the prior's depth
    term, grown by 1 / visible like the rotation's, holds it short of the depth its exact outline gives;
    unscaled (power 0) it lands within 0.3 %."""
    problem, lighting, _, truth = two_car_problem(0.0, (0.0, 0.0, 0.0), suv_x=0.6)
    problem = replace(problem, translation=truth * 0.88)
    ends = {}
    for power in (1.0, 0.0):
        outcome = pose.refine_pose(problem, lighting, RefineConfig(prior_depth_scale_power=power))
        assert outcome.visible < 0.3
        ends[power] = abs(math.log(float(outcome.translation[2]) / float(truth[2])))
    assert ends[0.0] < 0.003
    assert ends[0.0] < 0.5 * ends[1.0]


@pytest.mark.parametrize("u", [0.3, 1.0, 2.0, 3.0, 5.0, 12.0])
def test_the_heavy_tailed_depth_term_is_the_detector_error_models_log_density(u):
    """-2 log of the mixture 0.95 N(0, s) + 0.05 N(0, 3 s), zero at the centre, against SciPy's normal
    densities; its gradient over u is `depth_curvature` (the LM Hessian's weight); the plain square
    without outliers."""
    from scipy.stats import norm

    config = RefineConfig(prior_depth_outliers=0.05, prior_depth_outlier_scale=3.0)
    sigma = config.prior_sigma_depth
    density = lambda x: 0.95 * norm.pdf(x, scale=sigma) + 0.05 * norm.pdf(x, scale=3 * sigma)  # noqa: E731
    deviation = torch.tensor(u * sigma, dtype=torch.float64, requires_grad=True)
    value = depth_penalty(deviation, config)
    assert float(value.detach()) == pytest.approx(-2.0 * math.log(density(u * sigma) / density(0.0)), rel=1e-9)
    value.backward()
    assert float(deviation.grad) * sigma / u == pytest.approx(depth_curvature(u * sigma, config), rel=1e-9)
    assert u * u > float(value.detach()) > (u * u if u < 1.0 else 1.0) * 0.5
    plain = RefineConfig()
    assert float(depth_penalty(torch.tensor(u * sigma, dtype=torch.float64), plain)) == pytest.approx(u * u)
    assert depth_curvature(u * sigma, plain) == 2.0


@pytest.mark.parametrize("share, scale", [(1.0, 3.0), (-0.1, 3.0), (0.05, 1.0)])
def test_a_bad_outlier_share_or_width_is_named(share, scale):
    from nmrlight.errors import NmrlightError
    from nmrlight.refine.image import check_config

    with pytest.raises(NmrlightError, match="prior_depth_outlier"):
        check_config(RefineConfig(prior_depth_outliers=share, prior_depth_outlier_scale=scale))


@pytest.mark.parametrize("kept", [-0.1, 1.5])
def test_a_bad_share_of_the_prior_kept_by_the_polish_is_named(kept):
    from nmrlight.errors import NmrlightError
    from nmrlight.refine.image import check_config

    check_config(RefineConfig(global_free_polish_prior=0.1))
    with pytest.raises(NmrlightError, match="global_free_polish_prior"):
        check_config(RefineConfig(global_free_polish_prior=kept))
