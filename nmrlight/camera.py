"""Pinhole camera with exact sub-window and scale rendering, near/far planes and OpenCV distortion.

Conventions (shared/CONVENTIONS.md): camera frame x right, y down, z forward, metres. Pixel (c, r)
covers [c, c+1) x [r, r+1), its centre is (c + 0.5, r + 0.5); a point X projects to
u = fx X/Z + cx, v = fy Y/Z + cy in continuous pixel coordinates.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch

from nmrlight.errors import NmrlightError

KAGGLE_FX = 2304.5479
KAGGLE_FY = 2305.8757
KAGGLE_CX = 1686.2379
KAGGLE_CY = 1354.9849
KAGGLE_WIDTH = 3384
KAGGLE_HEIGHT = 2710


def _as_intrinsics(K: torch.Tensor | list, dtype: torch.dtype | None = None) -> torch.Tensor:
    K = torch.as_tensor(K, dtype=dtype if dtype is not None else torch.float32)
    if K.shape != (3, 3):
        raise NmrlightError(f"camera K must be a 3x3 matrix, got shape {tuple(K.shape)}")
    if not torch.isfinite(K).all():
        raise NmrlightError("camera K has non-finite entries")
    if abs(float(torch.linalg.det(K.detach().double()))) < 1e-12:
        raise NmrlightError(f"camera K is singular: {K.tolist()}")
    return K


@dataclass(frozen=True)
class Camera:
    """Intrinsics K (3x3 tensor, may require grad), image size in pixels and clipping planes.

    `dist_coeffs` are OpenCV's (k1, k2, p1, p2, k3) applied to normalised coordinates before K, as
    in the Neural Mesh Renderer; triangles are rasterised between their distorted vertices.
    """

    K: torch.Tensor
    width: int
    height: int
    near: float = 0.1
    far: float = 1000.0
    dist_coeffs: torch.Tensor | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "K", _as_intrinsics(self.K, self.K.dtype if torch.is_tensor(self.K) else None))
        for name in ("width", "height"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
                raise NmrlightError(f"camera {name} must be a positive integer, got {value!r}")
        if not (0 < self.near < self.far):
            raise NmrlightError(f"camera planes need 0 < near < far, got near={self.near}, far={self.far}")
        if self.dist_coeffs is not None:
            d = torch.as_tensor(self.dist_coeffs, dtype=self.K.dtype)
            if d.shape != (5,):
                raise NmrlightError(f"dist_coeffs must hold 5 numbers (k1, k2, p1, p2, k3), got {tuple(d.shape)}")
            object.__setattr__(self, "dist_coeffs", d)

    # --- constructors -------------------------------------------------------------------------------
    @staticmethod
    def from_intrinsics(fx: float, fy: float, cx: float, cy: float, width: int, height: int,
                        **kwargs) -> Camera:
        """A camera from focal lengths and principal point in pixels."""
        K = torch.tensor([[fx, 0.0, cx], [0.0, fy, cy], [0.0, 0.0, 1.0]], dtype=torch.float64)
        return Camera(K.float(), width, height, **kwargs)

    @staticmethod
    def kaggle(**kwargs) -> Camera:
        """The PKU/Baidu competition camera, full 3384 x 2710 frame."""
        return Camera.from_intrinsics(KAGGLE_FX, KAGGLE_FY, KAGGLE_CX, KAGGLE_CY,
                                      KAGGLE_WIDTH, KAGGLE_HEIGHT, **kwargs)

    # --- derived cameras ----------------------------------------------------------------------------
    def window(self, x0: int, y0: int, width: int, height: int) -> Camera:
        """The same camera restricted to the pixels [x0, x0+width) x [y0, y0+height)."""
        shift = torch.zeros(3, 3, dtype=self.K.dtype, device=self.K.device)
        shift[0, 2] = float(x0)
        shift[1, 2] = float(y0)
        return replace(self, K=self.K - shift, width=int(width), height=int(height))

    def scaled(self, scale: float) -> Camera:
        """The same view at `scale` times the resolution: fx, fy, cx, cy multiply by `scale`."""
        if not scale > 0:
            raise NmrlightError(f"camera scale must be positive, got {scale}")
        factor = torch.tensor([scale, scale, 1.0], dtype=self.K.dtype, device=self.K.device)
        width = max(1, int(round(self.width * scale)))
        height = max(1, int(round(self.height * scale)))
        return replace(self, K=self.K * factor[:, None], width=width, height=height)

    def to(self, device: torch.device | str) -> Camera:
        d = self.dist_coeffs.to(device) if self.dist_coeffs is not None else None
        return replace(self, K=self.K.to(device), dist_coeffs=d)

    @property
    def device(self) -> torch.device:
        return self.K.device

    @property
    def fx(self) -> float:
        return float(self.K[0, 0])

    @property
    def fy(self) -> float:
        return float(self.K[1, 1])

    @property
    def cx(self) -> float:
        return float(self.K[0, 2])

    @property
    def cy(self) -> float:
        return float(self.K[1, 2])

    # --- projection ---------------------------------------------------------------------------------
    def project(self, points: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Camera-frame points (..., 3) -> pixel coordinates (..., 2) and a mask of points in front.

        Points closer than `near` (or behind the camera) get finite placeholder coordinates and
        zero gradients; callers must drop them using the returned mask.
        """
        z = points[..., 2]
        in_front = z > self.near
        safe_z = torch.where(in_front, z, torch.full_like(z, self.near))
        xn = torch.where(in_front, points[..., 0], torch.zeros_like(z)) / safe_z
        yn = torch.where(in_front, points[..., 1], torch.zeros_like(z)) / safe_z
        if self.dist_coeffs is not None:
            xn, yn = distort(xn, yn, self.dist_coeffs.to(points))
        K = self.K.to(points.dtype)
        u = K[0, 0] * xn + K[0, 1] * yn + K[0, 2]
        v = K[1, 1] * yn + K[1, 2]
        return torch.stack([u, v], dim=-1), in_front


def distort(x: torch.Tensor, y: torch.Tensor, coeffs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """OpenCV's radial-tangential model on normalised coordinates: coeffs = (k1, k2, p1, p2, k3)."""
    k1, k2, p1, p2, k3 = coeffs.unbind(0)
    r2 = x * x + y * y
    radial = 1 + k1 * r2 + k2 * r2 * r2 + k3 * r2 * r2 * r2
    xd = x * radial + 2 * p1 * x * y + p2 * (r2 + 2 * x * x)
    yd = y * radial + p1 * (r2 + 2 * y * y) + 2 * p2 * x * y
    return xd, yd
