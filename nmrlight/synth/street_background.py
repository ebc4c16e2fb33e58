"""A cluttered street behind the cars: road, lane marks, crossings, kerbs, facades with windows, poles,
and a dark cast shadow on the road under each car: edges everywhere, as in the real photographs.

Every pixel's ray is cast into the level world frame of `street.Road`: it hits the road plane, a
building facade on either side (planes x = const, in blocks of random length and height), or the
sky. Poles and car shadows are drawn as projected polygons.
"""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw
from scipy import ndimage

from nmrlight.camera import Camera
from nmrlight.io.poses import CarPose
from nmrlight.synth.background import _noise
from nmrlight.synth.layout import _footprint
from nmrlight.synth.street import Road

FAR = 400.0   # metres: beyond this the street fades into haze / sky


def _rays(camera: Camera, road: Road) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """World-frame ray directions (x, y, z), each (H, W), of the pixel centres."""
    u = (np.arange(camera.width, dtype=np.float32) + 0.5 - camera.cx) / camera.fx
    v = (np.arange(camera.height, dtype=np.float32) + 0.5 - camera.cy) / camera.fy
    r = road.rotation.T.astype(np.float32)                      # camera -> world
    return tuple(r[i, 0] * u[None, :] + r[i, 1] * v[:, None] + r[i, 2] for i in range(3))


def _facades(rng: np.random.Generator, road: Road, dx, dy, dz, t_ground, h: int, w: int, fine: np.ndarray,
             clear: tuple[float, float]):
    """Facade hits: (hit mask, distance along the ray, grey level) for both street sides.

    `clear` = (left, right): how far from the lane centre each facade must stay (behind the cars).
    """
    hit = np.zeros(h * w, dtype=bool)
    dist = np.full(h * w, np.inf, dtype=np.float32)
    grey = np.zeros(h * w, dtype=np.float32)
    dx, dy, dz, t_ground, fine = (a.ravel() for a in (dx, dy, dz, t_ground, fine))
    for side, keep_clear in zip((-1.0, 1.0), clear, strict=True):
        plane = road.ego + side * max(road.half_width + rng.uniform(2.5, 6.0), keep_clear + 3.0)
        # blocks along z: start, height (m above the road), grey, window pitch
        starts = np.cumsum(rng.uniform(8.0, 30.0, 40)) - rng.uniform(0.0, 10.0)
        heights = rng.uniform(5.0, 30.0, 40)
        greys = rng.uniform(0.25, 0.75, 40)
        pitch_z = rng.uniform(2.0, 3.5, 40)
        pitch_y = rng.uniform(2.8, 3.5, 40)
        # only the rays heading to this side can hit its facade (each pixel hits one side at most)
        idx = np.flatnonzero(side * dx > 1e-4)
        t = (plane / dx[idx]).astype(np.float32)
        z = t * dz[idx]
        up = road.height - t * dy[idx]                              # metres above the road
        k = np.searchsorted(starts, z)
        block = np.minimum(k, len(starts) - 1)
        gap = (k % 7) == 3                                          # a side street now and then
        on = (t < t_ground[idx]) & (z > 0) & (z < FAR) & (up >= 0) & (up < heights[block]) & ~gap
        idx, t, z, up, block = idx[on], t[on], z[on], up[on], block[on]
        fz = np.mod(z, pitch_z[block]) / pitch_z[block]
        fy = np.mod(up, pitch_y[block]) / pitch_y[block]
        window = (fz > 0.25) & (fz < 0.75) & (fy > 0.3) & (fy < 0.8) & (up > 3.0)
        lit = np.mod(block * 7 + np.floor(z / pitch_z[block]) * 3 + np.floor(up / pitch_y[block]), 5) == 0
        level = np.where(window, np.where(lit, 0.85, 0.12), greys[block] + 0.05 * fine[idx])
        level = np.where(up < 3.0, greys[block] * 0.6, level)       # shop fronts: darker ground floor
        grey[idx] = level
        dist[idx] = t
        hit[idx] = True
    return hit.reshape(h, w), dist.reshape(h, w), grey.reshape(h, w)


def _project(camera: Camera, road: Road, world: np.ndarray) -> list[tuple[float, float]] | None:
    """Image points of world points (N, 3), None when any lies behind the camera."""
    cam = world @ road.rotation.T
    if (cam[:, 2] < 0.5).any():
        return None
    return [(float(camera.fx * x / z + camera.cx), float(camera.fy * y / z + camera.cy)) for x, y, z in cam]


def street_background(camera: Camera, rng: np.random.Generator, road: Road, cars: list[CarPose],
                      sizes: dict[int, tuple[float, float, float]], rgb: bool) -> np.ndarray:
    """The street (C, H, W) in [0, 1] for a camera posed over `road`, with shadows under `cars`."""
    with np.errstate(divide="ignore", invalid="ignore"):   # rays that miss a plane carry inf / nan
        return _street(camera, rng, road, cars, sizes, rgb)


def car_shadows(camera: Camera, road: Road, cars: list[CarPose], sizes: dict[int, tuple[float, float, float]],
                rng: np.random.Generator) -> np.ndarray:
    """Shading factor (H, W) of the road: 0.35-0.5 under each car's footprint (enlarged by 0.4 m), soft
    edged, 1 elsewhere."""
    h, w = camera.height, camera.width
    shadow = Image.new("F", (w, h), 1.0)
    draw = ImageDraw.Draw(shadow)
    for car in cars:
        length, width, _ = sizes[car.model_type]
        world = road.rotation.T @ np.array(car.translation)
        corners = _footprint(world[0], world[2], car.rotation[1], length + 0.4, width + 0.4)
        points = _project(camera, road, np.c_[corners[:, 0], np.full(4, road.height), corners[:, 1]])
        if points is not None:
            draw.polygon(points, fill=float(rng.uniform(0.35, 0.5)))
    return ndimage.uniform_filter(np.asarray(shadow), size=max(3, int(round(w / 800))))


