"""Rotations: the Kaggle angles (v1, v2, v3), the official metric's rotation error, SO(3) exp/log, 6D.

Kaggle projection rotation (shared/CONVENTIONS.md): R = Rz(v3) @ Rx(v1) @ Ry(v2), standard right-handed
elementary rotations, applied to the y-flipped model vertices. The metric's rotation error uses scipy's
extrinsic 'xyz' Euler angles instead; both are here. Functions taking a `torch.Tensor` stay
differentiable; numpy in gives numpy out.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from nmrlight.errors import NmrlightError

Array = torch.Tensor | np.ndarray


def _to_torch(x: Array) -> tuple[torch.Tensor, bool]:
    if torch.is_tensor(x):
        return x, False
    t = torch.as_tensor(np.asarray(x, dtype=np.float64))
    return t, True


def _back(x: torch.Tensor, was_numpy: bool) -> Array:
    return x.detach().cpu().numpy() if was_numpy else x


def _check_last(x: torch.Tensor, shape: tuple[int, ...], name: str) -> None:
    if tuple(x.shape[x.dim() - len(shape):]) != shape or x.dim() < len(shape):
        dims = ", ".join(map(str, shape))
        raise NmrlightError(f"{name} must have shape (..., {dims}), got {tuple(x.shape)}")


# --- Kaggle angles ------------------------------------------------------------------------------------
def kaggle_to_matrix(angles: Array) -> Array:
    """Angles (..., 3) = (v1, v2, v3) -> rotation (..., 3, 3) = Rz(v3) @ Rx(v1) @ Ry(v2)."""
    a, was_numpy = _to_torch(angles)
    _check_last(a, (3,), "angles")
    ca, cb, cc = torch.cos(a).unbind(-1)
    sa, sb, sc = torch.sin(a).unbind(-1)
    # rows of Rz(c) @ Rx(a) @ Ry(b), multiplied out
    R = torch.stack([
        cc * cb - sc * sa * sb, -sc * ca, cc * sb + sc * sa * cb,
        sc * cb + cc * sa * sb, cc * ca, sc * sb - cc * sa * cb,
        -ca * sb, sa, ca * cb,
    ], dim=-1).reshape(*a.shape[:-1], 3, 3)
    return _back(R, was_numpy)


def _wrap_near(angle: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
    """angle + 2 pi k closest to reference."""
    return angle - 2 * math.pi * torch.round((angle - reference) / (2 * math.pi))


def matrix_to_kaggle(R: Array, reference: Array | None = None, eps: float = 1e-9) -> Array:
    """Exact inverse of `kaggle_to_matrix`: rotation (..., 3, 3) -> angles (..., 3).

    Two angle triples give every rotation: (v1, v2, v3) and (pi - v1, v2 + pi, v3 + pi). Without
    `reference`, v1 lies in [-pi/2, pi/2] and v2, v3 in [-pi, pi]. With `reference` angles (..., 3),
    the branch and the 2 pi wraps of each angle nearest to the reference are chosen, so tracking an
    angle near +-pi does not jump. At gimbal lock (cos v1 ~ 0) only v2 -+ v3 is defined: v2 is taken
    from the reference (0 without one) and v3 solved for.
    """
    M, was_numpy = _to_torch(R)
    _check_last(M, (3, 3), "R")
    r20, r21, r22 = M[..., 2, 0], M[..., 2, 1], M[..., 2, 2]
    cos_a = torch.sqrt(r20 * r20 + r22 * r22)
    a = torch.atan2(r21, cos_a)
    locked = cos_a < eps
    b = torch.atan2(-r20, r22)
    c = torch.atan2(-M[..., 0, 1], M[..., 1, 1])
    ref = None
    if reference is not None:
        ref = reference if torch.is_tensor(reference) else torch.as_tensor(np.asarray(reference, np.float64))
        ref = ref.to(M).expand(*M.shape[:-2], 3)
    if bool(locked.any()):
        # sin v1 = +1: R00 = cos(v3 + v2), R10 = sin(v3 + v2); sin v1 = -1: cos/sin(v3 - v2)
        b_lock = ref[..., 1] if ref is not None else torch.zeros_like(b)
        sign = torch.where(r21 >= 0, torch.ones_like(r21), -torch.ones_like(r21))
        sum_or_diff = torch.atan2(M[..., 1, 0], M[..., 0, 0])
        b = torch.where(locked, b_lock, b)
        c = torch.where(locked, sum_or_diff - sign * b_lock, c)
    first = torch.stack([a, b, c], dim=-1)
    if ref is None:
        # wrap into [-pi, pi] (the gimbal branch may leave v3 outside)
        return _back(torch.remainder(first + math.pi, 2 * math.pi) - math.pi
                     if bool(locked.any()) else first, was_numpy)
    second = torch.stack([math.pi - a, b + math.pi, c + math.pi], dim=-1)
    second = torch.where(locked[..., None], first, second)  # at gimbal lock the reference fixed v2 already
    first = _wrap_near(first, ref)
    second = _wrap_near(second, ref)
    d1 = ((first - ref) ** 2).sum(-1)
    d2 = ((second - ref) ** 2).sum(-1)
    return _back(torch.where((d2 < d1)[..., None], second, first), was_numpy)


# --- errors -------------------------------------------------------------------------------------------
def metric_rotation_error_deg(pred_angles: Array, gt_angles: Array) -> np.ndarray:
    """The official metric's rotation distance in degrees, for (..., 3) Kaggle angles, vectorised.

    scipy: q = Rotation.from_euler('xyz', [v1, v2, v3]); diff = q_pred.inv() * q_gt;
    angle = degrees(2 acos(clip(w, -1, 1))), folded to 360 - angle above 180.
    """
    from scipy.spatial.transform import Rotation

    p = np.asarray(pred_angles.detach().cpu() if torch.is_tensor(pred_angles) else pred_angles, np.float64)
    g = np.asarray(gt_angles.detach().cpu() if torch.is_tensor(gt_angles) else gt_angles, np.float64)
    p, g = np.broadcast_arrays(p, g)
    if p.shape[-1:] != (3,):
        raise NmrlightError(f"angles must have shape (..., 3), got {p.shape}")
    shape = p.shape[:-1]
    if p.size == 0:
        return np.zeros(shape)
    q_pred = Rotation.from_euler("xyz", p.reshape(-1, 3))
    q_gt = Rotation.from_euler("xyz", g.reshape(-1, 3))
    w = np.clip((q_pred.inv() * q_gt).as_quat()[:, 3], -1.0, 1.0)
    angle = np.degrees(2.0 * np.arccos(w))
    angle = np.where(angle > 180.0, 360.0 - angle, angle)
    return angle.reshape(shape)


def _skew_vector(R: torch.Tensor) -> torch.Tensor:
    return torch.stack([R[..., 2, 1] - R[..., 1, 2], R[..., 0, 2] - R[..., 2, 0],
                        R[..., 1, 0] - R[..., 0, 1]], dim=-1)


def _angle(R: torch.Tensor) -> torch.Tensor:
    """Rotation angle in [0, pi], from atan2(|skew|, trace - 1): accurate near 0 and pi."""
    trace = R[..., 0, 0] + R[..., 1, 1] + R[..., 2, 2]
    return torch.atan2(torch.linalg.vector_norm(_skew_vector(R), dim=-1), trace - 1.0)


def geodesic_angle_deg(Ra: Array, Rb: Array) -> Array:
    """Angle of the rotation taking Ra to Rb, degrees in [0, 180] (..., 3, 3) -> (...)."""
    A, was_numpy = _to_torch(Ra)
    B, _ = _to_torch(Rb)
    B = B.to(A)
    _check_last(A, (3, 3), "Ra")
    _check_last(B, (3, 3), "Rb")
    return _back(torch.rad2deg(_angle(A.transpose(-1, -2) @ B)), was_numpy)


# --- SO(3) exp / log ----------------------------------------------------------------------------------
def _hat(w: torch.Tensor) -> torch.Tensor:
    x, y, z = w.unbind(-1)
    o = torch.zeros_like(x)
    return torch.stack([o, -z, y, z, o, -x, -y, x, o], dim=-1).reshape(*w.shape[:-1], 3, 3)


def so3_exp(omega: Array) -> Array:
    """Axis-angle (..., 3) -> rotation (..., 3, 3) by Rodrigues; Taylor series near 0 (finite gradients)."""
    w, was_numpy = _to_torch(omega)
    _check_last(w, (3,), "omega")
    theta2 = (w * w).sum(-1)
    small = theta2 < 1e-6
    safe2 = torch.where(small, torch.ones_like(theta2), theta2)
    theta = torch.sqrt(safe2)
    a = torch.where(small, 1 - theta2 / 6 + theta2 * theta2 / 120, torch.sin(theta) / theta)
    b = torch.where(small, 0.5 - theta2 / 24 + theta2 * theta2 / 720, (1 - torch.cos(theta)) / safe2)
    K = _hat(w)
    eye = torch.eye(3, dtype=w.dtype, device=w.device).expand_as(K)
    R = eye + a[..., None, None] * K + b[..., None, None] * (K @ K)
    return _back(R, was_numpy)


def so3_log(R: Array) -> Array:
    """Rotation (..., 3, 3) -> axis-angle (..., 3) with angle in [0, pi]; accurate near 0 and near pi."""
    M, was_numpy = _to_torch(R)
    _check_last(M, (3, 3), "R")
    theta = _angle(M)
    skew = _skew_vector(M)  # = 2 sin(theta) * axis
    sin_t = torch.sin(theta)
    small = theta < 1e-4
    safe_sin = torch.where(small, torch.ones_like(sin_t), sin_t)
    factor = torch.where(small, 0.5 + theta * theta / 12, theta / (2 * safe_sin))
    near_zero_to_mid = factor[..., None] * skew
    # near pi: the symmetric part is cos(t) I + (1 - cos t) n n^T; read n from its largest column
    cos_t = torch.cos(theta)
    sym = 0.5 * (M + M.transpose(-1, -2))
    eye = torch.eye(3, dtype=M.dtype, device=M.device)
    nn = (sym - cos_t[..., None, None] * eye) / (1 - cos_t).clamp_min(1e-12)[..., None, None]
    diag = torch.diagonal(nn, dim1=-2, dim2=-1)
    k = diag.argmax(-1, keepdim=True)
    column = torch.gather(nn, -1, k[..., None].expand(*nn.shape[:-1], 1))[..., 0]
    axis = column / torch.sqrt(torch.gather(diag, -1, k).clamp_min(1e-12))
    sign = torch.where((axis * skew).sum(-1, keepdim=True) < 0, -1.0, 1.0).to(M)
    near_pi = sign * axis * theta[..., None]
    use_pi = (cos_t < -0.5)[..., None]
    return _back(torch.where(use_pi, near_pi, near_zero_to_mid), was_numpy)


# --- 6D representation --------------------------------------------------------------------------------
def rotation_6d_to_matrix(x: Array) -> Array:
    """6D (..., 6) = (first column a1, second column a2) -> rotation (..., 3, 3) by Gram-Schmidt.

    Convention (Zhou et al. 2019): the six numbers are the first two COLUMNS of the matrix;
    b1 = a1/|a1|, b2 = normalised (a2 - (b1.a2) b1), b3 = b1 x b2; R = [b1 b2 b3] as columns.
    """
    t, was_numpy = _to_torch(x)
    _check_last(t, (6,), "rotation 6d")
    a1, a2 = t[..., :3], t[..., 3:]
    b1 = torch.nn.functional.normalize(a1, dim=-1)
    b2 = torch.nn.functional.normalize(a2 - (b1 * a2).sum(-1, keepdim=True) * b1, dim=-1)
    b3 = torch.linalg.cross(b1, b2, dim=-1)
    return _back(torch.stack([b1, b2, b3], dim=-1), was_numpy)


def matrix_to_rotation_6d(R: Array) -> Array:
    """Rotation (..., 3, 3) -> 6D (..., 6): its first two columns, concatenated."""
    M, was_numpy = _to_torch(R)
    _check_last(M, (3, 3), "R")
    return _back(torch.cat([M[..., :, 0], M[..., :, 1]], dim=-1), was_numpy)
