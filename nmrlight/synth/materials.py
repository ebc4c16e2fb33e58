"""Car materials (per-face albedo) and the random scene lighting."""

from __future__ import annotations

import numpy as np
import torch

from nmrlight.procedural import BODY, LIGHT, WHEEL, WINDOW, ProceduralCar

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



# --- realistic materials (the kaggle preset) -----------------------------------------------------
TRIM = 4            # material class of the black bumpers and sills (the lowest band of the body)
_TRIM_BAND = 0.2    # fraction of the car's height counted as trim, from the bottom

# (albedo, specular strength ks, Blinn-Phong exponent) of the fixed materials; paint varies per car
GLASS = (0.04, 0.9, 80.0)
TYRE = (0.03, 0.05, 8.0)
TRIM_BLACK = (0.06, 0.15, 16.0)
LAMP = (0.8, 0.6, 40.0)
PAINT_SPECULAR = ((0.25, 0.6), (20.0, 60.0))   # ks and exponent ranges (metallic paints shine more)


def material_classes(car: ProceduralCar) -> np.ndarray:
    """Per-face material class (F,): the car's BODY/WINDOW/WHEEL/LIGHT, body faces low on the car -> TRIM.

    The stored frame has the roof at negative y, so "low" is large y: a body face whose centroid lies
    in the lowest `_TRIM_BAND` of the height becomes trim.
    """
    mesh = car.mesh
    y = mesh.vertices[mesh.faces].mean(1)[:, 1]
    lo, hi = mesh.vertices[:, 1].min(), mesh.vertices[:, 1].max()
    classes = car.materials.copy()
    classes[(classes == BODY) & (y > hi - _TRIM_BAND * (hi - lo))] = TRIM
    return classes


def realistic_materials(car: ProceduralCar, rng: np.random.Generator, rgb: bool
                        ) -> tuple[torch.Tensor, np.ndarray, np.ndarray]:
    """Per-face albedo (F, C), specular strength (F,) and exponent (F,) of a realistically painted car.

    Paint from the palette with a per-car variation and a 2 % per-face mottling (dirt, panels), dark
    glass, black tyres and trim, bright lamps; glass and paint carry specular highlights.
    """
    if rgb:
        paint = np.clip(_PALETTE[rng.integers(len(_PALETTE))] + rng.normal(0, 0.05, 3), 0.03, 0.95)
    else:
        paint = np.full(1, float(np.clip(_PALETTE[rng.integers(len(_PALETTE))] @ _LUMA + rng.normal(0, 0.05),
                                         0.05, 0.9)))
    classes = material_classes(car)
    n_faces, channels = len(classes), len(paint)
    albedo = np.empty((n_faces, channels))
    ks = np.empty(n_faces)
    shininess = np.empty(n_faces)
    body = classes == BODY
    albedo[body] = paint[None, :] * (1.0 + rng.normal(0.0, 0.02, (int(body.sum()), 1)))
    ks[body] = rng.uniform(*PAINT_SPECULAR[0])
    shininess[body] = rng.uniform(*PAINT_SPECULAR[1])
    for cls, (a, k, e) in ((WINDOW, GLASS), (WHEEL, TYRE), (TRIM, TRIM_BLACK), (LIGHT, LAMP)):
        pick = classes == cls
        albedo[pick], ks[pick], shininess[pick] = a, k, e
    return torch.as_tensor(np.clip(albedo, 0.0, 1.0), dtype=torch.float32), ks, shininess


def specular(normals: np.ndarray, depth: np.ndarray, covered: np.ndarray, fx: float, fy: float, cx: float,
             cy: float, direction: np.ndarray, directional: float, ks: np.ndarray, shininess: np.ndarray
             ) -> np.ndarray:
    """Blinn-Phong highlights (H, W): directional * ks * max(0, n.h)^shininess where n.l > 0.

    `normals` (3, H, W) unit camera-frame normals facing the camera, `depth` (H, W) camera z, `covered`
    (H, W) bool; `ks`, `shininess` per pixel (H, W); `direction` toward the light. h = normalised
    (l + v), v the unit vector from the surface point to the camera at the origin.
    """
    h, w = depth.shape
    out = np.zeros((h, w), dtype=np.float32)
    rows, cols = np.nonzero(covered)
    if not len(rows):
        return out
    z = depth[rows, cols]
    points = np.stack([(cols + 0.5 - cx) / fx * z, (rows + 0.5 - cy) / fy * z, z], 1)
    view = -points / np.linalg.norm(points, axis=1, keepdims=True)
    light = np.asarray(direction, dtype=np.float64) / np.linalg.norm(direction)
    half = view + light[None, :]
    half /= np.maximum(np.linalg.norm(half, axis=1, keepdims=True), 1e-12)
    n = normals[:, rows, cols].T
    lit = (n @ light) > 0
    cos_h = np.clip((n * half).sum(1), 0.0, 1.0)
    out[rows, cols] = directional * ks[rows, cols] * np.where(lit, cos_h ** shininess[rows, cols], 0.0)
    return out
