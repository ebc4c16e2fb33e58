"""Synthetic data sets in the layout of the Kaggle PKU/Baidu data, with known truth.

Each image: procedural cars (nmrlight.procedural) placed on a pitched road plane in lanes with
realistic headings, no two footprints overlapping; a random lighting; a textured road/city
background; sensor noise. Written as a complete data folder: images/, masks/ (detector-like label
images), car_models_json/, camera/camera_intrinsic.txt, train.csv (truth), predictions.csv (truth
plus the `ErrorModel`'s detector errors) and lighting.csv (the true lighting).

Geometry: a level world frame at the camera (y down) is pitched by p ~ 0.15 rad (the data's v1) into
the camera frame, X_cam = Rx(-p) X_world, and the road is y_world = camera height. A car with
v1 = p, v3 = pi stands upright on that road, heading v2 (0: driving away, pi: oncoming).

Masks: value k marks the k-th car of the image's row in predictions.csv. Only cars with at least one
visible pixel get pixels; a car fully occluded keeps its row but its label appears nowhere. With
`mask_errors`, each region is dilated or eroded by 0-2 px and shifted by up to 1 px, like a detector.
"""

from __future__ import annotations

import csv
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from scipy import ndimage

from nmrlight.camera import KAGGLE_FX, KAGGLE_HEIGHT, KAGGLE_WIDTH, Camera
from nmrlight.errors import NmrlightError
from nmrlight.io.camera_file import write_intrinsics
from nmrlight.io.cars import car_name
from nmrlight.io.dataset import DataFolder
from nmrlight.io.images import write_image
from nmrlight.io.masks import write_label_mask
from nmrlight.io.poses import CarPose, write_poses
from nmrlight.procedural import BODY, LIGHT, WHEEL, WINDOW, ProceduralCar, car_for_model, write_models
from nmrlight.rotations import kaggle_to_matrix

DEFAULT_MODELS = (2, 9, 17, 23, 39, 50, 61, 72)


@dataclass
class SynthConfig:
    """What the synthetic images look like. `scale` renders smaller images with scaled intrinsics."""

    width: int = KAGGLE_WIDTH
    height: int = KAGGLE_HEIGHT
    scale: float = 1.0
    rgb: bool = False
    cars_mean: float = 10.0
    cars_min: int = 1
    cars_max: int = 20
    model_types: tuple[int, ...] = DEFAULT_MODELS
    depth_range: tuple[float, float] = (6.0, 120.0)
    pitch: tuple[float, float] = (0.15, 0.02)          # camera pitch (= v1): mean, sigma, radians
    camera_height: tuple[float, float] = (1.4, 1.75)   # metres above the road
    noise_sigma: float = 0.02
    mask_errors: bool = True
    edges: str = "analytic"
    jpeg: bool = True

    def camera(self) -> Camera:
        """The Kaggle intrinsics on a width x height frame, scaled by `scale`."""
        camera = Camera.kaggle()
        if (self.width, self.height) != (camera.width, camera.height):
            camera = Camera(camera.K, int(self.width), int(self.height))
        return camera if self.scale == 1.0 else camera.scaled(self.scale)


