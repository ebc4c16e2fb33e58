"""The detector error model: noisy, scored predictions (with misses and false positives) from the truth."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from nmrlight.camera import KAGGLE_FX
from nmrlight.io.poses import CarPose
from nmrlight.synth.layout import _wrap


@dataclass
class ErrorModel:
    """Detector errors added to the truth to make predictions.csv (all sigmas are one standard deviation).

    Angles: heading = v2, pitch = v1, roll = v3, degrees. Translation: the depth error scales the
    centre along its viewing ray (the projected centre stays put), relative sigma `depth_sigma`, with
    a fraction `outlier_rate` of errors `outlier_scale` times larger; the lateral error moves it
    across the ray, relative sigma `lateral_sigma` plus `pixel_sigma` pixels at focal length `fx`.
    Confidence lies in (0.3, 1) and drops with the size of the error and with distance; a flip does
    not lower it (a real detector's confidence does not say which cars it mirrored).

    Depth-dependent options (None: the constants above): `rotation_by_depth` = (depths m, scale
    factors), interpolated, multiplies all three angle sigmas; `lateral_far` is the lateral sigma at
    100 m (growing linearly from `lateral_sigma` at 0 m); `detect_by_depth` = (p_near, z50, width)
    gives each car the detection probability p_near / (1 + exp((z - z50) / width)) (times 1 -
    `miss_rate`). A flip turns the heading by pi.
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
    rotation_by_depth: tuple[tuple[float, ...], tuple[float, ...]] | None = None
    lateral_far: float | None = None
    detect_by_depth: tuple[float, float, float] | None = None

    def detection_probability(self, depth: np.ndarray) -> np.ndarray:
        """Probability that the detector finds a car at camera depth `depth` (m)."""
        p = np.full(np.shape(depth), 1.0 - self.miss_rate)
        if self.detect_by_depth is not None:
            p_near, z50, width = self.detect_by_depth
            p = p * p_near / (1.0 + np.exp((np.asarray(depth) - z50) / width))
        return p

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
            if self.lateral_far is None:
                lat = rng.normal(0.0, lat_sigma, (n, 2))
            else:
                far = self.lateral_sigma + (self.lateral_far - self.lateral_sigma) * np.clip(t[:, 2] / 100.0, 0, 1)
                lat_sigma = np.hypot(far, self.pixel_sigma / fx)
                lat = rng.normal(0.0, 1.0, (n, 2)) * lat_sigma[:, None]
            ray = t / dist[:, None]
            e1 = np.cross(ray, [0.0, 1.0, 0.0])
            e1 /= np.linalg.norm(e1, axis=1, keepdims=True)
            e2 = np.cross(ray, e1)
            t_new = t * (1 + depth)[:, None] + dist[:, None] * (lat[:, :1] * e1 + lat[:, 1:] * e2)
            sig = np.radians([self.pitch_sigma_deg, self.heading_sigma_deg, self.roll_sigma_deg])
            if self.rotation_by_depth is not None:
                sig = sig[None, :] * np.interp(t[:, 2], *self.rotation_by_depth)[:, None]
            da = rng.normal(0.0, 1.0, (n, 3)) * sig
            flips = rng.random(n) < self.flip_rate
            # the confidence knows the heading's spread, not whether the detector mirrored the car: a real
            # detector is as sure of a flipped car as of any other (until 2026-12-02 a flip scored +3 and
            # its pi as heading error, so every flip sat at the floor, 0.3: a label no real detector gives)
            score = np.sqrt((np.square(depth / max(self.depth_sigma, 1e-9))
                             + np.square(da[:, 1] / np.maximum(sig[..., 1], 1e-9))
                             + np.square(lat).sum(1) / np.maximum(lat_sigma, 1e-9) ** 2 / 2) / 3)
            da[flips, 1] += np.pi
            a_new = _wrap(a + da)
            logit = 2.0 - 1.5 * score - 1.0 * dist / 100.0 + rng.normal(0.0, 0.3, n)
            conf = 0.3 + 0.7 / (1 + np.exp(-logit))
            if self.detect_by_depth is None:
                keep = rng.random(n) >= self.miss_rate
            else:
                keep = rng.random(n) < self.detection_probability(t[:, 2])
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

