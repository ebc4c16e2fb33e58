"""Pose refinement of one car against its mask and photo, the other cars of its window held fixed.

Parameters: rotation on SO(3) as R = exp(omega) R0; translation as the projected centre (u, v) in
image pixels plus log depth, so image position and depth are separate, well-scaled directions; a
mask offset (pixels the detector's mask is grown or shrunk by) as a nuisance parameter.
Terms: silhouette against the mask, the photo's edges along the rendered outline (which pin the
car's size, i.e. depth, whatever the mask's offset), grayscale shading under the learned light.
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
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch

from nmrlight.camera import Camera
from nmrlight.errors import NmrlightError
from nmrlight.refine.coarse import band_weights
from nmrlight.refine.config import RefineConfig
from nmrlight.refine.linearise import LocalModel, alpha_jacobian, gauss_newton
from nmrlight.refine.losses import edge_alignment_loss, edge_map, grayscale_loss, silhouette_loss, soft_iou
from nmrlight.refine.optimisers import OPTIMIZERS, adam_stage, lbfgs_stage, lm_stage
from nmrlight.refine.shading import material_grayscale_loss, material_objects
from nmrlight.refine.window import Box, View, gaussian_blur, grown_mask, make_view, mask_box, signed_distance
from nmrlight.render import FixedLayer, RenderOutput, fixed_layer, render
from nmrlight.rotations import so3_exp, so3_log
from nmrlight.scene import MeshObject, Scene
from nmrlight.shade import Lighting


class PoseParams:
    """Learnable pose of one car: omega (3), centre pixel uv (2, image pixels), log depth."""

    def __init__(self, rotation: torch.Tensor, translation: torch.Tensor, camera: Camera) -> None:
        self.R0 = rotation.detach().float()
        self.fx, self.fy, self.cx, self.cy = camera.fx, camera.fy, camera.cx, camera.cy
        t = translation.detach().double()
        z = float(t[2])
        self.omega = torch.zeros(3, requires_grad=True)
        self.uv = torch.tensor([self.fx * float(t[0]) / z + self.cx, self.fy * float(t[1]) / z + self.cy],
                               requires_grad=True)
        self.log_z = torch.tensor(math.log(z), requires_grad=True)
        self.log_z0 = math.log(z)
        self.dilation = torch.zeros((), requires_grad=True)  # mask offset, image pixels (nuisance)
        self.prior_scale = 1.0  # the prior's weight relative to the image terms' (see refine_pose)
        # the prior's centre: the initial pose unless `centre_prior` moves it (a later joint pass)
        self.omega_prior = torch.zeros(3)
        self.log_z_prior = self.log_z0
        self.depth_wall: float | None = None  # largest |log depth - prior's| without penalty (refine_pose)

    def centre_prior(self, rotation: torch.Tensor, translation: torch.Tensor) -> None:
        """Centre the prior on another pose (e.g. the detector's, when refining from a refined pose)."""
        self.omega_prior = so3_log(rotation.detach().float() @ self.R0.T).float()
        self.log_z_prior = math.log(float(translation[2]))

    def parameters(self) -> list[torch.Tensor]:
        return [self.omega, self.uv, self.log_z, self.dilation]

    def rotation(self, omega: torch.Tensor | None = None) -> torch.Tensor:
        """R = exp(omega) R0, of the current omega or the ones given (..., 3)."""
        omega = self.omega if omega is None else omega
        return so3_exp(omega) @ self.R0.to(omega.dtype)

    def translation(self, uv: torch.Tensor | None = None, log_z: torch.Tensor | None = None) -> torch.Tensor:
        """The centre in metres from the projected centre and log depth (current, or the ones given:
        uv (..., 2), log_z (...))."""
        uv = self.uv if uv is None else uv
        z = torch.exp(self.log_z if log_z is None else log_z)
        x = (uv[..., 0] - self.cx) * z / self.fx
        y = (uv[..., 1] - self.cy) * z / self.fy
        return torch.stack([x, y, z], dim=-1)

    def pose_vector(self) -> torch.Tensor:
        """(omega, uv, log depth) as one detached 6-vector: the pose `uv_of` takes."""
        return torch.cat([self.omega.detach(), self.uv.detach(), self.log_z.detach().reshape(1)])

    def uv_of(self, vertices: torch.Tensor, camera: Camera, poses: torch.Tensor) -> torch.Tensor:
        """Pixel coordinates (B, V, 2) of object-frame vertices (V, 3) at pose vectors (B, 6)."""
        rotation = self.rotation(poses[:, :3])
        translation = self.translation(poses[:, 3:5], poses[:, 5])
        posed = vertices.to(poses.dtype) @ rotation.transpose(-1, -2) + translation[:, None, :]
        return camera.project(posed)[0]

    def state(self) -> tuple[torch.Tensor, ...]:
        return tuple(p.detach().clone() for p in self.parameters())

    def load(self, state: tuple[torch.Tensor, ...]) -> None:
        with torch.no_grad():
            for p, s in zip(self.parameters(), state, strict=True):
                p.copy_(s)


@dataclass
class Neighbour:
    """Another car of the window, rendered (fixed) so that occlusions are right."""

    vertices: torch.Tensor
    faces: torch.Tensor
    rotation: torch.Tensor
    translation: torch.Tensor


@dataclass
class CarProblem:
    """Everything needed to refine one car: mesh, initial pose, window, image data, neighbours."""

    vertices: torch.Tensor
    faces: torch.Tensor
    rotation: torch.Tensor
    translation: torch.Tensor
    camera: Camera           # full image camera
    box: Box                 # window in image pixels
    photo: np.ndarray        # grayscale photo, cropped to box
    mask: np.ndarray         # bool, this car's label, cropped to box
    hidden: np.ndarray | None  # bool, labels of nearer cars (ignored by the silhouette term), cropped
    neighbours: list[Neighbour] = field(default_factory=list)
    coarse: bool = False     # the mask is a segmenter's coarse one (`coarse.truncation_band`)
    # the prior's centre when it is not the initial pose (a joint pass starts from the refined pose
    # but keeps the detector's as the prior)
    prior_rotation: torch.Tensor | None = None
    prior_translation: torch.Tensor | None = None


@dataclass
class PoseOutcome:
    rotation: torch.Tensor
    translation: torch.Tensor
    loss_before: float
    loss_after: float
    iou_before: float
    iou_after: float
    iterations: int
    improved: bool
    seconds: float
    history: list[float] = field(default_factory=list)
    mask_offset: float = 0.0   # how much wider the mask is than the fitted car (image pixels, < 0: thinner)


Frame = Callable[[View, torch.Tensor], None]


def prior(params: PoseParams, config: RefineConfig) -> torch.Tensor:
    """Squared deviation from the prior's centre (the initial pose unless moved) in standard deviations
    (rotation and log depth)."""
    sigma = torch.deg2rad(torch.tensor(config.prior_sigma_deg, dtype=params.omega.dtype))
    rotation = (((params.omega - params.omega_prior) / sigma) ** 2).sum()
    depth = ((params.log_z - params.log_z_prior) / config.prior_sigma_depth) ** 2
    dilation = (params.dilation / config.dilation_sigma) ** 2 if config.fit_dilation else 0.0
    wall = 0.0
    if params.depth_wall is not None:  # steep beyond the wall: 1 unit of loss per 1 % of depth beyond, squared
        excess = torch.relu((params.log_z - params.log_z_prior).abs() - params.depth_wall)
        wall = (excess / 0.01) ** 2 / config.prior_weight * 0.01
    return params.prior_scale * (rotation + depth) + dilation + wall


def prior_hessian(params: PoseParams, config: RefineConfig) -> torch.Tensor:
    """(7,) diagonal of the Hessian of `config.prior_weight * prior` (the depth wall left out)."""
    sigma = torch.deg2rad(torch.tensor(config.prior_sigma_deg, dtype=torch.float64))
    rotation = 2.0 * params.prior_scale / sigma ** 2
    depth = torch.tensor([0.0, 0.0, 2.0 * params.prior_scale / config.prior_sigma_depth ** 2], dtype=torch.float64)
    dilation = torch.tensor([2.0 / config.dilation_sigma ** 2 if config.fit_dilation else 0.0], dtype=torch.float64)
    return config.prior_weight * torch.cat([rotation, depth, dilation])


def _render_car(params: PoseParams, problem: CarProblem, view: View, lighting: Lighting, config: RefineConfig,
                edges: str, sigma: float) -> RenderOutput:
    """The car at its current pose over the window's other cars (its silhouette first)."""
    car = MeshObject(problem.vertices, problem.faces, params.rotation(), params.translation())
    use_gray = config.losses in ("grayscale", "both")
    outputs = {"object_alpha"}
    if use_gray:
        outputs.add("image")
    materials = use_gray and config.shading_materials
    if materials:  # one colour channel a material class, the neighbours black (nmrlight.refine.shading)
        out = render(Scene(material_objects(car, window_neighbours(problem, view))), view.camera, lighting,
                     background=0.0, edges=edges, sigma=max(sigma, 0.3), outputs=outputs, alpha_objects=1)
    else:
        layer = _fixed_neighbours(problem, view)
        objects = [car] if layer is not None else [car, *window_neighbours(problem, view)]  # off the CPU: all
        out = render(Scene(objects), view.camera, lighting, background=0.0, edges=edges, sigma=max(sigma, 0.3),
                     outputs=outputs, fixed=layer, alpha_objects=1)
    return out


def _evaluate(params: PoseParams, problem: CarProblem, view: View, lighting: Lighting, config: RefineConfig,
              edges: str, sigma: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Loss, IoU (detached) and the hard silhouette of the target in this view."""
    out = _render_car(params, problem, view, lighting, config, edges, sigma)
    return _car_loss(params, view, config, out, out.object_alpha[0])


def _car_loss(params: PoseParams, view: View, config: RefineConfig, out: RenderOutput, alpha: torch.Tensor
              ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The loss of a render whose car silhouette is `alpha`, its IoU with the mask and the hard silhouette."""
    use_sil = config.losses in ("silhouette", "both")
    use_gray = config.losses in ("grayscale", "both")
    materials = use_gray and config.shading_materials
    hard = out.object_id == 0
    loss = alpha.sum() * 0.0
    sil_weight = view.cache.get("silhouette_weight", view.weight)  # coarse masks: band left out
    if use_sil and config.fit_dilation and view.sdf is not None:
        mask = grown_mask(view, params.dilation)
        norm = (view.weight * view.mask).sum()
        if view.sigma > 0:
            sil = silhouette_loss(gaussian_blur(alpha, view.sigma), gaussian_blur(mask, view.sigma), sil_weight, norm)
        else:
            sil = silhouette_loss(alpha, mask, sil_weight, norm)
        loss = loss + config.weight_silhouette * sil
    elif use_sil:
        if view.sigma > 0:  # blurred render against blurred mask: wide basin, exact optimum
            sil = silhouette_loss(gaussian_blur(alpha, view.sigma), view.blurred_mask, sil_weight)
        else:
            sil = silhouette_loss(alpha, view.mask, sil_weight)
        loss = loss + config.weight_silhouette * sil
    if materials:
        gray = material_grayscale_loss(out.image, hard, view.photo, view.interior, config.huber_delta,
                                       config.grayscale_trim)
        loss = loss + config.weight_grayscale * gray
    elif use_gray:
        gray = grayscale_loss(out.image[0], hard, view.photo, view.interior, config.huber_delta,
                              config.grayscale_trim)
        loss = loss + config.weight_grayscale * gray
    if config.weight_edges > 0:
        edges_photo = _photo_edges(view, config.edge_sigma)
        blurred = gaussian_blur(alpha, config.edge_sigma)
        loss = loss + config.weight_edges * edge_alignment_loss(blurred, edges_photo, view.weight)
    if config.prior_weight > 0:
        loss = loss + config.prior_weight * prior(params, config)
    iou = soft_iou(hard.float(), view.mask, view.weight)
    return loss, iou.detach(), hard


def _linearise(params: PoseParams, problem: CarProblem, view: View, lighting: Lighting, config: RefineConfig,
               edges: str, sigma: float) -> LocalModel:
    """The loss, its gradient and a Gauss-Newton Hessian in (omega, uv, log depth, mask offset) from one
    render (`nmrlight.refine.linearise`): the silhouette and photo-edge terms with analytic edges."""
    if config.losses != "silhouette" or edges != "analytic":
        raise NmrlightError("refine: the lm optimiser takes the silhouette and photo-edge terms (losses "
                            f"'silhouette') with analytic edges, got losses {config.losses!r} and edges {edges!r}")
    with torch.no_grad():
        out = _render_car(params, problem, view, lighting, config, edges, sigma)
    alpha = out.object_alpha[0].detach().requires_grad_(True)
    for p in params.parameters():
        p.grad = None
    loss, iou, hard = _car_loss(params, view, config, out, alpha)
    loss.backward()
    jac = alpha_jacobian(out, hard, len(problem.vertices),
                         lambda pose, index: params.uv_of(problem.vertices[index], view.camera, pose),
                         params.pose_vector())
    gradient = torch.cat([torch.zeros(p.numel()) if p.grad is None else p.grad.reshape(-1)
                          for p in params.parameters()]).double()
    gradient[:6] += jac @ alpha.grad.reshape(-1).double()
    hessian = torch.diag(prior_hessian(params, config))
    if config.weight_silhouette > 0:
        weight = view.cache.get("silhouette_weight", view.weight).double()
        height, width = alpha.shape
        columns = jac.view(6, height, width)
        if config.fit_dilation and view.sdf is not None:   # residual alpha - grown mask
            inner = view.sdf.double() + float(params.dilation.detach()) * view.scale + 0.5
            columns = torch.cat([columns, (-view.scale * ((inner >= 0) & (inner <= 1)).double())[None]])
            area = (view.weight * view.mask).sum()
        else:
            area = (view.cache.get("silhouette_weight", view.weight)
                    * (view.blurred_mask if view.sigma > 0 else view.mask)).sum()
        columns = gaussian_blur(columns, view.sigma)
        n = len(columns)
        hessian[:n, :n] += gauss_newton(columns, weight * config.weight_silhouette / max(float(area), 1.0))
    return LocalModel(float(loss.detach()), gradient, hessian, float(iou), hard)


def window_neighbours(problem: CarProblem, view: View, margin: float = 2.0) -> list[MeshObject]:
    """The other cars posed once and cut to the faces that can touch the view (cached per view).

    They do not move while this car is refined, so posing, checking and clipping them every
    iteration is wasted work: a face whose projection lies more than `margin` render pixels outside
    the window covers no pixel centre of it and crosses no pair of them, so dropping it changes no
    pixel. Faces with a corner behind the near plane are kept (the renderer culls them itself).
    """
    if "neighbours" in view.cache:
        return view.cache["neighbours"]
    cam = view.camera
    kept = []
    for n in problem.neighbours:
        posed = (n.vertices @ n.rotation.T + n.translation).detach()
        uv, front = cam.project(posed)
        corners = uv[n.faces]
        lo, hi = corners.min(1).values, corners.max(1).values
        inside = ((hi[:, 0] >= -margin) & (lo[:, 0] <= cam.width + margin)
                  & (hi[:, 1] >= -margin) & (lo[:, 1] <= cam.height + margin))
        faces = n.faces[inside | ~front[n.faces].all(1)]
        if len(faces) == 0:
            continue
        used, local = torch.unique(faces, return_inverse=True)
        kept.append(MeshObject(posed[used], local.view(-1, 3)))
    view.cache["neighbours"] = kept
    return kept


def _fixed_neighbours(problem: CarProblem, view: View) -> FixedLayer | None:
    """The window's other cars prepared once per view for every render of it (see `fixed_layer`)."""
    if "fixed" not in view.cache:
        view.cache["fixed"] = fixed_layer(window_neighbours(problem, view), view.camera)
    return view.cache["fixed"]


def _photo_edges(view: View, sigma: float) -> torch.Tensor:
    """The view's photo edges (blurred like the render), computed once per view."""
    key = ("edges", sigma)
    if key not in view.cache:
        view.cache[key] = edge_map(gaussian_blur(view.photo, sigma), gaussian_blur(view.mask, sigma))
    return view.cache[key]


def visible_fraction(params: PoseParams, problem: CarProblem, view: View) -> float:
    """Area of the car's mask over the area of the car rendered alone at its current pose (in `view`).

    Small when the car is mostly hidden behind nearer cars or cut by the image border: its few
    visible pixels then say little about where the car is.
    """
    car = MeshObject(problem.vertices, problem.faces, params.rotation().detach(), params.translation().detach())
    with torch.no_grad():
        alone = render(Scene([car]), view.camera, None, edges="none", outputs=set())
    area = float((alone.object_id == 0).sum())
    return float(view.mask.sum()) / area if area > 0 else math.inf


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
        best, best_loss = start, float(_evaluate(params, problem, view, lighting, config, edges, sigma)[0])
        for dx in shifts(0):
            for dy in shifts(1):
                if abs(dx) < 0.5 and abs(dy) < 0.5:
                    continue
                params.uv.copy_(start + torch.tensor([dx, dy]) / view.scale)
                value = float(_evaluate(params, problem, view, lighting, config, edges, sigma)[0])
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
    views = [make_view(problem.camera, problem.box, size, problem.photo, problem.mask, problem.hidden,
                       config.erode_pixels, sigma if edges == "analytic" else 0.0, sdf=distance)
             for size, edges, sigma, _ in stages]
    if problem.coarse:
        band_weights(views, problem.mask, config.mask_band, config.mask_band_weight)
    final_view = views[-1]
    _, final_edges, final_sigma, _ = stages[-1]
    with torch.no_grad():
        loss0, iou0, hard0 = _evaluate(params, problem, final_view, lighting, config, final_edges, final_sigma)
    initial = params.state()
    best_state, best_loss, best_iou = initial, float(loss0), float(iou0)
    visible = visible_fraction(params, problem, views[0])
    # the image terms are normalised by the mask's area, so a sliver of mask weighs as much as a
    # whole car: the prior grows as the evidence shrinks (mostly hidden cars stay near the detector's pose)
    params.prior_scale = min(max(1.0 / max(visible, 1e-6), 1.0), config.max_prior_scale)
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
            loss, iou, hard = _evaluate(params, problem, view, lighting, config, edges, sigma)
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
            model = _linearise(params, problem, view, lighting, config, edges, sigma)
            history.append(model.loss)
            iterations += 1
            if frame is not None:
                frame(view, model.hard)
            if last and model.loss < best_loss:
                best_state, best_loss, best_iou = params.state(), model.loss, model.iou
            return model

        optimizer = stage_optimizer(config, stage, edges)
        if optimizer == "lm":   # every render is recorded: the last one is the pose it ends at
            lm_stage(params.parameters(), linearise, max_iter, config.lm_tolerance, config.lm_damping)
            continue
        if optimizer == "lbfgs":
            lbfgs_stage(params.parameters(), steps, evaluate, max_iter, config.lbfgs_tolerance)
        else:
            adam_stage(params.parameters(), steps, evaluate, max_iter, config.patience, config.min_improvement)
        if last:  # the pose after the last step was never evaluated
            with torch.no_grad():
                loss, iou, _ = _evaluate(params, problem, view, lighting, config, edges, sigma)
            if float(loss) < best_loss:
                best_state, best_loss, best_iou = params.state(), float(loss), float(iou)
    params.load(best_state)
    improved = best_loss < float(loss0)
    return PoseOutcome(
        rotation=params.rotation().detach(), translation=params.translation().detach(),
        loss_before=float(loss0), loss_after=best_loss, iou_before=float(iou0), iou_after=best_iou,
        iterations=iterations, improved=improved, seconds=time.perf_counter() - start, history=history,
        mask_offset=-float(params.dilation.detach()))
