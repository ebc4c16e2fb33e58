"""Ground plane per photograph: robust fit, where a ray meets it, and the depth fusion."""

from __future__ import annotations

import math

import numpy as np
import torch

from nmrlight.io.poses import CarPose
from nmrlight.procedural import car_for_model
from nmrlight.refine.config import RefineConfig
from nmrlight.refine.ground import apply_ground, contact_point, fit_plane, ground_fixes, plane_depth
from nmrlight.refine.prepare import _Car
from nmrlight.refine.result import CarResult
from nmrlight.rotations import kaggle_to_matrix

PLANE = np.array([1.75, 0.16, 0.04])   # y = a + b z + c x, camera frame
DROP = -0.72


def _rotation(heading: float) -> np.ndarray:
    return kaggle_to_matrix(np.array([0.16, heading, math.pi]))


def _car_on_plane(x: float, z: float, heading: float) -> tuple[np.ndarray, np.ndarray]:
    """A car whose contact point lies exactly on PLANE at camera (x, z)."""
    r = _rotation(heading)
    contact = np.array([x, PLANE @ [1.0, z, x], z])
    return r, contact - r @ np.array([0.0, DROP, 0.0])


def _street(rng: np.random.Generator, n: int) -> tuple[list, list]:
    rs, ts = [], []
    for _ in range(n):
        z = float(rng.uniform(8, 60))
        r, t = _car_on_plane(float(rng.uniform(-0.4, 0.4)) * z, z, float(rng.uniform(-math.pi, math.pi)))
        rs.append(r)
        ts.append(t)
    return rs, ts


def test_contact_point_lies_below_the_centre_along_the_cars_down_axis() -> None:
    r, t = _car_on_plane(3.0, 20.0, 0.7)
    p = contact_point(r, t, DROP)
    assert abs(np.linalg.norm(p - t) - abs(DROP)) < 1e-9
    assert p[1] > t[1]                       # below (camera y points down)
    assert abs(p[1] - PLANE @ [1.0, 20.0, 3.0]) < 1e-9


def test_fit_recovers_a_known_plane_from_noisy_cars_with_outliers() -> None:
    rng = np.random.default_rng(3)
    x, z = rng.uniform(-15, 15, 14), rng.uniform(8, 70, 14)
    y = PLANE[0] + PLANE[1] * z + PLANE[2] * x + rng.normal(0, 0.02, 14)
    y[:2] += (1.2, -0.9)                    # two cars far off the road
    points = np.column_stack([x, y, z])
    plane = fit_plane(points, np.full(14, 0.02), residual=0.0)
    assert np.all(np.abs(plane.coef - PLANE) < 3 * np.sqrt(np.diag(plane.cov)))   # within 3 sd of its covariance
    assert np.allclose(plane.coef, PLANE, atol=(0.03, 0.002, 0.004))
    assert plane.cars == 12                  # the two outliers downweighted
    # plain least squares is pulled off by the outliers (the robust weights matter)
    j = np.column_stack([np.ones(14), z, x])
    plain = np.linalg.lstsq(j, y, rcond=None)[0]
    assert abs(plain[0] - PLANE[0]) > 3 * abs(plane.coef[0] - PLANE[0])
    # its uncertainty covers the error and is of the order of the points' noise
    assert 0.002 < plane.height_sd(0.0, 30.0) < 0.03


def test_plane_depth_is_where_the_ray_meets_the_plane() -> None:
    rng = np.random.default_rng(0)
    plane = fit_plane(np.array([[0, PLANE @ [1, z, 0], z] for z in (10.0, 20.0, 40.0, 60.0)]) +
                      np.array([[x, PLANE[2] * x, 0] for x in (-5.0, 4.0, 0.0, 9.0)]), np.full(4, 1e-4), 0.0)
    for heading in rng.uniform(-math.pi, math.pi, 3):
        r, t = _car_on_plane(-6.0, 55.0, float(heading))
        moved = t * 1.12                     # the detector's depth 12 % too far, same ray
        z, sd = plane_depth(plane, r, moved, DROP, residual=0.05)
        assert abs(z - t[2]) < 0.02
        # sd: 5 cm of road over the slope of the ray against the plane (~a / z per metre)
        slope = moved[1] / moved[2] - PLANE[1] - PLANE[2] * moved[0] / moved[2]
        assert abs(sd - 0.05 / slope) < 0.05 * sd


def test_fusion_pulls_a_far_cars_depth_towards_the_truth() -> None:
    rng = np.random.default_rng(7)
    rs, ts = _street(rng, 9)
    far_r, far_t = _car_on_plane(4.0, 85.0, 0.3)
    rs.append(far_r)
    ts.append(far_t)
    noisy = [t * (1 + rng.normal(0, 0.006)) for t in ts[:-1]] + [far_t * 1.08]   # far car 8 % too far
    sds = [0.006] * 9 + [0.03]
    fixes = ground_fixes(rs, noisy, [DROP] * 10, sds, residual=0.01)
    far = fixes[-1]
    assert far is not None and far.used and far.cars == 9
    # the plane from cars within 40 m pins it to ~2 % at 85 m (3 cm of height over a slope of 1.75 / 85)
    assert abs(far.depth_plane - far_t[2]) < 2.5 * far.depth_plane_sd and far.depth_plane_sd < 0.04 * far_t[2]
    assert abs(far.depth_after - far_t[2]) < 0.5 * abs(noisy[-1][2] - far_t[2])
    # a near, well-refined car hardly moves (its own depth weighs far more than the plane's)
    near = int(np.argmin([t[2] for t in ts]))
    assert abs(fixes[near].depth_after - noisy[near][2]) < 0.2 * abs(fixes[near].depth_plane - noisy[near][2]) + 1e-6


