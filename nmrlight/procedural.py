"""Procedural closed car meshes in the ApolloCar3D model frame, for demos and synthetic data.

The real ApolloCar3D meshes cannot ship with the project, so the demo and the synthetic data sets use
these: a body lofted from rounded cross-sections along the length (hood, windscreen, roof, rear
window and boot differ per kind) and four cylindrical wheels. Every part is a closed, outward-wound
surface, so the whole mesh is watertight with positive volume (wheels overlap the body, as the real
meshes' parts do). A per-face material id lets the synthesiser paint windows and tyres darker.

Frame (matching the real files, checked on baojun-310-2017 and aodi-a6): length along z with the
front (hood, the longer overhang) at +z, width along x, origin at the bounding-box centre, and the
roof at NEGATIVE stored y, wheels at positive y. The Kaggle projection flips y and turns by v3 ~ pi,
which puts the roof up in the camera frame.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from nmrlight.errors import NmrlightError
from nmrlight.io.cars import CarMesh, car_class, car_name, write_car_json

KINDS = ("sedan", "hatchback", "suv", "van")

BODY, WINDOW, WHEEL, LIGHT = 0, 1, 2, 3

# Size ranges (metres) per kind: length, width, height (wheels included).
_SIZES = {
    "hatchback": ((3.6, 4.3), (1.62, 1.80), (1.42, 1.60)),
    "sedan": ((4.4, 5.1), (1.70, 1.90), (1.40, 1.52)),
    "suv": ((4.3, 5.0), (1.80, 2.00), (1.62, 1.85)),
    "van": ((4.6, 5.2), (1.75, 1.95), (1.75, 1.90)),
}

# Side profile keypoints: (fraction of length from the rear, height of the top as a fraction of H).
# Between the roof ends lies the roof; the slopes next to it are the rear window and the windscreen.
_PROFILES = {
    "sedan": [(0.0, 0.58), (0.04, 0.66), (0.20, 0.68), (0.36, 1.0), (0.60, 1.0), (0.74, 0.66),
              (0.96, 0.60), (1.0, 0.52)],
    "hatchback": [(0.0, 0.60), (0.03, 0.72), (0.10, 0.97), (0.16, 1.0), (0.54, 1.0), (0.72, 0.67),
                  (0.96, 0.61), (1.0, 0.53)],
    "suv": [(0.0, 0.64), (0.03, 0.80), (0.08, 0.99), (0.12, 1.0), (0.60, 1.0), (0.74, 0.72),
            (0.96, 0.68), (1.0, 0.60)],
    "van": [(0.0, 0.62), (0.02, 0.92), (0.05, 1.0), (0.78, 1.0), (0.88, 0.70), (0.97, 0.64),
            (1.0, 0.56)],
}
# Belt line (bottom of the side windows) as a fraction of H, axle positions as fractions of length.
_BELT = {"sedan": 0.66, "hatchback": 0.64, "suv": 0.68, "van": 0.60}
_AXLES = {"sedan": (0.19, 0.78), "hatchback": (0.15, 0.80), "suv": (0.18, 0.80), "van": (0.15, 0.83)}
_BOXINESS = {"sedan": 3.0, "hatchback": 3.2, "suv": 4.0, "van": 4.5}

_WHEEL_SEGMENTS = 24


@dataclass
class ProceduralCar:
    """A generated car: the mesh (stored frame, faces 0-based) and a material id per face."""

    mesh: CarMesh
    materials: np.ndarray  # (F,) int: 0 body, 1 window, 2 wheel, 3 lights
    kind: str = "sedan"


def _ring_layout(body_faces: int) -> tuple[int, int]:
    """Stations along z and points per ring so that a closed loft has about `body_faces` triangles."""
    ring = max(16, 4 * int(round(np.sqrt(body_faces / 2.0) / 4.0)))
    stations = max(8, int(round(body_faces / (2.0 * ring))))
    return stations, ring


def _signed_volume(vertices: np.ndarray, faces: np.ndarray) -> float:
    a, b, c = vertices[faces[:, 0]], vertices[faces[:, 1]], vertices[faces[:, 2]]
    return float(np.einsum("ij,ij->", a, np.cross(b, c)) / 6.0)


def _cap(first: int, ring: int, centre: int, reverse: bool) -> np.ndarray:
    """Fan triangles closing ring vertices first..first+ring-1 with a centre vertex."""
    i = np.arange(ring)
    a, b = first + i, first + (i + 1) % ring
    tri = np.stack([np.full(ring, centre), b, a] if reverse else [np.full(ring, centre), a, b], axis=1)
    return tri


def _loft(rings: np.ndarray) -> np.ndarray:
    """Quads between consecutive rings (S, R, 3) as triangles, plus end caps; centres appended last."""
    s, r = rings.shape[:2]
    i = np.arange(s - 1)[:, None] * r
    j = np.arange(r)[None, :]
    a = (i + j).ravel()
    b = (i + (j + 1) % r).ravel()
    c = a + r
    d = b + r
    side = np.concatenate([np.stack([a, b, d], 1), np.stack([a, d, c], 1)])
    start_cap = _cap(0, r, s * r, reverse=True)
    end_cap = _cap((s - 1) * r, r, s * r + 1, reverse=False)
    return np.concatenate([side, start_cap, end_cap])


def _wheel(centre: np.ndarray, radius: float, width: float, segments: int) -> tuple[np.ndarray, np.ndarray]:
    """A closed cylinder along x: vertices and faces (outward winding fixed by the caller)."""
    t = 2 * np.pi * np.arange(segments) / segments
    circle = np.stack([np.zeros(segments), radius * np.sin(t), radius * np.cos(t)], 1)
    rings = np.stack([circle + centre - [width / 2, 0, 0], circle + centre + [width / 2, 0, 0]])
    faces = _loft(rings)
    verts = np.concatenate([rings.reshape(-1, 3), [centre - [width / 2, 0, 0], centre + [width / 2, 0, 0]]])
    return verts, faces


def _smooth(values: np.ndarray, width: int) -> np.ndarray:
    if width < 2:
        return values
    kernel = np.ones(width) / width
    padded = np.pad(values, width, mode="edge")
    return np.convolve(padded, kernel, mode="same")[width:-width]


def make_car(kind: str = "sedan", seed: int = 0, target_faces: int = 5000) -> ProceduralCar:
    """A plausible closed car of `kind` ('sedan', 'hatchback', 'suv', 'van'), random sizes from `seed`.

    About `target_faces` triangles (within a few per cent); vertices in the stored ApolloCar3D frame.
    """
    if kind not in KINDS:
        raise NmrlightError(f"procedural car kind must be one of {', '.join(KINDS)}, got {kind!r}")
    if target_faces < 800:
        raise NmrlightError(f"procedural car target_faces must be at least 800, got {target_faces}")
    rng = np.random.default_rng(seed)
    (l0, l1), (w0, w1), (h0, h1) = _SIZES[kind]
    length, width, height = rng.uniform(l0, l1), rng.uniform(w0, w1), rng.uniform(h0, h1)

    wheel_faces = 4 * 4 * _WHEEL_SEGMENTS
    stations, ring = _ring_layout(target_faces - wheel_faces)

    # Stations along the length, denser near the rounded ends.
    s = np.linspace(0.0, 1.0, stations)
    f = 0.6 * s + 0.4 * (1 - np.cos(np.pi * s)) / 2
    z = f * length

    # Side profile: top, belt, bottom heights (fractions of H) with per-seed jitter.
    keys = np.array(_PROFILES[kind], dtype=np.float64)
    kf, kh = keys[:, 0].copy(), keys[:, 1].copy()
    inner = slice(1, len(kf) - 1)
    kf[inner] += rng.normal(0.0, 0.012, len(kf) - 2)
    kf = np.maximum.accumulate(np.clip(kf, 0.0, 1.0))
    kh[kh < 0.99] += rng.normal(0.0, 0.02, int((kh < 0.99).sum()))
    top = _smooth(np.interp(f, kf, kh), max(1, stations // 25)) * height
    top[[0, -1]] = np.interp(f[[0, -1]], kf, kh) * height
    belt_frac = _BELT[kind] + rng.normal(0.0, 0.01)
    belt = np.minimum(belt_frac * height + 0.03 * height * (0.5 - f), top - 0.015 * height)
    clearance = rng.uniform(0.14, 0.2) * (1.2 if kind in ("suv", "van") else 1.0)
    end = np.clip(np.minimum(f, 1 - f) / 0.08, 0.0, 1.0)          # 0 at the ends, 1 inside
    rounding = np.sqrt(1 - (1 - end) ** 2)
    bottom = clearance + (1 - rounding) * 0.22 * height
    half_w = width / 2 * (0.955 + 0.045 * rounding) * (0.82 + 0.18 * rounding)
    cabin = np.clip((top - belt) / ((1.0 - belt_frac) * height), 0.0, 1.0)
    tumble = rng.uniform(0.72, 0.8) if kind in ("sedan", "hatchback") else rng.uniform(0.8, 0.88)
    half_w_top = half_w * (1 - (1 - tumble) * cabin)

    # Rings: a superellipse; the lower half spans bottom..belt, the upper half belt..top with taper.
    n = _BOXINESS[kind]
    theta = 2 * np.pi * (np.arange(ring) + 0.5) / ring - np.pi / 2     # starts at the bottom centre
    c, sn = np.cos(theta), np.sin(theta)
    xu = np.sign(c) * np.abs(c) ** (2 / n)
    yu = np.sign(sn) * np.abs(sn) ** (2 / n)
    up = yu > 0
    height_at = np.where(up[None, :], belt[:, None] + (top - belt)[:, None] * yu[None, :],
                         belt[:, None] + (belt - bottom)[:, None] * yu[None, :])
    rise = np.clip(yu, 0.0, None)[None, :] ** 1.5
    taper = np.where(up[None, :], half_w[:, None] + (half_w_top - half_w)[:, None] * rise,
                     half_w[:, None] * (1 - 0.06 * yu[None, :] ** 4))
    rings = np.stack([taper * xu[None, :], height_at, np.broadcast_to(z[:, None], height_at.shape)], -1)
    body_v = np.concatenate([rings.reshape(-1, 3), [rings[0].mean(0), rings[-1].mean(0)]])
    body_f = _loft(rings)

    # Materials of the body: windows on the cabin above the belt, lights at the ends.
    nside = 2 * (stations - 1) * ring
    q_station = np.concatenate([np.repeat(np.arange(stations - 1), ring)] * 2)
    q_ring = np.concatenate([np.tile(np.arange(ring), stations - 1)] * 2)
    fc = (f[q_station] + f[q_station + 1]) / 2
    th = theta[q_ring] + np.pi / ring
    slope = np.abs(np.gradient(top, z))
    slope_q = np.maximum(slope[q_station], slope[q_station + 1])
    cabin_q = np.minimum(cabin[q_station], cabin[q_station + 1])
    upper = (th > 0.25) & (th < np.pi - 0.25)
    side = upper & ((th < 1.05) | (th > np.pi - 1.05))
    crown = upper & ~side
    pillar = np.abs(fc - (kf[2] + kf[-3]) / 2) < 0.012
    window = (cabin_q > 0.55) & ((side & ~pillar & (slope_q < 0.9)) | (crown & (slope_q > 0.25)))
    near_end = (fc < 0.035) | (fc > 0.965)
    lamp_h = (th > -0.9) & (th < -0.25) | (th > np.pi + 0.25) & (th < np.pi + 0.9)
    light = near_end & lamp_h
    body_m = np.zeros(len(body_f), dtype=np.int64)
    body_m[:nside][window] = WINDOW
    body_m[:nside][light] = LIGHT

    # Wheels: radius from the height, outer face near the body side, touching the ground (height 0).
    radius = rng.uniform(0.29, 0.33) * (1.12 if kind in ("suv", "van") else 1.0)
    tyre = rng.uniform(0.19, 0.24)
    track = width / 2 - 0.04 - tyre / 2
    parts = [(body_v, body_f, body_m)]
    for axle in _AXLES[kind]:
        for side_sign in (-1.0, 1.0):
            centre = np.array([side_sign * track, radius, axle * length])
            wv, wf = _wheel(centre, radius, tyre, _WHEEL_SEGMENTS)
            parts.append((wv, wf, np.full(len(wf), WHEEL, dtype=np.int64)))

    # Orient every closed part outward, then go to the stored frame (y = -height, bbox centred).
    verts, faces, mats, offset = [], [], [], 0
    for v, fpart, m in parts:
        if _signed_volume(v, fpart) < 0:
            fpart = fpart[:, ::-1]
        verts.append(v)
        faces.append(fpart + offset)
        mats.append(m)
        offset += len(v)
    vertices = np.concatenate(verts)
    faces_all = np.concatenate(faces)
    vertices = vertices * np.array([1.0, -1.0, 1.0])                   # y: height -> -height
    faces_all = faces_all[:, ::-1]                                     # the reflection flips winding
    lo, hi = vertices.min(0), vertices.max(0)
    vertices = vertices - (lo + hi) / 2
    mesh = CarMesh(name=f"procedural-{kind}-{seed}", vertices=vertices.astype(np.float64),
                   faces=np.ascontiguousarray(faces_all, dtype=np.int64), car_type=kind)
    return ProceduralCar(mesh=mesh, materials=np.concatenate(mats), kind=kind)


def kind_for_model(model_type: int) -> str:
    """The procedural kind standing in for an ApolloCar3D model id: by its class (and parity for SUVs)."""
    cls = car_class(model_type)
    if cls == "2x":
        return "hatchback"
    if cls == "3x":
        return "sedan"
    return "suv" if model_type % 2 == 0 else "van"


def car_for_model(model_type: int, target_faces: int = 5000) -> ProceduralCar:
    """The deterministic procedural stand-in for model `model_type`, named like the real model."""
    kind = kind_for_model(model_type)
    car = make_car(kind, seed=int(model_type), target_faces=target_faces)
    car.mesh.name = car_name(model_type)
    return car


def write_models(folder: str | Path, model_types) -> list[Path]:
    """Write `folder`/car_models_json/<name>.json procedural meshes for `model_types`; returns the paths."""
    out = Path(folder) / "car_models_json"
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for model_type in sorted({int(m) for m in model_types}):
        path = out / f"{car_name(model_type)}.json"
        write_car_json(car_for_model(model_type).mesh, path)
        paths.append(path)
    return paths
