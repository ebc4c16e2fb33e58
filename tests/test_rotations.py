"""Kaggle angle conventions, SO(3) helpers and the projection worked example on a real mesh."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy.spatial.transform import Rotation

from nmrlight.camera import Camera
from nmrlight.io.cars import read_car_json
from nmrlight.rotations import (
    geodesic_angle_deg,
    kaggle_to_matrix,
    matrix_to_kaggle,
    matrix_to_rotation_6d,
    metric_rotation_error_deg,
    rotation_6d_to_matrix,
    so3_exp,
    so3_log,
)


def _rx(a):
    c, s = math.cos(a), math.sin(a)
    return np.array([[1, 0, 0], [0, c, -s], [0, s, c]])


def _ry(a):
    c, s = math.cos(a), math.sin(a)
    return np.array([[c, 0, s], [0, 1, 0], [-s, 0, c]])


def _rz(a):
    c, s = math.cos(a), math.sin(a)
    return np.array([[c, -s, 0], [s, c, 0], [0, 0, 1]])


def euler_to_rot(yaw, pitch, roll):
    """The public kernels' helper: Ry(yaw) @ Rx(pitch) @ Rz(roll)."""
    return _ry(yaw) @ _rx(pitch) @ _rz(roll)


def _random_angles(n, seed=0):
    rng = np.random.default_rng(seed)
    return np.stack([rng.uniform(-np.pi / 2, np.pi / 2, n), rng.uniform(-np.pi, np.pi, n),
                     rng.uniform(-np.pi, np.pi, n)], axis=-1)


def test_kaggle_matrix_matches_public_kernel_and_elementary_product():
    for v1, v2, v3 in _random_angles(20):
        R = kaggle_to_matrix(np.array([v1, v2, v3]))
        assert isinstance(R, np.ndarray)
        np.testing.assert_allclose(R, euler_to_rot(-v2, -v1, -v3).T, atol=1e-14)
        np.testing.assert_allclose(R, _rz(v3) @ _rx(v1) @ _ry(v2), atol=1e-14)


def test_kaggle_matrix_torch_is_differentiable_and_batched():
    a = torch.tensor(_random_angles(6).reshape(2, 3, 3), requires_grad=True)
    R = kaggle_to_matrix(a)
    assert torch.is_tensor(R) and R.shape == (2, 3, 3, 3)
    np.testing.assert_allclose(R.detach().numpy(), kaggle_to_matrix(a.detach().numpy()), atol=0)
    R.sum().backward()
    assert torch.isfinite(a.grad).all() and a.grad.abs().sum() > 0


def test_projection_worked_example(apollo_models):
    mesh = read_car_json(apollo_models / "baojun-310-2017.json")
    cam = Camera.kaggle()
    angles = np.array([0.15, -2.0, -3.1])
    t = np.array([-3.0, 6.0, 12.0])
    # the car centre: u = fx x / z + cx
    uv, ok = cam.project(torch.tensor(t[None], dtype=torch.float64))
    assert ok.all()
    by_hand = [2304.5479 * -3 / 12 + 1686.2379, 2305.8757 * 6 / 12 + 1354.9849]  # (1110.1009, 2507.9228)
    np.testing.assert_allclose(uv[0].numpy(), by_hand, atol=1e-3)  # K is stored as float32
    # every vertex: hand formula with plain numpy vs the public-kernel rotation vs nmrlight
    v = mesh.vertices * np.array([1.0, -1.0, 1.0])
    np.testing.assert_array_equal(mesh.object_vertices(), v)
    X = v @ (_rz(angles[2]) @ _rx(angles[0]) @ _ry(angles[1])).T + t
    hand = np.stack([2304.5479 * X[:, 0] / X[:, 2] + 1686.2379,
                     2305.8757 * X[:, 1] / X[:, 2] + 1354.9849], -1)
    X_kernel = (euler_to_rot(-angles[1], -angles[0], -angles[2]).T @ v.T).T + t
    np.testing.assert_allclose(X_kernel, X, atol=1e-12)
    X_ours = torch.tensor(mesh.object_vertices()) @ torch.tensor(kaggle_to_matrix(angles)).T + torch.tensor(t)
    uv_all, ok_all = cam.project(X_ours)
    assert ok_all.all()
    np.testing.assert_allclose(uv_all.numpy(), hand, atol=2e-3)
    # the car is about 14 m away and a few metres long: it spans a few hundred pixels
    span = hand.max(0) - hand.min(0)
    assert 150 < span[0] < 800 and 50 < span[1] < 500


def test_matrix_to_kaggle_round_trip_full_range():
    a = _random_angles(2000, seed=1)
    back = matrix_to_kaggle(kaggle_to_matrix(a))
    np.testing.assert_allclose(back, a, atol=1e-12)
    assert np.all(np.abs(back[:, 0]) <= np.pi / 2 + 1e-12)


