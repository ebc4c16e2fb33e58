"""Pose refinement of one car against its mask and photo, the other cars of its window held fixed.

The coarse-to-fine driver; the pose's parameters and prior are in `params`, one car's render, loss and
local model in one view in `car_view`, what goes in and out in `problem`.
Coarse to fine: each stage renders the window at a larger size (analytic edges) and compares
render and mask both blurred by a Gaussian of decreasing sigma (a wide basin early, exact at the
end; edges="soft" stages use the renderer's soft silhouettes against the hard mask instead).
Cars that start with a poor overlap first jump to the best of a few box-aligning image shifts.
Each stage runs Levenberg-Marquardt on a Gauss-Newton model of the loss made from one render
(`linearise`; the default where the loss is silhouette + photo edges), Adam (per-parameter steps,
cosine-shrinking, stopped early when its loss stops improving) or L-BFGS in the units of those steps
(see `optimisers`); the best iterate of the last stage is kept, and the initial pose when nothing
beat it. The other cars are posed and cut to the window once per view, not at every render. A
Gaussian prior around the initial pose, weighted up for mostly hidden cars, keeps cars whose pixels
say little in place."""

from __future__ import annotations

import math
import time

import torch

from nmrlight.errors import NmrlightError
from nmrlight.refine import car_view
from nmrlight.refine.car_view import visible_fraction, window_neighbours
from nmrlight.refine.coarse import band_weights
from nmrlight.refine.config import RefineConfig
from nmrlight.refine.linearise import LocalModel
from nmrlight.refine.optimisers import OPTIMIZERS, adam_stage, lbfgs_stage, lm_stage
from nmrlight.refine.params import PoseParams, prior, prior_hessian
from nmrlight.refine.problem import CarProblem, Frame, Neighbour, PoseOutcome
from nmrlight.refine.window import Box, View, make_view, mask_box, signed_distance
from nmrlight.shade import Lighting

# re-exported: the names callers have always imported from here
__all__ = ["CarProblem", "Frame", "Neighbour", "PoseOutcome", "PoseParams", "car_stages", "prior", "prior_hessian",
           "refine_pose", "stage_optimizer", "visible_fraction", "window_neighbours"]


def _align_start(params: PoseParams, problem: CarProblem, view: View, lighting: Lighting, config: RefineConfig,
                 edges: str, sigma: float) -> None:
    """Start from the best of a few image-plane shifts that line the car's box up with the mask's.

    A detector's lateral error is a constant number of pixels, so far (small) cars can start beside
    their mask, where the silhouette has no gradient, and a partly hidden car's mask covers one end
    of it only, where shrinking (moving away) fits as well as shifting. The candidates align the
    centre, either side, or neither, in x and y (16 renders of the coarsest view); the lowest loss
    wins. Depth and rotation are left alone. Only for cars that start with a poor overlap: for a
    well-placed car a coarse view's preference can pull it into a worse basin.
    """
    box = mask_box((view.mask > 0.5).numpy())
    if box is None:
        return
    with torch.no_grad():
        posed = problem.vertices @ params.rotation().T + params.translation()
        uv, front = view.camera.project(posed)
        if not bool(front.all()):
            return
        lo, hi = uv.min(0).values, uv.max(0).values
        car_box = (float(lo[0]), float(lo[1]), float(hi[0]), float(hi[1]))

        def shifts(axis: int) -> list[float]:
            m0, m1 = (box.x0, box.x1) if axis == 0 else (box.y0, box.y1)
            c0, c1 = car_box[axis], car_box[axis + 2]
            return [0.0, 0.5 * (m0 + m1 - c0 - c1), m0 - c0, m1 - c1]

        start = params.uv.detach().clone()
        best, best_loss = start, float(car_view.evaluate(params, problem, view, lighting, config, edges, sigma)[0])
        for dx in shifts(0):
            for dy in shifts(1):
                if abs(dx) < 0.5 and abs(dy) < 0.5:
                    continue
                params.uv.copy_(start + torch.tensor([dx, dy]) / view.scale)
                value = float(car_view.evaluate(params, problem, view, lighting, config, edges, sigma)[0])
                if value < best_loss:
                    best, best_loss = params.uv.detach().clone(), value
        params.uv.copy_(best)


def car_stages(config: RefineConfig, box: Box) -> tuple[tuple[int, str, float, int], ...]:
    """The coarse-to-fine stages of a car: the configured ones, plus `large_stage` for large windows."""
    stages = tuple(config.stages)
    if config.large_stage is not None and max(box.width, box.height) >= config.large_stage_min_pixels:
        stages = stages + (tuple(config.large_stage),)
    return stages


def stage_optimizer(config: RefineConfig, stage: int, edges: str) -> str:
    """The optimiser of a stage: `stage_optimizers` (the last entry for any later stage) or `optimizer`;
    "auto" is Levenberg-Marquardt where its local model covers the loss (silhouette and photo-edge
    terms, analytic edges, on the CPU), Adam elsewhere."""
    name = config.optimizer
    if config.stage_optimizers:
        name = config.stage_optimizers[min(stage, len(config.stage_optimizers) - 1)]
    if name == "auto":   # (LM's local model is built on the CPU renderer's outputs; CUDA keeps Adam)
        lm = config.losses == "silhouette" and edges == "analytic" and config.device == "cpu"
        return "lm" if lm else "adam"
    if name == "lm" and config.device != "cpu":
        raise NmrlightError(f"refine: the lm optimiser runs on the CPU only, got device {config.device!r}; "
                            "use optimizer 'auto' or 'adam'")
    return name