@dataclass
class ErrorModel:
    """Detector errors added to the truth to make predictions.csv (all sigmas are one standard deviation).

    Angles: heading = v2, pitch = v1, roll = v3, degrees. Translation: the depth error scales the
    centre along its viewing ray (the projected centre stays put), relative sigma `depth_sigma`, with
    a fraction `outlier_rate` of errors `outlier_scale` times larger; the lateral error moves it
    across the ray, relative sigma `lateral_sigma` plus `pixel_sigma` pixels at focal length `fx`.
    Confidence lies in (0.3, 1) and drops with the size of the error and with distance.
    """

    heading_sigma_deg: float = 4.0
    pitch_sigma_deg: float = 1.5
    roll_sigma_deg: float = 1.5
    depth_sigma: float = 0.04
    lateral_sigma: float = 0.01
    pixel_sigma: float = 0.0
    outlier_rate: float = 0.05
    outlier_scale: float = 4.0
    flip_rate: float = 0.0
    miss_rate: float = 0.0
    false_positives: float = 0.0      # mean number a picture

    def perturb(self, cars: list[CarPose], rng: np.random.Generator, fx: float = KAGGLE_FX
                ) -> tuple[list[CarPose], list[int]]:
        """Predictions for the true `cars` and, for each, the index of its true car (-1: false positive)."""
        n = len(cars)
        preds: list[CarPose] = []
        source: list[int] = []
        if n:
            t = np.array([c.translation for c in cars], dtype=np.float64)
            a = np.array([c.rotation for c in cars], dtype=np.float64)
            dist = np.linalg.norm(t, axis=1)
            depth = rng.normal(0.0, self.depth_sigma, n)
            depth *= np.where(rng.random(n) < self.outlier_rate, self.outlier_scale, 1.0)
            lat_sigma = math.hypot(self.lateral_sigma, self.pixel_sigma / fx)
            lat = rng.normal(0.0, lat_sigma, (n, 2))
            ray = t / dist[:, None]
            e1 = np.cross(ray, [0.0, 1.0, 0.0])
            e1 /= np.linalg.norm(e1, axis=1, keepdims=True)
            e2 = np.cross(ray, e1)
            t_new = t * (1 + depth)[:, None] + dist[:, None] * (lat[:, :1] * e1 + lat[:, 1:] * e2)
            sig = np.radians([self.pitch_sigma_deg, self.heading_sigma_deg, self.roll_sigma_deg])
            da = rng.normal(0.0, 1.0, (n, 3)) * sig
            flips = rng.random(n) < self.flip_rate
            da[flips, 1] += np.pi
            a_new = _wrap(a + da)
            score = np.sqrt((np.square(depth / max(self.depth_sigma, 1e-9))
                             + np.square(da[:, 1] / max(sig[1], 1e-9))
                             + np.square(lat).sum(1) / max(lat_sigma, 1e-9) ** 2 / 2) / 3)
            score = score + 3.0 * flips
            logit = 2.0 - 1.5 * score - 1.0 * dist / 100.0 + rng.normal(0.0, 0.3, n)
            conf = 0.3 + 0.7 / (1 + np.exp(-logit))
            keep = rng.random(n) >= self.miss_rate
            for i in np.flatnonzero(keep):
                score_i = float(np.clip(conf[i], 0.3001, 0.9999))
                preds.append(CarPose(cars[i].model_type, tuple(float(x) for x in a_new[i]),
                                     tuple(float(x) for x in t_new[i]), score_i))
                source.append(int(i))
        extra = rng.poisson(self.false_positives) if self.false_positives > 0 and n else 0
        for _ in range(extra):
            base = cars[int(rng.integers(n))]
            t = np.array(base.translation) + [rng.choice([-1.0, 1.0]) * rng.uniform(2.5, 6.0), 0.0,
                                              rng.uniform(-5.0, 5.0)]
            t[2] = max(t[2], 4.0)
            rot = (base.rotation[0], float(_wrap(rng.uniform(-np.pi, np.pi))), base.rotation[2])
            fp = CarPose(base.model_type, rot, tuple(float(x) for x in t), float(rng.uniform(0.3, 0.6)))
            preds.append(fp)
            source.append(-1)
        return preds, source


@dataclass
class SynthImage:
    """One synthesised picture with everything known about it."""

    image_id: str
    image: np.ndarray            # (H, W) or (H, W, 3) float in [0, 1], noisy
    labels: np.ndarray           # (H, W) int: k = k-th car of the truth row, detector edge errors
    object_id: np.ndarray        # (H, W) int: exact render object index, -1 background
    cars: list[CarPose]
    lighting: tuple[float, float, float, float, float]   # ambient, directional, dx, dy, dz


@dataclass
class SynthSummary:
    """What `synthesize` wrote."""

    out_dir: Path
    image_ids: list[str] = field(default_factory=list)
    cars: int = 0
    visible_cars: int = 0
    model_types: list[int] = field(default_factory=list)
    seconds: float = 0.0


def _wrap(angle):
    return (np.asarray(angle) + np.pi) % (2 * np.pi) - np.pi


def _rx(p: float) -> np.ndarray:
    c, s = math.cos(p), math.sin(p)
    return np.array([[1.0, 0.0, 0.0], [0.0, c, -s], [0.0, s, c]])


# --- placement -----------------------------------------------------------------------------------
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


# --- appearance ----------------------------------------------------------------------------------
_PALETTE = np.array([[0.92, 0.92, 0.9], [0.12, 0.12, 0.13], [0.62, 0.63, 0.65], [0.4, 0.41, 0.43],
                     [0.7, 0.1, 0.08], [0.1, 0.2, 0.55], [0.45, 0.32, 0.2], [0.2, 0.4, 0.25]])
_LUMA = np.array([0.299, 0.587, 0.114])