def test_matrix_to_kaggle_reference_branch_and_wrap():
    a = _random_angles(500, seed=2)
    R = kaggle_to_matrix(a)
    # the other branch (pi - v1, v2 + pi, v3 + pi) gives the same rotation and is chosen near it
    other = np.stack([np.pi - a[:, 0], a[:, 1] + np.pi, a[:, 2] + np.pi], -1)
    np.testing.assert_allclose(kaggle_to_matrix(other), R, atol=1e-14)
    np.testing.assert_allclose(matrix_to_kaggle(R, reference=other + 0.05), other, atol=1e-12)
    # v3 near +-pi: an angle just past pi stays just past pi when the reference is there
    angles = np.array([0.15, 3.0, math.pi + 0.02])
    got = matrix_to_kaggle(kaggle_to_matrix(angles), reference=np.array([0.15, 3.0, math.pi - 0.01]))
    np.testing.assert_allclose(got, angles, atol=1e-12)
    assert matrix_to_kaggle(kaggle_to_matrix(angles))[2] == pytest.approx(-math.pi + 0.02, abs=1e-12)
    # many turns away: the wraps follow the reference
    far = matrix_to_kaggle(kaggle_to_matrix(angles), reference=angles + np.array([0, 4 * np.pi, -2 * np.pi]))
    np.testing.assert_allclose(far, angles + np.array([0, 4 * np.pi, -2 * np.pi]), atol=1e-12)


def test_matrix_to_kaggle_gimbal_lock():
    for v1 in (math.pi / 2, -math.pi / 2):
        angles = np.array([v1, 0.7, -1.2])
        R = kaggle_to_matrix(angles)
        out = matrix_to_kaggle(R)
        assert np.isfinite(out).all()
        np.testing.assert_allclose(kaggle_to_matrix(out), R, atol=1e-12)
        np.testing.assert_allclose(matrix_to_kaggle(R, reference=angles), angles, atol=1e-9)


def test_metric_rotation_error_matches_scipy_and_wraps():
    a, b = _random_angles(50, seed=3), _random_angles(50, seed=4)
    got = metric_rotation_error_deg(a, b)
    for p, g, e in zip(a, b, got, strict=True):
        diff = Rotation.from_euler("xyz", p).inv() * Rotation.from_euler("xyz", g)
        w = np.degrees(2 * math.acos(np.clip(diff.as_quat()[3], -1, 1)))
        assert e == pytest.approx(360 - w if w > 180 else w, abs=1e-9)
    err = metric_rotation_error_deg(np.array([0.15, math.pi - 0.01, 3.1]),
                                    np.array([0.15, -math.pi + 0.01, 3.1]))
    assert err == pytest.approx(math.degrees(0.02), abs=1e-6)
    assert metric_rotation_error_deg(np.array([0, 0, 0.0]), np.array([0, 0, math.radians(12)])) == \
        pytest.approx(12.0, abs=1e-9)


def test_geodesic_angle():
    a = _random_angles(100, seed=5)
    axis = np.random.default_rng(6).normal(size=(100, 3))
    axis /= np.linalg.norm(axis, axis=-1, keepdims=True)
    theta = np.linspace(0, np.pi, 100)
    R = kaggle_to_matrix(a)
    R2 = R @ so3_exp(axis * theta[:, None])
    np.testing.assert_allclose(geodesic_angle_deg(R, R2), np.degrees(theta), atol=1e-9)
    tiny = so3_exp(np.array([1e-9, 0.0, 0.0]))
    assert geodesic_angle_deg(np.eye(3), tiny) == pytest.approx(np.degrees(1e-9), rel=1e-6)


def test_so3_exp_log_round_trip_and_gradients():
    rng = np.random.default_rng(7)
    w = rng.normal(size=(500, 3))
    w *= rng.uniform(0, np.pi - 1e-6, (500, 1)) / np.linalg.norm(w, axis=-1, keepdims=True)
    w[:3] = [[0, 0, 0], [1e-8, -2e-8, 0], [0, 0, np.pi - 1e-9]]
    R = so3_exp(torch.tensor(w))
    np.testing.assert_allclose(torch.linalg.det(R).numpy(), 1.0, atol=1e-12)
    np.testing.assert_allclose(so3_log(R).numpy(), w, atol=1e-7)
    np.testing.assert_allclose(R[7].numpy(), Rotation.from_rotvec(w[7]).as_matrix(), atol=1e-12)
    np.testing.assert_allclose(so3_exp(w[10:12]), Rotation.from_rotvec(w[10:12]).as_matrix(), atol=1e-12)
    z = torch.zeros(3, dtype=torch.float64, requires_grad=True)
    R0 = so3_exp(z)
    R0[0, 1].backward()  # d R01 / d w_z = -1 at the identity
    np.testing.assert_allclose(z.grad.numpy(), [0, 0, -1])


def test_rotation_6d():
    R = kaggle_to_matrix(torch.tensor(_random_angles(10, seed=8)))
    x = matrix_to_rotation_6d(R)
    assert x.shape == (10, 6)
    np.testing.assert_allclose(x[:, :3].numpy(), R[:, :, 0].numpy())  # first column first
    np.testing.assert_allclose(rotation_6d_to_matrix(x).numpy(), R.numpy(), atol=1e-12)
    noisy = rotation_6d_to_matrix(torch.randn(10, 6, dtype=torch.float64))
    eye = np.broadcast_to(np.eye(3), (10, 3, 3))
    np.testing.assert_allclose((noisy @ noisy.transpose(1, 2)).numpy(), eye, atol=1e-12)
    np.testing.assert_allclose(torch.linalg.det(noisy).numpy(), 1.0, atol=1e-12)
