"""Pictures of a fit: the render's contour drawn over the photo crop (report thumbnails, GIFs)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image
from scipy import ndimage

RED = (255, 40, 40)
GREEN = (40, 220, 80)
BLUE = (60, 140, 255)


def contour(silhouette: np.ndarray) -> np.ndarray:
    """Boundary pixels of a boolean silhouette."""
    s = np.asarray(silhouette, bool)
    return s & ~ndimage.binary_erosion(s)


def overlay(photo: np.ndarray | torch.Tensor, contours: list[tuple[np.ndarray, tuple[int, int, int]]]
            ) -> Image.Image:
    """Gray photo (H, W) in [0, 1] as RGB with each (silhouette, colour) contour drawn on it."""
    p = photo.detach().numpy() if torch.is_tensor(photo) else np.asarray(photo)
    rgb = np.repeat((np.clip(p, 0, 1) * 255).astype(np.uint8)[..., None], 3, axis=-1)
    for silhouette, colour in contours:
        s = silhouette.detach().numpy() if torch.is_tensor(silhouette) else silhouette
        rgb[contour(s)] = colour
    return Image.fromarray(rgb)


class GifRecorder:
    """Collects one frame per iteration (render contour in red, mask in green) and writes a GIF."""

    def __init__(self, width: int = 240, max_frames: int = 120) -> None:
        self.width = width
        self.max_frames = max_frames
        self.frames: list[Image.Image] = []

    def __call__(self, view, hard: torch.Tensor) -> None:
        if len(self.frames) >= self.max_frames:
            return
        image = overlay(view.photo, [(view.mask.numpy() > 0.5, GREEN), (hard.numpy(), RED)])
        height = max(1, round(image.height * self.width / image.width))
        self.frames.append(image.resize((self.width, height), Image.NEAREST))

    def save(self, path: str | Path, duration_ms: int = 80) -> None:
        if not self.frames:
            return
        size = self.frames[-1].size
        frames = [f if f.size == size else f.resize(size, Image.NEAREST) for f in self.frames]
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        frames[0].save(path, save_all=True, append_images=frames[1:], duration=duration_ms, loop=0)
