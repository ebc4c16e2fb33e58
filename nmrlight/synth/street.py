"""Street layouts with the statistics of the real data (`kaggle`) and crowded ones (`crowded`).

The real train.csv (CONVENTIONS.md, last section): 11.7 cars a photograph, up to 44; depth
percentiles 5/25/50/75/95 = 12/27/45/68/115 m; x/z percentiles 5/50/95 = -0.61/-0.06/0.55; cars on a
road y ~ 1.04 + 0.169 z + 0.051 x (residual 0.8 m); about 80 % of headings along the road.

Geometry: the world frame is level (y down, the road at y = camera height, lanes along z); the
camera is pitched down by p and rolled by r: X_cam = Rz(r) Rx(-p) X_world. A car standing on the
road with heading v2 then has v1 = p and v3 = pi + r. The kaggle layout draws depth and x/z from
piecewise-linear inverse distribution functions through the percentiles above, puts the car on
the road, and keeps it when its footprint overlaps no other. The crowded layout adds rows of parked
cars along the kerbs and queues in the lanes (20-44 cars).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from nmrlight.camera import Camera
from nmrlight.io.poses import CarPose
from nmrlight.synth.layout import _footprint, _overlap, _rx, _wrap

# inverse distribution functions (probability, value) through the real data's percentiles
# (the targets 12/27/45/68/115 m, shifted down: overlap rejection thins near cars a little)
DEPTH_QUANTILES = ((0.0, 0.05, 0.25, 0.5, 0.75, 0.95, 1.0), (4.0, 11.6, 25.0, 42.6, 65.0, 111.0, 150.0))
XZ_QUANTILES = ((0.0, 0.05, 0.5, 0.95, 1.0), (-0.73, -0.61, -0.06, 0.55, 0.73))
FAR_RANGE = (150.0, 260.0)     # unannotated far cars
CROWDED_CARS = (20, 44)


@dataclass(frozen=True)
class Road:
    """The camera's pose over the road: pitch down, roll, height above the road (m), lane offset."""

    pitch: float
    roll: float
    height: float
    ego: float = 0.0
    half_width: float = 10.0

    @property
    def rotation(self) -> np.ndarray:
        """World (level) -> camera rotation Rz(roll) Rx(-pitch)."""
        c, s = math.cos(self.roll), math.sin(self.roll)
        rz = np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])
        return rz @ _rx(-self.pitch)

    def camera_point(self, x_world: float, z_world: float, above: float) -> np.ndarray:
        """Camera-frame point `above` metres over the road at world (x, z)."""
        return self.rotation @ np.array([x_world, self.height - above, z_world])

    def on_road(self, x_cam: float, z_cam: float, above: float) -> np.ndarray:
        """The camera-frame point with camera x and z given that lies `above` metres over the road."""
        r = self.rotation
        # world y = r[:, 1] . X_cam must equal height - above; solve for camera y
        y = (self.height - above - r[0, 1] * x_cam - r[2, 1] * z_cam) / r[1, 1]
        return np.array([x_cam, y, z_cam])


def sample_road(rng: np.random.Generator, pitch: tuple[float, float], roll: tuple[float, float],
                height: tuple[float, float]) -> Road:
    """A random camera pose over the road: pitch, roll normal (mean, sigma); height uniform."""
    return Road(pitch=float(np.clip(rng.normal(*pitch), 0.08, 0.26)), roll=float(rng.normal(*roll)),
                height=float(rng.uniform(*height)), ego=float(rng.uniform(-1.0, 1.0)),
                half_width=float(rng.uniform(8.0, 12.0)))


def _quantile(rng: np.random.Generator, table: tuple[tuple[float, ...], tuple[float, ...]]) -> float:
    return float(np.interp(rng.random(), table[0], table[1]))


def _street_heading(rng: np.random.Generator, x_world: float, road: Road) -> float:
    """80 % along the road (oncoming mostly left of the ego lane), 10 % across, 10 % anywhere."""
    kind = rng.random()
    if kind < 0.8:
        oncoming = rng.random() < (0.7 if x_world < road.ego - 2.0 else 0.15)
        return float(_wrap((np.pi if oncoming else 0.0) + rng.normal(0.0, 0.06)))
    if kind < 0.9:
        return float(_wrap(rng.choice([-np.pi / 2, np.pi / 2]) + rng.normal(0.0, 0.3)))
    return float(rng.uniform(-np.pi, np.pi))


