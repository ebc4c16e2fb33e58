"""Mesh choice for cars without a model id (the Kaggle submission format has none).

Three steps, cheap first:
1. Shortlist: every mesh of car_models_json/ is rendered at the car's initial rotation, along the
   initial ray, at five depths from 0.87 to 1.14 times the detector's (7 % apart) in a small view of
   the car's window, the other cars in front of it included; each is scored by its best box-aligned
   overlap with the car's mask (`associate.pair_score`, forgiving the detector's lateral error).
   Searching the depth makes the score one of shape more than of size: a car looks the same as one
   10 % larger 10 % farther away, so at the detector's depth alone (its error is 7 % typically, 20 %
   and more in its tail) the shortlist favoured the meshes whose size made up for the depth error.
   The best `keep` go on.
2. Screen: when the shortlist is longer than the meshes to refine, each shortlisted mesh is refined
   with the coarsest stage only (a few coarse renders, from the car's own start) and the best
   `mesh_candidates` by that loss go on: the silhouette at the detector's pose cannot tell meshes
   apart that need a slightly different pose to fit.
3. Pick: each remaining mesh is refined in full (`refine_pose`); the lowest final loss wins. The
   loss includes the prior toward the detector's depth, so of two meshes whose silhouettes fit alike
   at different depths (a larger car farther away) the one nearer the detector's depth wins.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from nmrlight.camera import Camera
from nmrlight.io.dataset import DataFolder
from nmrlight.refine.associate import pair_score
from nmrlight.refine.window import Box, _resample
from nmrlight.render import fixed_layer, render
from nmrlight.scene import MeshObject, Scene

DEPTH_STEP = 1.07          # ratio between neighbouring depths of the shortlist's search
DEPTH_STEPS = 2            # steps each side of the detector's depth (1.07 ** 2 = 1.14)
_TYPICAL: dict[tuple[str, tuple[int, ...]], int] = {}


@dataclass
class MeshChoice:
    """The mesh chosen for one car, the runner-up and by how much the chosen one's final loss was lower."""

    chosen: int
    runner_up: int | None = None
    margin: float | None = None                      # runner-up's final loss minus the chosen one's
    losses: dict[int, float] | None = None           # final loss of each refined candidate
    shortlist: list[tuple] | None = None  # (model id, shortlist score[, depth factor]), best first
    screened: dict[int, float] | None = None         # coarsest stage's loss of each screened mesh

    def to_dict(self) -> dict:
        return {"chosen": self.chosen, "runner_up": self.runner_up,
                "margin": None if self.margin is None else round(self.margin, 6),
                "losses": {str(k): round(v, 6) for k, v in (self.losses or {}).items()},
                "shortlist": [[entry[0], *(round(v, 4) for v in entry[1:])] for entry in (self.shortlist or [])],
                "screened": {str(k): round(v, 6) for k, v in (self.screened or {}).items()}}


def typical_model(data: DataFolder, models: list[int]) -> int:
    """The mesh whose length, width and height lie closest to the median of `models` (for cars with no
    evidence of their own: no mask, or before their masks are known)."""
    key = (str(data.root), tuple(models))
    if key not in _TYPICAL:
        sizes = np.array([np.ptp(data.car(m).object_vertices(), axis=0) for m in models])
        median = np.median(sizes, axis=0)
        _TYPICAL[key] = models[int(np.argmin(np.abs(np.log(sizes / median)).sum(1)))]
    return _TYPICAL[key]


def shortlist(mesh: Callable[[int], tuple[torch.Tensor, torch.Tensor]], models: list[int],
              rotation: torch.Tensor, translation: torch.Tensor, camera: Camera, window: Box,
              mask: np.ndarray, dont_care: np.ndarray | None, occluders: list[MeshObject],
              size: int = 64, keep: int = 3, steps: int = DEPTH_STEPS) -> list[tuple[int, float, float]]:
    """The `keep` meshes whose silhouettes fit the mask best at the initial rotation, each at its best
    depth along the initial ray: [(model id, score, depth factor)], best first.

    mask and dont_care are the window's crops (image pixels); occluders are the other cars of the
    window (rendered so that their pixels hide this car's, as in the photo). steps: depths searched
    each side of the detector's, DEPTH_STEP apart (0: the detector's depth only).
    """
    scale = min(1.0, size / max(window.width, window.height))
    cam = camera.window(window.x0, window.y0, window.width, window.height).scaled(scale)
    target = _resample(mask.astype(np.float32), cam.height, cam.width).numpy() > 0.5
    care = np.ones_like(target) if dont_care is None else \
        _resample(dont_care.astype(np.float32), cam.height, cam.width).numpy() < 0.5
    target &= care
    layer = fixed_layer(occluders, cam)   # the other cars, rasterised once for every mesh and depth
    scored = []
    for model in models:
        vertices, faces = mesh(model)
        tried = {}
        for factor in (DEPTH_STEP ** k for k in range(-steps, steps + 1)):
            car = MeshObject(vertices, faces, rotation, translation * factor)
            with torch.no_grad():
                scene = Scene([car]) if layer is not None else Scene([car, *occluders])
                out = render(scene, cam, None, edges="none", outputs=set(), fixed=layer)
            silhouette = (out.object_id == 0).numpy() & care
            tried[factor] = pair_score(silhouette, target, slack=np.inf)  # the car's own mask: no damping
        factor = max(tried, key=tried.get)
        scored.append((model, tried[factor], factor))
    scored.sort(key=lambda item: -item[1])
    return scored[:max(1, keep)]


def screen(models: list[int], coarse_loss: Callable[[int], float], keep: int) -> tuple[list[int], dict[int, float]]:
    """The `keep` models with the lowest `coarse_loss` (best first) and every model's loss; no screening
    (all kept, no losses) when there are no more than `keep`."""
    if len(models) <= keep:
        return list(models), {}
    losses = {m: float(coarse_loss(m)) for m in models}
    return sorted(models, key=lambda m: losses[m])[:max(1, keep)], losses


def pick(losses: dict[int, float], shortlisted: list[tuple],
         screened: dict[int, float] | None = None) -> MeshChoice:
    """The candidate with the lowest final loss, its runner-up and the margin between them."""
    ranked = sorted(losses.items(), key=lambda item: item[1])
    chosen = ranked[0][0]
    runner_up, margin = (ranked[1][0], ranked[1][1] - ranked[0][1]) if len(ranked) > 1 else (None, None)
    return MeshChoice(chosen, runner_up, margin, dict(losses), list(shortlisted), screened)
