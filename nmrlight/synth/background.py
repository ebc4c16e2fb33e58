"""Background pictures: the road plane with lane marks, kerbs, buildings and sky."""

from __future__ import annotations

import math

import numpy as np
import torch

from nmrlight.camera import Camera


def _noise(rng: np.random.Generator, height: int, width: int, cells: tuple[int, int]) -> np.ndarray:
    """Smooth value noise in [-1, 1] of size (H, W) from a coarse random grid (bilinear)."""
    grid = torch.as_tensor(rng.uniform(-1, 1, (1, 1, *cells)), dtype=torch.float32)
    up = torch.nn.functional.interpolate(grid, size=(height, width), mode="bilinear", align_corners=False)
    return up[0, 0].numpy()


def background(camera: Camera, rng: np.random.Generator, pitch: float, cam_h: float, ego: float,
               rgb: bool) -> np.ndarray:
    """A road scene (C, H, W) in [0, 1]: asphalt with dashed lane marks and blotches, kerbs, buildings, sky.

    The road is the plane `cam_h` below a camera pitched down by `pitch`, lanes offset by `ego`.
    """
    h, w = camera.height, camera.width
    u = (np.arange(w, dtype=np.float32) + 0.5 - camera.cx) / camera.fx
    v = (np.arange(h, dtype=np.float32) + 0.5 - camera.cy) / camera.fy
    c, s = math.cos(pitch), math.sin(pitch)
    # ray (u, v, 1) in the camera frame -> world (level) frame: Rx(p) @ ray
    wy = c * v - s                                   # (H,)
    wz = s * v + c                                   # (H,)
    ground = wy > 1e-4
    lam = np.where(ground, cam_h / np.maximum(wy, 1e-4), 0.0).astype(np.float32)
    xw = lam[:, None] * u[None, :]
    zw = (lam * wz)[:, None] * np.ones_like(u)[None, :]
    road_half = rng.uniform(8.0, 12.0)
    coarse = _noise(rng, h, w, (12, 16))
    fine = _noise(rng, h, w, (max(2, h // 24), max(2, w // 24)))
    base = 0.33 + rng.uniform(-0.05, 0.05)
    road = base + 0.05 * coarse + 0.03 * fine
    lane = np.abs(np.mod(xw - ego - 1.75, 3.5) - 1.75)
    mark = (lane < 0.08) & (np.mod(zw, 10.0) < 4.0) & (np.abs(xw - ego) < road_half - 1.0)
    road = np.where(mark, 0.8, road)
    kerb = np.abs(xw - ego) > road_half
    road = np.where(kerb, 0.5 + 0.05 * fine, road)
    haze = np.exp(-zw / 200.0)
    road = road * haze + 0.6 * (1 - haze)
    # above the horizon: buildings as vertical bands of random grey over a bright sky gradient
    rows = np.arange(h)[:, None] / max(h - 1, 1)
    sky = 0.75 + 0.1 * (1 - rows) + 0.02 * coarse
    cols = np.arange(w)
    edges = np.sort(rng.integers(0, w, rng.integers(4, 12)))
    band = np.searchsorted(edges, cols)
    band_grey = rng.uniform(0.3, 0.7, len(edges) + 1)[band]
    band_top = rng.uniform(0.0, 0.8, len(edges) + 1)[band]
    horizon = (camera.cy + camera.fy * math.tan(pitch)) / h
    building = rows > band_top[None, :] * np.clip(horizon, 0.05, 1.0)
    upper = np.where(building, band_grey[None, :] + 0.04 * fine, sky)
    gray = np.where(ground[:, None], road, upper)
    # blotches: dark ellipses (shadows, patches)
    for _ in range(rng.integers(3, 9)):
        cy_, cx_ = rng.uniform(0, h), rng.uniform(0, w)
        ry, rx = rng.uniform(0.01, 0.06) * h, rng.uniform(0.02, 0.12) * w
        y0, y1 = int(max(0, cy_ - ry)), int(min(h, cy_ + ry + 1))
        x0, x1 = int(max(0, cx_ - rx)), int(min(w, cx_ + rx + 1))
        yy = ((np.arange(y0, y1) - cy_) / ry)[:, None]
        xx = ((np.arange(x0, x1) - cx_) / rx)[None, :]
        inside = yy ** 2 + xx ** 2 < 1
        gray[y0:y1, x0:x1] = np.where(inside, gray[y0:y1, x0:x1] * rng.uniform(0.6, 0.9), gray[y0:y1, x0:x1])
    gray = np.clip(gray, 0.0, 1.0).astype(np.float32)
    if not rgb:
        return gray[None]
    tint_road = np.array([1.0, 1.0, 1.04])
    tint_sky = np.array([0.9, 0.97, 1.1])
    tint = np.where(ground[None, :, None], tint_road[:, None, None], tint_sky[:, None, None])
    return np.clip(gray[None] * tint, 0.0, 1.0).astype(np.float32)

