"""Speed-motivated code paths that must compute the same thing as the plain ones."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from nmrlight.refine import window
from nmrlight.refine.window import gaussian_blur


def _conv_blur(image: torch.Tensor, sigma: float) -> torch.Tensor:
    """Reference: a direct 2-D convolution with the outer product of the 1-D kernel (zero padding)."""
    radius = max(1, int(math.ceil(3 * sigma)))
    x = torch.arange(-radius, radius + 1, dtype=torch.float64)
    k = torch.exp(-0.5 * (x / sigma) ** 2)
    k = k / k.sum()
    kernel = (k[:, None] * k[None, :])[None, None]
    return F.conv2d(image.double()[None, None], kernel, padding=radius)[0, 0]


def test_matrix_blur_equals_a_direct_convolution_and_its_gradient():
    g = torch.Generator().manual_seed(3)
    image = torch.rand(37, 53, generator=g, requires_grad=True)
    weights = torch.rand(37, 53, generator=g)
    for sigma in (0.7, 1.0, 2.0):
        blurred = gaussian_blur(image, sigma)
        assert torch.allclose(blurred.double(), _conv_blur(image.detach(), sigma), atol=1e-6)
        (grad,) = torch.autograd.grad((blurred * weights).sum(), image)
        # the blur is symmetric, so the gradient of sum(w * blur(x)) is blur(w)
        assert torch.allclose(grad.double(), _conv_blur(weights, sigma), atol=1e-6)


def test_large_images_take_the_convolution_path_with_the_same_result(monkeypatch):
    image = torch.rand(20, 30, generator=torch.Generator().manual_seed(4))
    by_matrix = gaussian_blur(image, 1.5)
    monkeypatch.setattr(window, "MATRIX_BLUR_MAX", 10)
    by_conv = gaussian_blur(image, 1.5)
    assert torch.allclose(by_matrix, by_conv, atol=1e-6)
    assert gaussian_blur(image, 0.0) is image


def test_lean_adam_takes_the_same_steps_as_torch_adam_with_a_schedule():
    from nmrlight.refine.optimisers import LeanAdam, _cosine

    def problem(params):
        a, b, _unused = params
        return ((a - torch.tensor([0.3, -1.2, 2.0])) ** 2).sum() * 3.0 + torch.cos(b * 2.0).sum()

    start = [torch.tensor([1.0, 2.0, -0.5]), torch.tensor(0.7), torch.tensor([5.0])]
    lrs = [0.05, 0.2, 0.1]
    ours = [t.clone().requires_grad_(True) for t in start]
    theirs = [t.clone().requires_grad_(True) for t in start]
    lean = LeanAdam(ours, lrs)
    torch_adam = torch.optim.Adam([{"params": [p], "lr": lr} for p, lr in zip(theirs, lrs, strict=True)])
    schedule = torch.optim.lr_scheduler.LambdaLR(torch_adam, _cosine(20))
    factor = _cosine(20)
    for i in range(20):
        lean.zero_grad()
        torch_adam.zero_grad()
        problem(ours).backward()
        problem(theirs).backward()
        lean.step(factor(i))
        torch_adam.step()
        schedule.step()
        for a, b in zip(ours, theirs, strict=True):
            assert torch.equal(a, b)
    assert not torch.equal(ours[0], start[0]) and torch.equal(ours[2], start[2])  # no gradient: untouched


def test_refinement_renders_the_same_with_or_without_the_neighbours_fixed_layer(monkeypatch):
    import numpy as np
    from conftest import two_car_problem

    from nmrlight.refine import car_view, pose
    from nmrlight.refine.config import RefineConfig

    problem, lighting, _, _ = two_car_problem(0.05, (0.1, 0.0, 0.4))
    config = RefineConfig(stages=((64, "analytic", 1.0, 4), (96, "analytic", 0.0, 3)), large_stage=None)
    layered = pose.refine_pose(problem, lighting, config)
    monkeypatch.setattr(car_view, "fixed_layer", lambda objects, camera: None)  # as on a GPU: all objects each time
    whole = pose.refine_pose(problem, lighting, config)
    assert layered.history == whole.history and len(whole.history) == 7
    assert np.isfinite(whole.loss_after) and whole.loss_after < whole.loss_before
