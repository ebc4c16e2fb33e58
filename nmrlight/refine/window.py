"""The pixels a car is compared on: a window of the photo around it, resampled to a render scale.

Everything the optimisation looks at lives in this window (image pixels [x0, x0+w) x [y0, y0+h)),
rendered at a scale that makes its longer side `size` pixels, so the cost per iteration does not
depend on how large the car is in the photograph.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from scipy import ndimage

from nmrlight.camera import Camera


@dataclass(frozen=True)
class Box:
    """Integer pixel box [x0, x1) x [y0, y1) of the full image."""

    x0: int
    y0: int
    x1: int
    y1: int

    @property
    def width(self) -> int:
        return self.x1 - self.x0

    @property
    def height(self) -> int:
        return self.y1 - self.y0

    def intersects(self, other: Box) -> bool:
        return self.x0 < other.x1 and other.x0 < self.x1 and self.y0 < other.y1 and other.y0 < self.y1

    def union(self, other: Box | None) -> Box:
        if other is None:
            return self
        return Box(min(self.x0, other.x0), min(self.y0, other.y0), max(self.x1, other.x1), max(self.y1, other.y1))

    def padded(self, fraction: float, pixels: int, width: int, height: int) -> Box:
        """Grown by `fraction` of its longer side plus `pixels`, clipped to the image."""
        m = int(round(fraction * max(self.width, self.height))) + pixels
        return Box(max(0, self.x0 - m), max(0, self.y0 - m), min(width, self.x1 + m), min(height, self.y1 + m))


def projected_box(vertices_cam: torch.Tensor, camera: Camera) -> Box | None:
    """Bounding box of the projected camera-frame vertices in front of the camera, None when none is."""
    uv, front = camera.project(vertices_cam.detach())
    if not bool(front.any()):
        return None
    uv = uv[front]
    x0, y0 = np.floor(uv.min(0).values.numpy()).astype(int)
    x1, y1 = np.ceil(uv.max(0).values.numpy()).astype(int) + 1
    box = Box(int(max(x0, 0)), int(max(y0, 0)), int(min(x1, camera.width)), int(min(y1, camera.height)))
    return box if box.width > 0 and box.height > 0 else None


def mask_box(mask: np.ndarray) -> Box | None:
    rows = np.flatnonzero(mask.any(1))
    if len(rows) == 0:
        return None
    cols = np.flatnonzero(mask.any(0))
    return Box(int(cols[0]), int(rows[0]), int(cols[-1]) + 1, int(rows[-1]) + 1)


@dataclass
class View:
    """One window at one render scale: its camera and the photo, mask and weights resampled to it."""

    camera: Camera          # full-image camera restricted to the window and scaled
    scale: float
    photo: torch.Tensor     # (H, W) grayscale photo
    mask: torch.Tensor      # (H, W) fraction of each pixel inside the car's mask
    weight: torch.Tensor    # (H, W) 0 where a nearer car's mask hides this car, else 1
    interior: torch.Tensor  # (H, W) bool: eroded mask, where the grayscale term looks
    sigma: float = 0.0      # > 0: blur width of the silhouette comparison (pixels)
    sdf: torch.Tensor | None = None  # (H, W) signed distance to the mask edge (render pixels, > 0 inside)

    cache: dict = field(default_factory=dict)   # tensors derived from the view, computed once

    @property
    def blurred_mask(self) -> torch.Tensor:
        if "blurred_mask" not in self.cache:
            self.cache["blurred_mask"] = gaussian_blur(self.mask, self.sigma)
        return self.cache["blurred_mask"]


def _resample(array: np.ndarray, height: int, width: int) -> torch.Tensor:
    t = torch.as_tensor(np.ascontiguousarray(array), dtype=torch.float32)[None, None]
    if t.shape[-2:] == (height, width):
        return t[0, 0]
    return F.interpolate(t, size=(height, width), mode="area")[0, 0]


def _gaussian_kernel(sigma: float, dtype: torch.dtype) -> tuple[torch.Tensor, int]:
    radius = max(1, int(math.ceil(3 * sigma)))
    x = torch.arange(-radius, radius + 1, dtype=dtype)
    k = torch.exp(-0.5 * (x / sigma) ** 2)
    return k / k.sum(), radius


_BLUR_MATRICES: dict[tuple, torch.Tensor] = {}
MATRIX_BLUR_MAX = 512  # longest side blurred by banded matrix products (faster than conv2d there)


def _blur_matrix(n: int, sigma: float, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """(n, n) banded matrix B with (B x)_i = sum_k g_k x_{i+k}, zero outside [0, n): a 1-D blur."""
    key = (n, sigma, dtype, device)
    matrix = _BLUR_MATRICES.get(key)
    if matrix is None:
        k, radius = _gaussian_kernel(sigma, dtype)
        offset = torch.arange(n)[None, :] - torch.arange(n)[:, None] + radius
        inside = (offset >= 0) & (offset <= 2 * radius)
        matrix = torch.where(inside, k[offset.clamp(0, 2 * radius)], torch.zeros((), dtype=dtype)).to(device)
        if len(_BLUR_MATRICES) > 64:
            _BLUR_MATRICES.clear()
        _BLUR_MATRICES[key] = matrix
    return matrix


def gaussian_blur(image: torch.Tensor, sigma: float) -> torch.Tensor:
    """Separable Gaussian blur of an (H, W) tensor, or a stack (..., H, W) of them (zero padding),
    differentiable.

    Window-sized images go through two products with banded matrices (cached per size): on the CPU
    several times faster than conv2d's forward and backward at these sizes; larger ones use conv2d.
    """
    if sigma <= 0:
        return image
    height, width = image.shape[-2:]
    if max(height, width) <= MATRIX_BLUR_MAX:
        rows = _blur_matrix(height, sigma, image.dtype, image.device)
        cols = _blur_matrix(width, sigma, image.dtype, image.device)
        return rows @ image @ cols.T
    k, radius = _gaussian_kernel(sigma, image.dtype)
    out = F.conv2d(image.reshape(-1, 1, height, width), k.view(1, 1, 1, -1), padding=(0, radius))
    return F.conv2d(out, k.view(1, 1, -1, 1), padding=(radius, 0)).reshape(image.shape)


def make_view(camera: Camera, box: Box, size: int, photo: np.ndarray, mask: np.ndarray,
              hidden: np.ndarray | None, erode: int, sigma: float = 0.0, sdf: bool | np.ndarray = False) -> View:
    """The window `box` rendered with its longer side `size` pixels (never upsampled).

    photo, mask and hidden are the window's crops of the image (box.height, box.width). With
    sigma > 0 the view also holds the mask blurred by a Gaussian of that width (pixels): the
    silhouette term then compares blurred render and blurred mask, a wide basin whose optimum is
    still the exact fit. With sdf, the view also holds the mask's signed distance (render pixels),
    from which `grown_mask` makes the mask dilated or eroded by a (learnable) number of pixels;
    pass the crop's `signed_distance` itself as sdf to reuse it across the views of one window.
    """
    scale = min(1.0, size / max(box.width, box.height))
    cam = camera.window(box.x0, box.y0, box.width, box.height).scaled(scale)
    h, w = cam.height, cam.width
    m = _resample(mask.astype(np.float32), h, w)
    weight = torch.ones(h, w) if hidden is None else 1.0 - _resample(hidden.astype(np.float32), h, w)
    inner = (m > 0.99).numpy()
    if erode > 0:
        inner = ndimage.binary_erosion(inner, iterations=erode)
    inner &= (weight > 0.5).numpy()  # don't-care pixels (ignore masks, other cars) are in no term
    distance = None
    if isinstance(sdf, np.ndarray) or sdf:
        full = sdf if isinstance(sdf, np.ndarray) else signed_distance(mask)
        distance = _resample(full, h, w) * scale
    return View(cam, scale, _resample(photo, h, w), m, weight, torch.from_numpy(inner), sigma, distance)


def signed_distance(mask: np.ndarray) -> np.ndarray:
    """Signed distance (image pixels) from each pixel centre to the mask edge: > 0 inside, < 0 outside.

    Measured to the pixel boundary (a pixel next to the edge is +-0.5), so clamp(sdf + 0.5, 0, 1) is
    the mask and clamp(sdf + d + 0.5, 0, 1) the mask grown by d pixels.
    """
    inside = ndimage.distance_transform_edt(mask) - 0.5
    outside = ndimage.distance_transform_edt(~mask) - 0.5
    return np.where(mask, inside, -outside).astype(np.float32)


def grown_mask(view: View, pixels: torch.Tensor) -> torch.Tensor:
    """The view's mask dilated (pixels > 0) or eroded (< 0) by `pixels` image pixels, soft at the edge."""
    assert view.sdf is not None
    return (view.sdf + pixels * view.scale + 0.5).clamp(0.0, 1.0)


def crop(array: np.ndarray, box: Box) -> np.ndarray:
    return array[box.y0:box.y1, box.x0:box.x1]