def _street(camera: Camera, rng: np.random.Generator, road: Road, cars: list[CarPose],
            sizes: dict[int, tuple[float, float, float]], rgb: bool) -> np.ndarray:
    h, w = camera.height, camera.width
    dx, dy, dz = _rays(camera, road)
    ground = dy > 1e-4
    with np.errstate(divide="ignore"):
        t_ground = np.where(ground, road.height / np.maximum(dy, 1e-4), np.inf).astype(np.float32)
    xw, zw = t_ground * dx, t_ground * dz
    coarse = _noise(rng, h, w, (12, 16))
    fine = _noise(rng, h, w, (max(2, h // 16), max(2, w // 16)))
    # the road: asphalt, dashed lanes, solid edges, a crossing, kerbs and a jointed pavement
    rel = xw - road.ego
    road_grey = 0.3 + rng.uniform(-0.05, 0.05) + 0.05 * coarse + 0.04 * fine
    lane = np.abs(np.mod(rel - 1.75, 3.5) - 1.75)
    marks = (lane < 0.08) & (np.mod(zw, 9.0) < 3.5) & (np.abs(rel) < road.half_width - 1.0)
    marks |= np.abs(np.abs(rel) - (road.half_width - 0.4)) < 0.08
    if rng.random() < 0.5:
        z_cross = rng.uniform(15.0, 60.0)
        marks |= (np.abs(zw - z_cross) < 2.0) & (np.mod(rel, 1.0) < 0.5) & (np.abs(rel) < road.half_width - 0.6)
    street = np.where(marks, 0.75 + 0.05 * fine, road_grey)
    kerb = np.abs(rel) > road.half_width
    joints = (np.mod(zw, 1.5) < 0.06) | (np.mod(rel, 1.5) < 0.06)
    pavement = np.where(joints, 0.35, 0.55) + 0.05 * fine
    street = np.where(kerb, pavement, street)
    # facades over the pavement, sky above, haze with distance
    lateral = [float((road.rotation.T @ np.array(c.translation))[0]) - road.ego for c in cars]
    clear = (max([-x for x in lateral if x < 0], default=0.0), max([x for x in lateral if x > 0], default=0.0))
    facade, t_facade, facade_grey = _facades(rng, road, dx, dy, dz, t_ground, h, w, fine, clear)
    rows = np.arange(h, dtype=np.float32)[:, None] / max(h - 1, 1)
    sky = 0.8 + 0.1 * (1 - rows) + 0.03 * coarse
    gray = np.where(ground & (t_ground < FAR * 2), street, sky)
    gray = np.where(facade, facade_grey, gray)
    distance = np.where(facade, t_facade, np.where(ground, t_ground, FAR * 2))
    haze = np.exp(-np.minimum(distance, FAR * 2) / 250.0)
    gray = np.where(facade | ground, gray * haze + 0.7 * (1 - haze), gray)
    gray = np.where(ground & ~facade, gray * car_shadows(camera, road, cars, sizes, rng), gray)
    # poles (street lights, signs) along both kerbs, drawn far to near
    canvas = Image.fromarray(gray.astype(np.float32), "F")
    draw = ImageDraw.Draw(canvas)
    poles = []
    for side in (-1.0, 1.0):
        z = rng.uniform(5.0, 20.0)
        while z < 150.0:
            poles.append((road.ego + side * (road.half_width + 0.6), z, rng.uniform(5.0, 9.0), side))
            z += rng.uniform(12.0, 30.0)
    for x, z, tall, side in sorted(poles, key=lambda p: -p[1]):
        r = 0.12
        shape = np.array([[x - r, road.height, z], [x + r, road.height, z], [x + r, road.height - tall, z],
                          [x - r, road.height - tall, z]])
        arm = np.array([[x, road.height - tall, z], [x - side * 2.0, road.height - tall, z],
                        [x - side * 2.0, road.height - tall + 0.15, z], [x, road.height - tall + 0.15, z]])
        level = float(rng.uniform(0.1, 0.3))
        for part in (shape, arm):
            points = _project(camera, road, part)
            if points is not None:
                draw.polygon(points, fill=level)
        if rng.random() < 0.3:   # a sign plate
            plate = np.array([[x - 0.4, road.height - 3.2, z], [x + 0.4, road.height - 3.2, z],
                              [x + 0.4, road.height - 2.4, z], [x - 0.4, road.height - 2.4, z]])
            points = _project(camera, road, plate)
            if points is not None:
                draw.polygon(points, fill=float(rng.uniform(0.6, 0.9)))
    gray = np.clip(np.asarray(canvas), 0.0, 1.0).astype(np.float32)
    if not rgb:
        return gray[None]
    tint = np.where(ground[None] & ~facade[None], np.array([1.0, 1.0, 1.04])[:, None, None],
                    np.where(facade[None], np.array([1.05, 1.0, 0.95])[:, None, None],
                             np.array([0.9, 0.97, 1.1])[:, None, None]))
    return np.clip(gray[None] * tint, 0.0, 1.0).astype(np.float32)
