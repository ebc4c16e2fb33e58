"""Pose hypotheses of the global stage, and their coarse render-and-compare score.

A real detector's errors include heading flips (front and back swapped, 7 % of cars), large heading
errors and depth errors of 10-20 %, all outside the local refinement's basin. Each car gets
hypotheses: the detector's pose and, by default, its flipped heading (+180 deg); heading turns
(`global_headings_deg`) and depths along the viewing ray (`global_depth_factors`, the projected centre
stays put) can be added. Each is rendered once, hard and small, with the other cars of the window, and
scored by the blurred silhouette against the mask, the photo's edges along the outline and the shading
under the learned light; `shortlist` keeps the detector's pose and the best few close to it.
`global_stage.refine_global` refines and judges them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import torch

from nmrlight.refine.config import RefineConfig
from nmrlight.refine.losses import edge_alignment_loss, edge_map, grayscale_loss, silhouette_loss, soft_iou
from nmrlight.refine.pose import CarProblem
from nmrlight.refine.window import View, gaussian_blur, make_view
from nmrlight.render import render
from nmrlight.scene import MeshObject, Scene
from nmrlight.shade import Lighting


@dataclass(frozen=True)
class Hypothesis:
    """A start pose: the detector's turned by `heading_deg` about the car's own vertical axis and moved
    along the viewing ray to `depth_factor` times its depth."""

    heading_deg: float
    depth_factor: float

    @property
    def flipped(self) -> bool:
        return abs(_wrap_deg(self.heading_deg)) > 90.0

    @property
    def is_detector(self) -> bool:
        return self.heading_deg == 0.0 and self.depth_factor == 1.0

    def label(self) -> str:
        return f"{self.heading_deg:+g}deg x{self.depth_factor:g}"


@dataclass
class Scored:
    hypothesis: Hypothesis
    score: float          # coarse loss (lower is better)
    iou: float


def _wrap_deg(angle: float) -> float:
    return (angle + 180.0) % 360.0 - 180.0


def heading_turn(degrees: float) -> torch.Tensor:
    """Rotation about the model's vertical (y) axis; applied on the right of a pose's rotation it turns
    the car about its own up axis, whatever the camera's pitch and roll."""
    a = math.radians(degrees)
    c, s = math.cos(a), math.sin(a)
    return torch.tensor([[c, 0.0, s], [0.0, 1.0, 0.0], [-s, 0.0, c]], dtype=torch.float32)


def hypotheses(config: RefineConfig) -> list[Hypothesis]:
    """The detector's pose first, then every configured heading and depth combination."""
    out = [Hypothesis(0.0, 1.0)]
    for heading in (0.0, *config.global_headings_deg):
        for factor in (1.0, *config.global_depth_factors):
            h = Hypothesis(float(heading), float(factor))
            if h not in out:
                out.append(h)
    return out


def start_pose(problem: CarProblem, h: Hypothesis) -> tuple[torch.Tensor, torch.Tensor]:
    rotation = problem.rotation.float() @ heading_turn(h.heading_deg)
    return rotation, problem.translation.float() * h.depth_factor


def prior_centre(problem: CarProblem, h: Hypothesis) -> torch.Tensor:
    """The rotation a hypothesis' prior is centred on: the detector's, or its flip for the turns nearer
    180 deg than 0 (a flip is another detection; a small turn or another depth only another start, so
    its final loss compares with the detector's under the same prior)."""
    detector = problem.prior_pose()[0].float()
    return detector @ heading_turn(180.0) if abs(_wrap_deg(h.heading_deg)) > 90.0 else detector


def started_at(problem: CarProblem, h: Hypothesis) -> CarProblem:
    """The car's problem started at hypothesis `h`, its prior on `prior_centre` (translation: the detector's)."""
    rotation, translation = start_pose(problem, h)
    return replace(problem, rotation=rotation, translation=translation, prior_rotation=prior_centre(problem, h),
                   prior_translation=problem.prior_pose()[1])


def coarse_scores(problem: CarProblem, lighting: Lighting, config: RefineConfig,
                  candidates: list[Hypothesis]) -> list[Scored]:
    """Each hypothesis rendered once (hard, `global_size` pixels) and scored; sorted, best first."""
    view = make_view(problem.camera, problem.box, config.global_size, problem.photo, problem.mask,
                     problem.hidden, config.erode_pixels)
    sigma = config.global_sigma
    mask_blurred = gaussian_blur(view.mask, sigma)
    edges = edge_map(gaussian_blur(view.photo, config.edge_sigma), gaussian_blur(view.mask, config.edge_sigma))
    others = [MeshObject(n.vertices, n.faces, n.rotation, n.translation) for n in problem.neighbours]
    out = []
    with torch.no_grad():
        for h in candidates:
            rotation, translation = start_pose(problem, h)
            if float(translation[2]) <= 0:
                continue
            scene = Scene([MeshObject(problem.vertices, problem.faces, rotation, translation), *others])
            rendered = render(scene, view.camera, lighting, edges="none", outputs={"image"})
            out.append(Scored(h, *_score(rendered, view, mask_blurred, edges, sigma, config)))
    out.sort(key=lambda s: s.score)
    return out


def _score(rendered, view: View, mask_blurred: torch.Tensor, edges: torch.Tensor, sigma: float,
           config: RefineConfig) -> tuple[float, float]:
    hard = rendered.object_id == 0
    alpha = hard.float()
    loss = config.weight_silhouette * silhouette_loss(gaussian_blur(alpha, sigma), mask_blurred, view.weight)
    if config.losses in ("grayscale", "both"):
        loss = loss + config.weight_grayscale * grayscale_loss(rendered.image[0], hard, view.photo, view.interior,
                                                               config.huber_delta, config.grayscale_trim)
    if config.weight_edges > 0:
        blurred = gaussian_blur(alpha, config.edge_sigma)
        loss = loss + config.global_edge_weight * edge_alignment_loss(blurred, edges, view.weight)
    return float(loss), float(soft_iou(alpha, view.mask, view.weight))


def _family(h: Hypothesis) -> object:
    if h.heading_deg != 0.0:
        return h.heading_deg
    return "detector" if h.depth_factor == 1.0 else "depth"


def shortlist(scored: list[Scored], config: RefineConfig) -> list[Hypothesis]:
    """The detector's pose, then up to `global_refine` others, the best of each heading (and the best
    other depth at the detector's heading), whose coarse score is within `global_refine_margin` of it."""
    detector = next((s for s in scored if s.hypothesis.is_detector), None)
    if detector is None:
        return []
    chosen, families = [detector.hypothesis], {"detector"}
    for s in scored:
        if len(chosen) > config.global_refine or s.score > detector.score + config.global_refine_margin:
            break
        if _family(s.hypothesis) in families:
            continue
        chosen.append(s.hypothesis)
        families.add(_family(s.hypothesis))
    return chosen
