"""The Kaggle `camera/camera_intrinsic.txt` file: one `name = value;` line per intrinsic.

Recognised names: fx, fy, cx, cy (required) and the OpenCV distortion k1, k2, p1, p2, k3 (optional,
all zero in the competition data; a non-zero one becomes the camera's `dist_coeffs`). Other lines,
blank lines and `#` / `//` comments are ignored.
"""

from __future__ import annotations

import math
import re
from pathlib import Path

import numpy as np
import torch

from nmrlight.camera import KAGGLE_HEIGHT, KAGGLE_WIDTH, Camera
from nmrlight.errors import NmrlightError

_LINE = re.compile(r"^\s*([A-Za-z_]\w*)\s*=\s*(.*?)\s*;?\s*$")
_REQUIRED = ("fx", "fy", "cx", "cy")
_DISTORTION = ("k1", "k2", "p1", "p2", "k3")


def read_intrinsics(path: str | Path, width: int = KAGGLE_WIDTH, height: int = KAGGLE_HEIGHT) -> Camera:
    """Parse a camera_intrinsic.txt into a Camera of the given image size."""
    path = Path(path)
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise NmrlightError(f"camera file {path}: file not found") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise NmrlightError(f"camera file {path}: cannot read ({exc})") from None
    values: dict[str, float] = {}
    for lineno, line in enumerate(text.splitlines(), start=1):
        stripped = line.strip()
        if not stripped or stripped.startswith(("#", "//")):
            continue
        match = _LINE.match(stripped)
        if not match or match.group(1) not in _REQUIRED + _DISTORTION:
            continue
        name, raw = match.group(1), match.group(2)
        try:
            value = float(raw)
        except ValueError:
            raise NmrlightError(f"camera file {path}, line {lineno}: {name} = {raw!r} is not a number"
                                ) from None
        if not math.isfinite(value):
            raise NmrlightError(f"camera file {path}, line {lineno}: {name} is not finite")
        values[name] = value
    for name in _REQUIRED:
        if name not in values:
            raise NmrlightError(f"camera file {path}: missing field '{name}'")
    dist = [values.get(name, 0.0) for name in _DISTORTION]
    kwargs = {"dist_coeffs": torch.tensor(dist, dtype=torch.float32)} if any(dist) else {}
    return Camera.from_intrinsics(values["fx"], values["fy"], values["cx"], values["cy"],
                                  int(width), int(height), **kwargs)


def _fmt(value: float, dtype: torch.dtype) -> str:
    # float32 intrinsics print as their shortest float32 text (2304.5479, not 2304.5478515625)
    return str(np.float32(value)) if dtype == torch.float32 else repr(float(value))


def write_intrinsics(camera: Camera, path: str | Path) -> None:
    """Write `camera` in the camera_intrinsic.txt format (the image size is not stored)."""
    dtype = camera.K.dtype
    lines = [f"{name} = {_fmt(getattr(camera, name), dtype)};" for name in _REQUIRED]
    dist = camera.dist_coeffs.tolist() if camera.dist_coeffs is not None else [0.0] * 5
    lines += [f"{name} = {_fmt(v, dtype)};" for name, v in zip(_DISTORTION, dist, strict=True)]
    Path(path).write_text("\n".join(lines) + "\n")
