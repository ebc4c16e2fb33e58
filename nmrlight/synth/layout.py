"""Layout of cars on the road: lanes, headings, depths, non-overlapping footprints.

Geometry: a level world frame at the camera (y down) is pitched by p ~ 0.15 rad (the data's v1) into
the camera frame, X_cam = Rx(-p) X_world, and the road is y_world = camera height. A car with
v1 = p, v3 = pi stands upright on that road, heading v2 (0: driving away, pi: oncoming).
"""

from __future__ import annotations

import math

import numpy as np

from nmrlight.camera import Camera
from nmrlight.io.poses import CarPose
from nmrlight.synth.config import SynthConfig


def _wrap(angle):
    return (np.asarray(angle) + np.pi) % (2 * np.pi) - np.pi


def _rx(p: float) -> np.ndarray:
    c, s = math.cos(p), math.sin(p)
    return np.array([[1.0, 0.0, 0.0], [0.0, c, -s], [0.0, s, c]])


def _heading_and_lane(rng: np.random.Generator, ego: float) -> tuple[float, float]:
    """(v2, world x): same-direction and oncoming lanes, parked cars, a few anywhere."""
    kind = rng.choice(4, p=[0.45, 0.3, 0.15, 0.1])
    if kind == 0:
        return rng.normal(0.0, 0.05), 3.5 * rng.integers(-1, 2) + ego + rng.normal(0, 0.3)
    if kind == 1:
        return np.pi + rng.normal(0.0, 0.05), -3.5 * rng.integers(2, 4) + ego + rng.normal(0, 0.3)
    if kind == 2:
        side = rng.choice([-1.0, 1.0])
        heading = rng.choice([np.pi / 2, -np.pi / 2, 0.0, np.pi]) + rng.normal(0.0, 0.1)
        return heading, side * rng.uniform(7.0, 13.0) + ego
    return rng.uniform(-np.pi, np.pi), rng.uniform(-25.0, 25.0)


def _footprint(x: float, z: float, heading: float, length: float, width: float) -> np.ndarray:
    """Corners (4, 2) of a car's ground rectangle in world x-z; its length axis is (-sin v2, cos v2)."""
    f = np.array([-math.sin(heading), math.cos(heading)])
    s = np.array([f[1], -f[0]])
    return np.array([[x, z]]) + np.array([[1, 1], [1, -1], [-1, -1], [-1, 1]]) @ np.stack(
        [f * length / 2, s * width / 2])


def _overlap(a: np.ndarray, b: np.ndarray) -> bool:
    """Separating-axis test of two convex quads (4, 2)."""
    for poly in (a, b):
        edges = np.roll(poly, -1, axis=0) - poly
        for e in edges:
            n = np.array([-e[1], e[0]])
            pa, pb = a @ n, b @ n
            if pa.max() < pb.min() or pb.max() < pa.min():
                return False
    return True


def place_cars(rng: np.random.Generator, camera: Camera, config: SynthConfig,
               sizes: dict[int, tuple[float, float, float]], pitch: float, cam_h: float, ego: float
               ) -> list[CarPose]:
    """Random non-overlapping cars on the road whose centres project inside the image.

    `sizes` maps model id to (length, width, height) in metres; the road lies `cam_h` below a camera
    pitched down by `pitch`; `ego` is the lateral offset of the lanes.
    """
    want = int(np.clip(rng.poisson(config.cars_mean), config.cars_min, config.cars_max))
    rot = _rx(-pitch)
    cars: list[CarPose] = []
    prints: list[np.ndarray] = []
    z0, z1 = config.depth_range
    for _ in range(want * 40):
        if len(cars) >= want:
            break
        model = int(rng.choice(config.model_types))
        length, width, height = sizes[model]
        heading, x = _heading_and_lane(rng, ego)
        z = float(np.clip(z0 + rng.gamma(2.0, 20.0), z0, z1))
        centre = rot @ np.array([x, cam_h - height / 2, z])
        u = camera.fx * centre[0] / centre[2] + camera.cx
        v = camera.fy * centre[1] / centre[2] + camera.cy
        if not (centre[2] > z0 * 0.9 and 0 <= u < camera.width and 0 <= v < camera.height):
            continue
        rect = _footprint(x, z, heading, length + 0.6, width + 0.6)
        if any(_overlap(rect, other) for other in prints):
            continue
        prints.append(rect)
        angles = (pitch + rng.normal(0.0, 0.01), float(_wrap(heading)),
                  float(_wrap(np.pi + rng.normal(0.0, 0.02))))
        cars.append(CarPose(model, tuple(float(a) for a in angles), tuple(float(c) for c in centre), 1.0))
    return cars