def _albedo(car: ProceduralCar, rng: np.random.Generator, rgb: bool) -> torch.Tensor:
    """Per-face albedo (F, C): paint, darker windows, dark tyres, bright lights."""
    if rgb:
        paint = np.clip(_PALETTE[rng.integers(len(_PALETTE))] + rng.normal(0, 0.04, 3), 0.05, 0.95)
        lo, hi = 0.2, 0.9
        paint = np.clip(paint * np.clip(paint @ _LUMA, lo, hi) / max(paint @ _LUMA, 1e-3), 0.0, 1.0)
    else:
        paint = np.full(1, rng.uniform(0.2, 0.9))
    table = np.empty((4, len(paint)))
    table[BODY] = paint
    table[WINDOW] = rng.uniform(0.06, 0.14)
    table[WHEEL] = 0.05
    table[LIGHT] = 0.85
    return torch.as_tensor(table[car.materials], dtype=torch.float32)


def _lighting(rng: np.random.Generator) -> tuple[float, float, float, float, float]:
    direction = np.array([rng.uniform(-1, 1), -rng.uniform(0.3, 1.0), rng.uniform(-1.0, 0.6)])
    direction /= np.linalg.norm(direction)
    return (float(rng.uniform(0.3, 0.6)), float(rng.uniform(0.3, 0.7)), *map(float, direction))


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


# --- masks ---------------------------------------------------------------------------------------
def detector_labels(object_id: np.ndarray, depths: np.ndarray, rng: np.random.Generator | None,
                    label_of: np.ndarray | None = None) -> np.ndarray:
    """Label image from the render's object ids: label_of[i] (default i + 1) for object i, 0 elsewhere.

    With `rng`, each region is dilated or eroded by 0-2 px (0-1 below 2000 px, none below 150) and
    shifted by up to 1 px; regions are
    painted far to near (by `depths`) so nearer cars win. Objects with no pixels get no label.
    """
    n = len(depths)
    label_of = np.arange(1, n + 1) if label_of is None else np.asarray(label_of)
    if rng is None:
        labels = np.zeros(object_id.shape, dtype=np.int32)
        fg = object_id >= 0
        labels[fg] = label_of[object_id[fg]]
        return labels
    labels = np.zeros(object_id.shape, dtype=np.int32)
    h, w = object_id.shape
    objects = ndimage.find_objects(object_id + 1, max_label=n)
    for i in np.argsort(-np.asarray(depths)):
        box = objects[i]
        if box is None or label_of[i] <= 0:
            continue
        pad = 3
        y0, y1 = max(0, box[0].start - pad), min(h, box[0].stop + pad)
        x0, x1 = max(0, box[1].start - pad), min(w, box[1].stop + pad)
        region = object_id[y0:y1, x0:x1] == i
        area = int(region.sum())
        reach = 2 if area >= 2000 else 1 if area >= 150 else 0   # small regions get small errors
        radius = int(rng.integers(-2, 3))
        radius = int(np.clip(radius, -reach, reach))
        if radius > 0:
            changed = ndimage.binary_dilation(region, iterations=radius)
        elif radius < 0:
            changed = ndimage.binary_erosion(region, iterations=-radius)
            if not changed.any():
                changed = region
        else:
            changed = region
        dy, dx = (rng.integers(-1, 2, 2) if rng.random() < 0.5 else (0, 0))
        changed = np.roll(changed, (int(dy), int(dx)), axis=(0, 1))
        labels[y0:y1, x0:x1][changed] = label_of[i]
    return labels


# --- synthesis -----------------------------------------------------------------------------------
class _Models:
    """Procedural cars by model id, with their render tensors and sizes (cached)."""

    def __init__(self) -> None:
        self.cars: dict[int, ProceduralCar] = {}
        self.tensors: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}

    def get(self, model: int) -> ProceduralCar:
        if model not in self.cars:
            car = car_for_model(model)
            self.cars[model] = car
            self.tensors[model] = (torch.as_tensor(car.mesh.object_vertices(), dtype=torch.float32),
                                   torch.as_tensor(car.mesh.faces, dtype=torch.long))
        return self.cars[model]

    def sizes(self, models) -> dict[int, tuple[float, float, float]]:
        out = {}
        for m in models:
            ext = np.ptp(self.get(int(m)).mesh.vertices, axis=0)
            out[int(m)] = (float(ext[2]), float(ext[0]), float(ext[1]))
        return out


def image_id(index: int) -> str:
    """ImageId of the index-th (0-based) synthetic picture: ID_synth_000001, ..."""
    return f"ID_synth_{index + 1:06d}"


