"""Material classes of a car mesh from its geometry alone: body paint, glass, dark tyres and trim.

Real ApolloCar3D meshes carry no material labels, yet a car is about 30 % glass and tyre, whose
brightness one albedo cannot explain. So each face gets a class from where it sits on the car:

- GLASS: above the belt line (the upper ~40 % of the height), not roof-like (normal not vertical);
- DARK: the wheels, found from the mesh itself: the lowest vertices are the four tyre contact
  patches, whose positions along the length give the axles; faces within a wheel radius of an
  axle (in the side view) and toward the car's sides are tyre, rim or wheel arch;
- BODY: everything else.

The classes are a prior, not the truth (pillars count as glass, dark bumpers as body); the lighting
fit gives each class of each car its own albedo and downweights the pixels that still disagree.
Works in the object frame (after the y flip, roof at +y), on any mesh with that orientation.
"""

from __future__ import annotations

import numpy as np

BODY, GLASS, DARK = 0, 1, 2
CLASS_NAMES = ("body", "glass", "dark")

BELT = 0.6                 # belt line, fraction of the height from the ground
ROOF_NORMAL = 0.9          # |n_up| above this is roof/bonnet (paint), not glass
WHEEL_RADIUS = 0.22        # fraction of the height (a 0.32 m wheel on a 1.45 m car)
WHEEL_REACH = 1.15         # faces within this many wheel radii of an axle are wheel
WHEEL_SIDE = 0.45          # ... and at least this fraction of the half width off the centre line


def _axles(vertices: np.ndarray, ground: float, height: float) -> tuple[float, float]:
    """Positions along the length (z) of the rear and front axles: the lowest vertices, split at z = 0."""
    low = vertices[vertices[:, 1] < ground + 0.04 * height]
    zc = float(np.median(vertices[:, 2]))
    rear, front = low[low[:, 2] < zc, 2], low[low[:, 2] >= zc, 2]
    length = float(np.ptp(vertices[:, 2]))
    z0, z1 = float(vertices[:, 2].min()), float(vertices[:, 2].max())
    rear_z = float(np.median(rear)) if len(rear) else z0 + 0.18 * length
    front_z = float(np.median(front)) if len(front) else z1 - 0.18 * length
    return rear_z, front_z


def material_classes(vertices: np.ndarray, faces: np.ndarray) -> np.ndarray:
    """Class (BODY, GLASS or DARK) of each face (F,), from object-frame vertices (V, 3) (y up)."""
    v = np.asarray(vertices, dtype=np.float64)
    f = np.asarray(faces, dtype=np.int64)
    tri = v[f]
    centre = tri.mean(1)
    normal = np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])
    normal /= np.maximum(np.linalg.norm(normal, axis=1, keepdims=True), 1e-12)
    ground, top = float(v[:, 1].min()), float(v[:, 1].max())
    height = max(top - ground, 1e-6)
    half_width = max(float(np.abs(v[:, 0]).max()), 1e-6)
    rise = (centre[:, 1] - ground) / height
    out = np.full(len(f), BODY, dtype=np.int64)
    out[(rise > BELT) & (np.abs(normal[:, 1]) < ROOF_NORMAL)] = GLASS
    radius = WHEEL_RADIUS * height
    hub_y = ground + radius
    side = np.abs(centre[:, 0]) > WHEEL_SIDE * half_width
    for axle in _axles(v, ground, height):
        near = np.hypot(centre[:, 1] - hub_y, centre[:, 2] - axle) < WHEEL_REACH * radius
        out[near & side] = DARK
    return out