class _Placer:
    """Adds cars whose footprints overlap no other and whose centres project inside the image."""

    def __init__(self, camera: Camera, road: Road, sizes: dict[int, tuple[float, float, float]],
                 rng: np.random.Generator) -> None:
        self.camera, self.road, self.sizes, self.rng = camera, road, sizes, rng
        self.prints: list[np.ndarray] = []
        self.cars: list[CarPose] = []

    def _visible(self, centre: np.ndarray) -> bool:
        c = self.camera
        if centre[2] < 3.0:
            return False
        u = c.fx * centre[0] / centre[2] + c.cx
        v = c.fy * centre[1] / centre[2] + c.cy
        return 0 <= u < c.width and 0 <= v < c.height

    def add(self, model: int, centre: np.ndarray, heading: float, gap: float = 0.6) -> bool:
        length, width, height = self.sizes[model]
        world = self.road.rotation.T @ centre
        rect = _footprint(world[0], world[2], heading, length + gap, width + gap)
        if not self._visible(centre) or any(_overlap(rect, other) for other in self.prints):
            return False
        self.prints.append(rect)
        rng = self.rng
        angles = (self.road.pitch + rng.normal(0.0, 0.01), float(_wrap(heading)),
                  float(_wrap(np.pi + self.road.roll + rng.normal(0.0, 0.02))))
        self.cars.append(CarPose(model, tuple(float(a) for a in angles), tuple(float(c) for c in centre), 1.0))
        return True

    def add_random(self, model: int, depth_range: tuple[float, float] | None = None) -> bool:
        """A car at a depth and x/z drawn from the real data's distributions (or a depth range)."""
        rng = self.rng
        z = _quantile(rng, DEPTH_QUANTILES) if depth_range is None else float(rng.uniform(*depth_range))
        centre = self.road.on_road(_quantile(rng, XZ_QUANTILES) * z, z, self.sizes[model][2] / 2)
        world = self.road.rotation.T @ centre
        return self.add(model, centre, _street_heading(rng, world[0], self.road))


def _count(rng: np.random.Generator, mean: float, low: int, high: int) -> int:
    """Cars a picture: gamma-Poisson (negative binomial, shape 3) with `mean`, clipped to [low, high]."""
    return int(np.clip(rng.poisson(rng.gamma(3.0, mean / 3.0)), low, high))


def _models(rng: np.random.Generator, models: tuple[int, ...]) -> int:
    return int(rng.choice(models))


def kaggle_cars(rng: np.random.Generator, camera: Camera, road: Road, sizes: dict[int, tuple[float, float, float]],
                models: tuple[int, ...], mean: float = 11.7, low: int = 1, high: int = 44) -> list[CarPose]:
    """Annotated cars of a picture with the real data's count, depth, x/z and heading statistics."""
    want = _count(rng, mean, low, high)
    placer = _Placer(camera, road, sizes, rng)
    for _ in range(want * 40):
        if len(placer.cars) >= want:
            break
        placer.add_random(_models(rng, models))
    return placer.cars


def crowded_cars(rng: np.random.Generator, camera: Camera, road: Road,
                 sizes: dict[int, tuple[float, float, float]], models: tuple[int, ...],
                 count: tuple[int, int] = CROWDED_CARS) -> list[CarPose]:
    """20-44 cars: rows of parked cars along the kerbs, queues in the lanes, the rest as `kaggle_cars`."""
    want = int(rng.integers(count[0], count[1] + 1))
    placer = _Placer(camera, road, sizes, rng)
    # queues: one to three lanes of cars nose to tail, same heading
    lanes = rng.choice([-2, -1, 0, 1], size=int(rng.integers(1, 4)), replace=False)
    structures = []
    for lane in lanes:
        oncoming = lane < 0
        structures.append((road.ego + 3.5 * lane + 1.75, np.pi if oncoming else 0.0, (1.0, 4.0), 0.15))
    # parked rows along one or both kerbs, close together
    for side in (-1.0, 1.0):
        if rng.random() < 0.75:
            heading = rng.choice([0.0, np.pi]) if rng.random() < 0.8 else side * np.pi / 2
            structures.append((road.ego + side * (road.half_width - 1.2), heading, (0.4, 1.5), 0.05))
    for x_lane, heading, spacing, wobble in structures:
        z = float(rng.uniform(4.0, 14.0))
        while z < 110.0 and len(placer.cars) < want:
            model = _models(rng, models)
            length = sizes[model][0]
            along = abs(math.cos(heading)) > 0.5
            z += (length if along else sizes[model][1]) / 2
            centre = road.camera_point(x_lane + rng.normal(0.0, 0.2), z, sizes[model][2] / 2)
            placer.add(model, centre, float(_wrap(heading + rng.normal(0.0, wobble))), gap=0.2)
            z += (length if along else sizes[model][1]) / 2 + float(rng.uniform(*spacing))
    for _ in range(want * 40):
        if len(placer.cars) >= want:
            break
        placer.add_random(_models(rng, models))
    return placer.cars


def far_cars(rng: np.random.Generator, camera: Camera, road: Road, sizes: dict[int, tuple[float, float, float]],
             models: tuple[int, ...], mean: float, taken: list[CarPose]) -> list[CarPose]:
    """Cars beyond 150 m (left out of train.csv, like the real data's unannotated ones)."""
    want = int(rng.poisson(mean)) if mean > 0 else 0
    placer = _Placer(camera, road, sizes, rng)
    for car in taken:   # keep clear of the annotated cars
        length, width, _ = sizes[car.model_type]
        world = road.rotation.T @ np.array(car.translation)
        placer.prints.append(_footprint(world[0], world[2], car.rotation[1], length, width))
    for _ in range(want * 20):
        if len(placer.cars) >= want:
            break
        placer.add_random(_models(rng, models), FAR_RANGE)
    return placer.cars
