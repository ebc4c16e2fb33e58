"""Photographs and rendered images as float32 arrays in [0, 1], read and written with Pillow."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from nmrlight.errors import NmrlightError


def open_image(path: str | Path) -> Image.Image:
    """Open an image file (lazily: only the header is read), NmrlightError when missing or unreadable."""
    path = Path(path)
    if not path.is_file():
        raise NmrlightError(f"image {path}: file not found")
    try:
        return Image.open(path)
    except (UnidentifiedImageError, OSError) as exc:
        raise NmrlightError(f"image {path}: cannot read ({exc})") from None


def read_image(path: str | Path, mode: str = "gray") -> np.ndarray:
    """Read an image as float32 in [0, 1]: (H, W) for mode 'gray', (H, W, 3) for 'rgb'."""
    if mode not in ("gray", "rgb"):
        raise NmrlightError(f"image mode must be 'gray' or 'rgb', got {mode!r}")
    image = open_image(path)
    try:
        with image:
            if image.mode.startswith("I;16") or image.mode == "I":  # 16-bit gray
                data = np.asarray(image, dtype=np.float32) / 65535.0
                data = np.clip(data, 0.0, 1.0)
                return data if mode == "gray" else np.repeat(data[..., None], 3, axis=-1)
            converted = image.convert("L" if mode == "gray" else "RGB")
            return np.asarray(converted, dtype=np.float32) / 255.0
    except OSError as exc:
        raise NmrlightError(f"image {path}: cannot decode ({exc})") from None


def write_image(path: str | Path, array: np.ndarray) -> None:
    """Write a gray (H, W) or RGB (H, W, 3) image, float in [0, 1] (clipped) or uint8; png or jpg."""
    path = Path(path)
    data = np.asarray(array)
    if data.ndim == 3 and data.shape[-1] == 1:
        data = data[..., 0]
    if not (data.ndim == 2 or (data.ndim == 3 and data.shape[-1] == 3)):
        raise NmrlightError(f"image {path}: expected (H, W) or (H, W, 3) data, got shape {data.shape}")
    if data.dtype != np.uint8:
        if data.dtype == bool or not np.issubdtype(data.dtype, np.number):
            data = data.astype(np.float32)
        data = np.nan_to_num(data.astype(np.float64), nan=0.0)
        data = np.round(np.clip(data, 0.0, 1.0) * 255.0).astype(np.uint8)
    suffix = path.suffix.lower()
    if suffix not in (".png", ".jpg", ".jpeg"):
        raise NmrlightError(f"image {path}: only .png and .jpg are written")
    kwargs = {"quality": 95} if suffix in (".jpg", ".jpeg") else {}
    try:
        Image.fromarray(data).save(path, **kwargs)
    except OSError as exc:
        raise NmrlightError(f"image {path}: cannot write ({exc})") from None
