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