def refine_pose(problem: CarProblem, lighting: Lighting, config: RefineConfig, frame: Frame | None = None
                ) -> PoseOutcome:
    """Refine one car's pose; returns the best pose found (or the initial one when nothing beat it)."""
    start = time.perf_counter()
    for name in (config.optimizer, *(config.stage_optimizers or ())):
        if name not in OPTIMIZERS:
            raise NmrlightError(f"refine: optimizer must be one of {', '.join(OPTIMIZERS)}, got {name!r}")
    params = PoseParams(problem.rotation, problem.translation, problem.camera)
    if problem.prior_rotation is not None and problem.prior_translation is not None:
        params.centre_prior(problem.prior_rotation, problem.prior_translation)
    stages = car_stages(config, problem.box)
    distance = signed_distance(problem.mask) if config.fit_dilation else False  # once for all views
    if config.fit_dilation:
        params.bound_dilation(float(distance.max()) if distance.size else 0.0, config)
    views = [make_view(problem.camera, problem.box, size, problem.photo, problem.mask, problem.hidden,
                       config.erode_pixels, sigma if edges == "analytic" else 0.0, sdf=distance)
             for size, edges, sigma, _ in stages]
    if problem.coarse:
        band_weights(views, problem.mask, config.mask_band, config.mask_band_weight)
    final_view = views[-1]
    _, final_edges, final_sigma, _ = stages[-1]
    with torch.no_grad():
        loss0, iou0, hard0 = car_view.evaluate(params, problem, final_view, lighting, config, final_edges, final_sigma)
    initial = params.state()
    best_state, best_loss, best_iou = initial, float(loss0), float(iou0)
    # at the prior's centre when it is not the start (a recheck, a joint pass): every refinement of a
    # car then weighs its prior alike, so their final losses compare
    visible = visible_fraction(params, problem, views[0], problem.prior_rotation, problem.prior_translation)
    # the image terms are normalised by the mask's area, so a sliver of mask weighs as much as a
    # whole car: the prior grows as the evidence shrinks (mostly hidden cars stay near the detector's pose)
    params.prior_scale = min(max(1.0 / max(visible, 1e-6), 1.0), config.max_prior_scale)
    params.depth_prior_scale = params.prior_scale ** config.prior_depth_scale_power
    params.visible = visible
    if config.depth_wall is not None:
        params.depth_wall = math.log1p(config.depth_wall * min(1.0, visible / 0.7))
    if config.align_start and float(iou0) < config.align_below_iou and visible >= config.align_min_visible:
        _align_start(params, problem, views[0], lighting, config, stages[0][1], stages[0][2])
    iterations = 0
    history: list[float] = []
    if frame is not None:
        frame(final_view, hard0)
    for stage, ((_size, edges, sigma, max_iter), view) in enumerate(zip(stages, views, strict=True)):
        decay = config.stage_lr_decay ** stage
        steps = [config.lr_rotation * decay, config.lr_pixels / view.scale * decay, config.lr_log_depth * decay,
                 config.lr_dilation * decay]
        last = stage == len(stages) - 1

        def evaluate(view: View = view, edges: str = edges, sigma: float = sigma, last: bool = last) -> float:
            nonlocal iterations, best_state, best_loss, best_iou
            loss, iou, hard = car_view.evaluate(params, problem, view, lighting, config, edges, sigma)
            value = float(loss.detach())
            history.append(value)
            iterations += 1
            if frame is not None:
                frame(view, hard)
            if last and value < best_loss:
                best_state, best_loss, best_iou = params.state(), value, float(iou)
            loss.backward()
            return value

        def linearise(view: View = view, edges: str = edges, sigma: float = sigma, last: bool = last) -> LocalModel:
            nonlocal iterations, best_state, best_loss, best_iou
            model = car_view.linearise(params, problem, view, lighting, config, edges, sigma)
            history.append(model.loss)
            iterations += 1
            if frame is not None:
                frame(view, model.hard)
            if last and model.loss < best_loss:
                best_state, best_loss, best_iou = params.state(), model.loss, model.iou
            return model

        optimizer = stage_optimizer(config, stage, edges)
        if optimizer == "lm":   # every render is recorded: the last one is the pose it ends at
            lm_stage(params.parameters(), linearise, max_iter, config.lm_tolerance, config.lm_damping,
                     list(params.STEP_BOUNDS))
            continue
        if optimizer == "lbfgs":
            lbfgs_stage(params.parameters(), steps, evaluate, max_iter, config.lbfgs_tolerance)
        else:
            adam_stage(params.parameters(), steps, evaluate, max_iter, config.patience, config.min_improvement)
        if last:  # the pose after the last step was never evaluated
            with torch.no_grad():
                loss, iou, _ = car_view.evaluate(params, problem, view, lighting, config, edges, sigma)
            if float(loss) < best_loss:
                best_state, best_loss, best_iou = params.state(), float(loss), float(iou)
    params.load(best_state)
    improved = best_loss < float(loss0)
    return PoseOutcome(
        rotation=params.rotation().detach(), translation=params.translation().detach(),
        loss_before=float(loss0), loss_after=best_loss, iou_before=float(iou0), iou_after=best_iou,
        iterations=iterations, improved=improved, seconds=time.perf_counter() - start, history=history,
        mask_offset=-float(params.acting_dilation().detach()), visible=visible)
