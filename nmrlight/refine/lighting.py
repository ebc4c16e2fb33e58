"""Lighting of one photograph from its best-seen cars: ambient, directional, direction, per-car albedo.

Model (NMR, grayscale): I = a_k (l_a + l_d max(0, n . d)) for pixel normals n of car k (camera frame,
two-sided), fitted with a robust (Huber) loss on the eroded mask inside the rendered silhouette.
Poses are held fixed: each car is rendered once for its normals, then the fit is a small tensor
problem (several starting directions, Adam), so it costs little beyond one render per car.

Scale convention: a_k and (l_a, l_d) can trade a common factor, so we fix l_a + l_d = 1 and let the
albedos carry the brightness. To compare with a true lighting (A, D): l_a = A / (A + D),
l_d = D / (A + D), and a_k = paint_k (A + D). The direction d is a unit vector toward the light.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from nmrlight.refine.window import View
from nmrlight.render import render
from nmrlight.scene import MeshObject, Scene
from nmrlight.shade import Lighting

_STARTS = ((0.0, -1.0, -0.5), (0.7, -0.7, -0.3), (-0.7, -0.7, -0.3), (0.0, -0.5, 0.8), (0.6, -0.3, 0.6),
           (-0.6, -0.3, 0.6), (0.0, -1.0, 0.0), (0.0, 0.3, -1.0))


@dataclass
class LightSample:
    """Normals (N, 3) and photo values (N,) of one car's interior pixels."""

    normals: torch.Tensor
    values: torch.Tensor


@dataclass
class LightFit:
    ambient: float
    directional: float
    direction: tuple[float, float, float]
    albedo: list[float]
    loss: float

    def lighting(self) -> Lighting:
        return Lighting(ambient=self.ambient, directional=self.directional, direction=self.direction)


def sample_car(vertices: torch.Tensor, faces: torch.Tensor, rotation: torch.Tensor, translation: torch.Tensor,
               view: View, neighbours: list[MeshObject] = ()) -> LightSample:
    """Render one car (with its occluders) in `view` and keep the normals of its eroded-mask pixels."""
    objects = [MeshObject(vertices, faces, rotation.detach(), translation.detach()), *neighbours]
    with torch.no_grad():
        out = render(Scene(objects), view.camera, None, edges="none", outputs={"normals"})
    region = view.interior & (out.object_id == 0)
    normals = out.normals.permute(1, 2, 0)[region]
    return LightSample(normals, view.photo[region])


def fit_lighting(samples: list[LightSample], delta: float = 0.05, steps: int = 150) -> LightFit | None:
    """Fit (l_a, l_d = 1 - l_a, d, a_k) to the samples; None when there are too few pixels."""
    samples = [s for s in samples if len(s.values) >= 20]
    if not samples:
        return None
    normals = torch.cat([s.normals for s in samples]).double()
    values = torch.cat([s.values for s in samples]).double()
    owner = torch.cat([torch.full((len(s.values),), k, dtype=torch.long) for k, s in enumerate(samples)])
    # pixels of each car weigh 1/count, so a big car does not drown the others
    counts = torch.bincount(owner).double()
    weight = (1.0 / counts)[owner]
    weight = weight / weight.sum()
    init_albedo = torch.stack([s.values.double().median() for s in samples]).clamp_min(0.02)
    best: LightFit | None = None
    for start in _STARTS:
        logit = torch.zeros((), dtype=torch.float64, requires_grad=True)
        d = torch.tensor(start, dtype=torch.float64, requires_grad=True)
        log_a = torch.log(init_albedo * 1.2).clone().requires_grad_(True)
        optimiser = torch.optim.Adam([logit, d, log_a], lr=0.05)
        for step in range(steps + 1):
            la = torch.sigmoid(logit)
            direction = d / d.norm().clamp_min(1e-9)
            shade = la + (1 - la) * F.relu(normals @ direction)
            pred = torch.exp(log_a)[owner] * shade
            loss = (weight * F.huber_loss(pred, values, delta=delta, reduction="none")).sum() / delta
            if step == steps:
                break
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
        value = float(loss.detach())
        if best is None or value < best.loss:
            la_v = float(torch.sigmoid(logit.detach()))
            dn = (d / d.norm()).detach().numpy()
            best = LightFit(la_v, 1.0 - la_v, tuple(float(x) for x in dn),
                            [float(x) for x in torch.exp(log_a).detach()], value)
    return best


def normalise_truth(ambient: float, directional: float) -> tuple[float, float, float]:
    """A true (A, D) in this module's convention: (A / (A + D), D / (A + D), albedo factor A + D)."""
    total = ambient + directional
    return ambient / total, directional / total, total


def direction_error_deg(a, b) -> float:
    a = np.asarray(a, float) / np.linalg.norm(a)
    b = np.asarray(b, float) / np.linalg.norm(b)
    return float(np.degrees(np.arccos(np.clip(a @ b, -1.0, 1.0))))