def synthesize_image(index: int, seed: int, config: SynthConfig, models: _Models | None = None
                     ) -> SynthImage:
    """Make picture `index` of the data set `seed` (independent of the other pictures)."""
    from nmrlight.render import render
    from nmrlight.scene import MeshObject, Scene
    from nmrlight.shade import Lighting

    models = models or _Models()
    rng = np.random.default_rng([int(seed), int(index)])
    camera = config.camera()
    pitch = float(np.clip(rng.normal(*config.pitch), 0.1, 0.25))
    cam_h = float(rng.uniform(*config.camera_height))
    ego = float(rng.uniform(-1.0, 1.0))
    cars = place_cars(rng, camera, config, models.sizes(config.model_types), pitch, cam_h, ego)
    light = _lighting(rng)
    bg = background(camera, rng, pitch, cam_h, ego, config.rgb)
    objects = []
    for car in cars:
        proc = models.get(car.model_type)
        verts, faces = models.tensors[car.model_type]
        R = torch.as_tensor(kaggle_to_matrix(np.array(car.rotation)), dtype=torch.float32)
        objects.append(MeshObject(vertices=verts, faces=faces, rotation=R,
                                  translation=torch.tensor(car.translation, dtype=torch.float32),
                                  albedo=_albedo(proc, rng, config.rgb)))
    lighting = Lighting(ambient=light[0], directional=light[1], direction=light[2:])
    with torch.no_grad():
        out = render(Scene(objects), camera, lighting, background=torch.as_tensor(bg), edges=config.edges,
                     outputs={"image"})
    image = out.image.numpy()
    image = image + rng.normal(0.0, config.noise_sigma, image.shape).astype(np.float32)
    image = np.clip(image, 0.0, 1.0)
    image = image[0] if image.shape[0] == 1 else np.transpose(image, (1, 2, 0))
    object_id = out.object_id.numpy().astype(np.int32)
    depths = np.array([c.translation[2] for c in cars])
    labels = detector_labels(object_id, depths, rng if config.mask_errors else None)
    return SynthImage(image_id(index), image, labels, object_id, cars, light)


def synthesize(out_dir: str | Path, images: int, seed: int, config: SynthConfig | None = None,
               errors: ErrorModel | None = None, progress: Callable[[int], None] | None = None
               ) -> SynthSummary:
    """Write a synthetic data folder of `images` pictures to `out_dir`; deterministic for `seed`.

    `progress` is called with 1 after each picture.
    """
    if images < 1:
        raise NmrlightError(f"synth: number of images must be at least 1, got {images}")
    config = config or SynthConfig()
    errors = errors or ErrorModel()
    if not config.model_types:
        raise NmrlightError("synth: model_types is empty")
    for m in config.model_types:
        car_name(m)  # validates the id
    if not config.scale > 0:
        raise NmrlightError(f"synth: scale must be positive, got {config.scale}")
    start = time.perf_counter()
    folder = DataFolder.create(out_dir)
    root = folder.root
    camera = config.camera()
    write_intrinsics(camera, root / "camera" / "camera_intrinsic.txt")
    models = _Models()
    truth: dict[str, list[CarPose]] = {}
    preds: dict[str, list[CarPose]] = {}
    summary = SynthSummary(out_dir=root)
    used: set[int] = set()
    lights = []
    for index in range(images):
        item = synthesize_image(index, seed, config, models)
        err_rng = np.random.default_rng([int(seed), int(index), 1])
        pred, source = errors.perturb(item.cars, err_rng)
        # mask labels follow the prediction rows: k-th prediction <- its true car's region
        label_of = np.zeros(len(item.cars), dtype=np.int64)
        for k, src in enumerate(source):
            if src >= 0:
                label_of[src] = k + 1
        labels = item.labels
        if label_of.tolist() != list(range(1, len(item.cars) + 1)):
            remap = np.concatenate([[0], label_of])
            labels = remap[labels]
        suffix = ".jpg" if config.jpeg else ".png"
        write_image(root / "images" / f"{item.image_id}{suffix}", item.image)
        write_label_mask(root / "masks" / f"{item.image_id}.png", labels)
        truth[item.image_id] = item.cars
        preds[item.image_id] = pred
        lights.append((item.image_id, *item.lighting))
        used.update(c.model_type for c in item.cars)
        summary.image_ids.append(item.image_id)
        summary.cars += len(item.cars)
        summary.visible_cars += len(np.unique(item.object_id[item.object_id >= 0]))
        if progress is not None:
            progress(1)
    write_models(root, sorted(used | set(config.model_types)))
    write_poses(root / "train.csv", truth, confidence=False)
    write_poses(root / "predictions.csv", preds, confidence=True)
    with (root / "lighting.csv").open("w", newline="") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(["ImageId", "ambient", "directional", "dx", "dy", "dz"])
        for row in lights:
            writer.writerow([row[0], *(repr(float(x)) for x in row[1:])])
    summary.model_types = sorted(used)
    summary.seconds = time.perf_counter() - start
    return summary