def test_leave_one_out_a_car_off_the_road_is_gated_and_does_nothing_with_few_cars() -> None:
    rng = np.random.default_rng(11)
    rs, ts = _street(rng, 6)
    ts[0] = ts[0] + np.array([0.0, -0.6, 0.0])   # 0.6 m above the road (not on it)
    fixes = ground_fixes(rs, ts, [DROP] * 6, [0.01] * 6, residual=0.05)
    assert fixes[0] is not None and not fixes[0].used and fixes[0].depth_after == ts[0][2]
    for fix, t in zip(fixes[1:], ts[1:], strict=True):    # the others: their plane ignores the outlier
        assert fix.used and abs(fix.depth_after - t[2]) < 0.01 * t[2]
    few = ground_fixes(rs[:3], ts[:3], [DROP] * 3, [0.01] * 3, min_cars=3)
    assert few == [None, None, None]
    skipped = ground_fixes(rs, ts, [DROP] * 6, [None] + [0.01] * 5)
    assert skipped[0] is None


def test_apply_ground_moves_the_refined_pose_along_its_ray() -> None:
    mesh = car_for_model(17).mesh
    v = torch.as_tensor(mesh.object_vertices(), dtype=torch.float32)
    f = torch.as_tensor(mesh.faces, dtype=torch.long)
    drop = float(v[:, 1].min())
    rng = np.random.default_rng(5)
    cars, results = [], {}
    for k, (x, z) in enumerate([(-3, 10), (2, 14), (5, 22), (-6, 30), (1, 45), (-4, 52), (6, 60), (3, 70)]):
        heading = float(rng.uniform(-3, 3))
        r = _rotation(heading)
        contact = np.array([x, PLANE @ [1.0, z, x], z])
        t = contact - r @ np.array([0.0, drop, 0.0])
        if k == 7:
            t = t * 0.92                           # the far car 8 % too near
        pose = CarPose(17, (0.16, heading, math.pi), tuple(float(a) for a in t), 0.9)
        car = _Car(k, pose, v, f, torch.as_tensor(r, dtype=torch.float32), torch.as_tensor(t, dtype=torch.float32),
                   model=17)
        cars.append(car)
        results[k] = CarResult(k, pose, pose, status="refined")
    config = RefineConfig(ground_plane=True, ground_residual=0.02)
    apply_ground(cars, results, config)
    far = results[7]
    assert far.extra["ground"]["used"]
    z_after = far.refined.translation[2]
    true_z = float((np.array([3, PLANE @ [1.0, 70.0, 3.0], 70.0]) - _car_rotation(cars[7]) @ [0, drop, 0])[2])
    assert abs(far.extra["ground"]["depth_plane"] - true_z) < 0.01 * true_z   # the other cars are exact
    assert abs(z_after - true_z) < 0.9 * abs(0.92 * true_z - true_z)
    # inverse-variance fusion of the refined depth (sd 0.6 % + 0.02 % a metre) and the plane's
    g = far.extra["ground"]
    sd_r = (0.006 + 0.0002 * g["depth_before"]) * g["depth_before"]
    w = (1 / sd_r ** 2) / (1 / sd_r ** 2 + 1 / g["depth_plane_sd"] ** 2)
    assert abs(z_after - (w * g["depth_before"] + (1 - w) * g["depth_plane"])) < 0.01
    before, after = np.asarray(far.initial.translation), np.asarray(far.refined.translation)
    assert np.allclose(after[:2] / after[2], before[:2] / before[2], atol=1e-6)   # same ray: projected centre kept
    assert abs(float(cars[7].translation[2]) - z_after) < 1e-3                   # the car state follows


def _car_rotation(car: _Car) -> np.ndarray:
    return car.rotation.double().numpy()


def test_a_refinement_that_walked_off_the_road_falls_back_to_the_detectors_pose() -> None:
    """Refined depth 30 % off (a mostly hidden car's refinement drifting), the detector's 3 % off: the
    plane of the other cars rejects the refined depth and fuses the detector's pose instead."""
    from nmrlight.refine.ground import ground_results

    rng = np.random.default_rng(2)
    rs, ts = _street(rng, 8)
    angles = [(0.16, float(h), math.pi) for h in rng.uniform(-3, 3, 8)]
    results = []
    for k, t in enumerate(ts):   # on the plane whatever the heading (the drop is along the car's y axis)
        truth = CarPose(17, angles[k], tuple(float(x) for x in t), 0.9)
        results.append(CarResult(k, truth, truth, status="refined"))
    far = int(np.argmax([t[2] for t in ts]))
    t = ts[far]
    drifted = CarPose(17, (0.16, angles[far][1] + 0.3, math.pi), tuple(float(x) for x in 1.3 * t), 0.9)
    start = CarPose(17, angles[far], tuple(float(x) for x in 1.03 * t), 0.9)
    results[far] = CarResult(far, start, drifted, status="refined")
    config = RefineConfig(ground_plane=True, ground_residual=0.02, ground_fallback=True)
    ground_results(results, [DROP] * 8, config)
    g = results[far].extra["ground"]
    assert g["used"] and g["source"] == "initial"
    assert results[far].refined.rotation == start.rotation                      # the detector's rotation back
    assert abs(results[far].refined.translation[2] - t[2]) < 0.03 * t[2] * 0.8  # and its depth pulled in
    others = [r for k, r in enumerate(results) if k != far]
    assert all(r.extra["ground"]["source"] == "refined" for r in others)
    # without the fallback (the default) the drifted car is left alone
    results[far] = CarResult(far, start, drifted, status="refined")
    ground_results(results, [DROP] * 8, RefineConfig(ground_plane=True, ground_residual=0.02))
    assert not results[far].extra["ground"]["used"] and results[far].refined == drifted
