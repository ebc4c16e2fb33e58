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

