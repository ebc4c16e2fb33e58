"""Ground plane per photograph: the cars stand on a road, which pins the depth of far cars.

A far car's silhouette says little about its depth (a few pixels of size), but its projected centre
is pinned to a fraction of a pixel; the ray through it meets the road at one depth. The road is
learned from the photograph's own cars, like the lighting: each car's contact point (the point
below its centre at the height of its wheels: `drop` along the model's y axis, the mesh's smallest
y after the Kaggle flip, since v3 ~ pi turns that side down) is fitted by
y = a + b z + c x (camera frame, metres) with weighted, robust least squares (best-subset start, Tukey reweighting)
and a Gaussian prior on (a, b, c) around the real data's road (its residual is large: the prior
matters only for photographs with few cars). Why this works for depth: moving a point along its
viewing ray by a fraction d of its depth moves it off the plane by about d * a (a ~ 1.8 m, the
camera's height), whatever the distance; so near, well-refined cars fix the plane to centimetres,
and a far car's plane depth is off by (height error) / a, relative.

Each car is then given the plane fitted without it (leave-one-out: its own depth error does not
pull the plane), the depth where its ray meets that plane (with the plane's uncertainty there plus
`ground_residual` for road unevenness), and its refined depth is fused with it by inverse variance
(the refined depth's sd grows with distance: `ground_depth_sd`). The car moves along its ray (its
projected centre and its rotation stay). A car whose two depths disagree beyond `ground_gate`
standard deviations is left alone (not on this road, or a wrong refinement). Fewer than
`ground_min_cars` other cars: nothing is done.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

# the contact plane of the real data's cars (camera frame): their centres' fit 1.04 + 0.169 z +
# 0.051 x, lowered by about half a car's height (0.75 m); prior standard deviations of each coefficient
PRIOR_PLANE = (1.8, 0.169, 0.051)
PRIOR_SD = (0.4, 0.03, 0.02)


@dataclass
class GroundPlane:
    """y = a + b z + c x (camera frame, y down), and the covariance of (a, b, c)."""

    coef: np.ndarray
    cov: np.ndarray
    cars: int                 # cars it was fitted on (weights > 0)

    def height(self, x: float, z: float) -> float:
        return float(self.coef @ np.array([1.0, z, x]))

    def height_sd(self, x: float, z: float) -> float:
        j = np.array([1.0, z, x])
        return float(np.sqrt(max(j @ self.cov @ j, 0.0)))


@dataclass
class GroundFix:
    """What the plane did to one car."""

    depth_before: float
    depth_plane: float
    depth_plane_sd: float
    depth_after: float
    cars: int                 # cars of the leave-one-out plane
    used: bool                # False: the depths disagreed beyond the gate (car left alone)
    source: str = "refined"   # "initial": the refined depth disagreed, the fallback (detector's) pose agreed

    def to_dict(self) -> dict:
        return {"depth_before": round(self.depth_before, 3), "depth_plane": round(self.depth_plane, 3),
                "depth_plane_sd": round(self.depth_plane_sd, 3), "depth_after": round(self.depth_after, 3),
                "cars": self.cars, "used": self.used, "source": self.source}


def contact_point(rotation: np.ndarray, translation: np.ndarray, drop: float) -> np.ndarray:
    """The point `drop` along the car's own (flipped) model y axis from its centre: with `drop` the mesh's
    smallest flipped y, the point under the centre at the height of the wheels."""
    return np.asarray(translation, float) + np.asarray(rotation, float) @ np.array([0.0, drop, 0.0])


def fit_plane(points: np.ndarray, sds: np.ndarray, residual: float = 0.05, iterations: int = 10,
              cauchy: float = 2.5, prior: tuple[float, float, float] = PRIOR_PLANE,
              prior_sd: tuple[float, float, float] = PRIOR_SD) -> GroundPlane:
    """Robust weighted fit of y = a + b z + c x to contact points (n, 3); `sds` the off-plane standard
    deviation of each point (m), `residual` the road's own unevenness added to each. Robust: the start
    is the best of the plane of all cars and those of all but one (truncated squares), then Tukey
    reweighting drops cars beyond 2 `cauchy` standard deviations (off the road, or badly placed)."""
    points = np.asarray(points, float).reshape(-1, 3)
    j = np.column_stack([np.ones(len(points)), points[:, 2], points[:, 0]])
    y = points[:, 1]
    base = 1.0 / (np.asarray(sds, float) ** 2 + residual ** 2)
    p0, p_inv = np.asarray(prior, float), np.diag(1.0 / np.asarray(prior_sd, float) ** 2)

    def solve(w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        cov = np.linalg.inv(j.T @ (w[:, None] * j) + p_inv)
        return cov @ (j.T @ (w * y) + p_inv @ p0), cov

    def cost(coef: np.ndarray) -> float:
        return float(np.sum(np.minimum(((y - j @ coef) * np.sqrt(base)) ** 2, cauchy ** 2)))

    # robust start: the plane of all cars, or of all but one (each tried), whichever leaves the lowest
    # truncated squared residuals (an outlier costs at most `cauchy`^2) over all cars; with a handful
    # of cars one far car off the road (high leverage) would otherwise tilt the plane onto itself
    coef, cov = solve(base)
    if len(y) >= 4:
        for k in range(len(y)):
            w = base.copy()
            w[k] = 0.0
            trial, trial_cov = solve(w)
            if cost(trial) < cost(coef):
                coef, cov = trial, trial_cov
    robust = np.ones(len(y))
    for _ in range(max(1, iterations)):
        # Tukey's biweight: a car beyond 2 `cauchy` standard deviations has no weight at all
        u = (y - j @ coef) * np.sqrt(base) / (2.0 * cauchy)
        robust = np.where(np.abs(u) < 1.0, (1.0 - u ** 2) ** 2, 0.0)
        coef, cov = solve(base * robust)
    return GroundPlane(coef, cov, int(np.sum(robust > 0.5)))


def plane_depth(plane: GroundPlane, rotation: np.ndarray, translation: np.ndarray, drop: float,
                residual: float) -> tuple[float, float]:
    """Depth (z, m) at which the car, moved along the ray through its centre, stands on the plane, and
    its standard deviation (the plane's height uncertainty there plus `residual`). NaN when the ray
    does not meet the plane in front of the camera."""
    t = np.asarray(translation, float)
    ray = t / t[2]
    d = np.asarray(rotation, float) @ np.array([0.0, drop, 0.0])
    a, b, c = plane.coef
    slope = ray[1] - b - c * ray[0]          # d(off-plane height)/dz along the ray
    if slope <= 1e-6:
        return float("nan"), float("nan")
    z = (a + b * d[2] + c * d[0] - d[1]) / slope
    if z <= 0:
        return float("nan"), float("nan")
    sd = np.hypot(plane.height_sd(z * ray[0], z), residual) / slope
    return float(z), float(sd)


def ground_fixes(rotations: list[np.ndarray], translations: list[np.ndarray], drops: list[float],
                 depth_sds: list[float | None], residual: float = 0.05, min_cars: int = 3,
                 gate: float = 3.0, fallbacks: list | None = None, fallback_sd: float = 0.1
                 ) -> list[GroundFix | None]:
    """Per car: its depth fused with where its ray meets the plane of the other cars (leave-one-out).

    `depth_sds[k]`: the relative sd of car k's depth (None: not used for the plane and not moved).
    A car gets None when fewer than `min_cars` other cars fit its plane or its ray misses it. When the
    two depths disagree beyond `gate` sd and `fallbacks[k]` gives another (rotation, translation) of
    the car (the detector's, relative depth sd `fallback_sd`) that agrees, that one is fused instead
    (`source` "initial": a refinement that walked off, e.g. a mostly hidden car, is undone)."""
    n = len(translations)
    points = np.array([contact_point(r, t, d) for r, t, d in zip(rotations, translations, drops, strict=True)]
                      ).reshape(-1, 3)
    usable = np.array([s is not None for s in depth_sds], bool)
    rel = np.array([s if s is not None else np.nan for s in depth_sds], float)
    out: list[GroundFix | None] = []
    for k in range(n):
        others = usable.copy()
        others[k] = False
        if not usable[k] or others.sum() < min_cars:
            out.append(None)
            continue
        # a point moved along its ray by a fraction d of its depth leaves the plane by about d * a
        off = rel[others] * PRIOR_PLANE[0]
        plane = fit_plane(points[others], off, residual)
        if plane.cars < min_cars:
            out.append(None)
            continue
        z_r = float(translations[k][2])
        z_p, sd_p = plane_depth(plane, rotations[k], translations[k], drops[k], residual)
        if not np.isfinite(z_p):
            out.append(None)
            continue
        sd_r = rel[k] * z_r
        used = abs(z_p - z_r) <= gate * np.hypot(sd_r, sd_p)
        fix = GroundFix(z_r, z_p, sd_p, _fuse(z_r, sd_r, z_p, sd_p) if used else z_r, plane.cars, bool(used))
        back = fallbacks[k] if fallbacks is not None else None
        if not used and back is not None:
            z_i = float(back[1][2])
            z_q, sd_q = plane_depth(plane, back[0], back[1], drops[k], residual)
            sd_i = fallback_sd * z_i
            if np.isfinite(z_q) and abs(z_q - z_i) <= gate * np.hypot(sd_i, sd_q):
                fix = GroundFix(z_r, z_q, sd_q, _fuse(z_i, sd_i, z_q, sd_q), plane.cars, True, "initial")
        out.append(fix)
    return out


def _fuse(z_a: float, sd_a: float, z_b: float, sd_b: float) -> float:
    """Inverse-variance mean of two depths."""
    return float((z_a / sd_a ** 2 + z_b / sd_b ** 2) / (1 / sd_a ** 2 + 1 / sd_b ** 2))


def refined_depth_sd(depth: float, near_sd: float, per_metre: float) -> float:
    """Relative sd of a refined car's depth: `near_sd` plus `per_metre` for each metre of distance."""
    return near_sd + per_metre * depth


def ground_results(results: list, drops: list[float], config) -> list[GroundFix | None]:
    """Move each car of a refined photograph along its ray to its fused depth (`ground_fixes`).

    `results`: the photograph's CarResults (refined poses updated in place, `extra["ground"]` says what
    the plane did); `drops[k]`: car k's contact offset (`contact_point`). Refined cars' depths have the
    relative sd `ground_depth_sd`; cars that kept the detector's pose (no mask, or the refinement did
    not improve) `ground_unrefined_sd` (None: not moved, not used for the plane)."""
    from nmrlight.io.poses import CarPose
    from nmrlight.rotations import kaggle_to_matrix

    near, per_metre = config.ground_depth_sd
    rotations, translations, sds = [], [], []
    for result in results:
        t = np.asarray(result.refined.translation, float)
        rotations.append(kaggle_to_matrix(np.asarray(result.refined.rotation, float)))
        translations.append(t)
        if result.status == "not visible" or t[2] <= 0:
            sds.append(None)
        elif result.status == "refined":
            sds.append(refined_depth_sd(float(t[2]), near, per_metre))
        else:
            sds.append(config.ground_unrefined_sd)
    fallbacks = [(kaggle_to_matrix(np.asarray(r.initial.rotation, float)), np.asarray(r.initial.translation, float))
                 if r.status == "refined" and config.ground_fallback and config.ground_unrefined_sd is not None
                 else None for r in results]
    fixes = ground_fixes(rotations, translations, drops, sds, config.ground_residual, config.ground_min_cars,
                         config.ground_gate, fallbacks, config.ground_unrefined_sd or 0.1)
    for result, fix in zip(results, fixes, strict=True):
        if fix is None:
            continue
        result.extra["ground"] = fix.to_dict()
        if not fix.used:
            continue
        p = result.initial if fix.source == "initial" else result.refined
        scale = fix.depth_after / float(p.translation[2])
        result.refined = CarPose(p.model_type, p.rotation, tuple(float(x) * scale for x in p.translation),
                                 result.refined.confidence)
    return fixes


def apply_ground(cars: list, results: dict, config) -> None:
    """`ground_results` for refine_image's cars (mesh, status) and their CarResults by index; the cars'
    poses follow (the lighting refit sees the moved cars)."""
    import torch

    from nmrlight.rotations import kaggle_to_matrix

    order = [car for car in cars if car.index in results]
    fixes = ground_results([results[car.index] for car in order],
                           [float(car.vertices[:, 1].min()) for car in order], config)
    for car, fix in zip(order, fixes, strict=True):
        if fix is not None and fix.used:
            pose = results[car.index].refined
            car.translation = torch.as_tensor(pose.translation, dtype=car.translation.dtype)
            if fix.source == "initial":
                car.rotation = torch.as_tensor(kaggle_to_matrix(np.asarray(pose.rotation, float)),
                                               dtype=car.rotation.dtype)
