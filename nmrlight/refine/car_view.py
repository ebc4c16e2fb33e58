"""One car in one view of its window: render it over its neighbours, its loss, and the loss's local model.

The loss: silhouette against the mask (blurred alike in coarse stages; against the mask grown by the
fitted offset), the photo's edges along the rendered outline (which pin the car's size, i.e. depth,
whatever the mask's offset), grayscale shading under the learned light (one albedo, or one a material
class), and the pose prior. `linearise` gives Levenberg-Marquardt its Gauss-Newton model from one
render (`nmrlight.refine.linearise`). The other cars do not move while one car is refined: they are
posed and cut to the window once per view (`window_neighbours`) and prepared once as a fixed layer.
"""

from __future__ import annotations

import math

import torch

from nmrlight.errors import NmrlightError
from nmrlight.refine.config import RefineConfig
from nmrlight.refine.linearise import LocalModel, alpha_jacobian, gauss_newton
from nmrlight.refine.losses import (
    edge_alignment_loss,
    edge_map,
    grayscale_loss,
    silhouette_loss,
    silhouette_norm,
    soft_iou,
)
from nmrlight.refine.params import PoseParams, prior, prior_hessian
from nmrlight.refine.problem import CarProblem
from nmrlight.refine.shading import material_grayscale_loss, material_objects
from nmrlight.refine.window import View, gaussian_blur, grown_mask
from nmrlight.render import FixedLayer, RenderOutput, fixed_layer, render
from nmrlight.scene import MeshObject, Scene
from nmrlight.shade import Lighting


def render_car(params: PoseParams, problem: CarProblem, view: View, lighting: Lighting, config: RefineConfig,
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
        layer = fixed_neighbours(problem, view)
        objects = [car] if layer is not None else [car, *window_neighbours(problem, view)]  # off the CPU: all
        out = render(Scene(objects), view.camera, lighting, background=0.0, edges=edges, sigma=max(sigma, 0.3),
                     outputs=outputs, fixed=layer, alpha_objects=1)
    return out


def evaluate(params: PoseParams, problem: CarProblem, view: View, lighting: Lighting, config: RefineConfig,
              edges: str, sigma: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Loss, IoU (detached) and the hard silhouette of the target in this view."""
    out = render_car(params, problem, view, lighting, config, edges, sigma)
    return car_loss(params, view, config, out, out.object_alpha[0])


def car_loss(params: PoseParams, view: View, config: RefineConfig, out: RenderOutput, alpha: torch.Tensor
              ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The loss of a render whose car silhouette is `alpha`, its IoU with the mask and the hard silhouette."""
    return _car_terms(params, view, config, out, alpha)[:3]


def _car_terms(params: PoseParams, view: View, config: RefineConfig, out: RenderOutput, alpha: torch.Tensor
               ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """`car_loss`, and the silhouette term's denominator (detached; None without the term): the
    Gauss-Newton weight of `linearise`, which so needs no second blur of render and mask."""
    use_sil = config.losses in ("silhouette", "both")
    use_gray = config.losses in ("grayscale", "both")
    materials = use_gray and config.shading_materials
    hard = out.object_id == 0
    loss = alpha.sum() * 0.0
    sil_weight = view.cache.get("silhouette_weight", view.weight)  # coarse masks: band left out
    sil_norm = None
    if use_sil:
        pair = silhouette_pair(params, view, config, alpha)
        sil_norm = silhouette_norm(*pair, sil_weight).detach()
        loss = loss + config.weight_silhouette * silhouette_loss(*pair, sil_weight)
    if materials:
        gray = material_grayscale_loss(out.image, hard, view.photo, view.interior, config.huber_delta,
                                       config.grayscale_trim)
        loss = loss + config.weight_grayscale * gray
    elif use_gray:
        gray = grayscale_loss(out.image[0], hard, view.photo, view.interior, config.huber_delta,
                              config.grayscale_trim)
        loss = loss + config.weight_grayscale * gray
    if config.weight_edges > 0:
        edges_photo = photo_edges(view, config.edge_sigma)
        blurred = gaussian_blur(alpha, config.edge_sigma)
        loss = loss + config.weight_edges * edge_alignment_loss(blurred, edges_photo, view.weight)
    if config.prior_weight > 0:
        loss = loss + config.prior_weight * prior(params, config)
    iou = soft_iou(hard.float(), view.mask, view.weight)
    return loss, iou.detach(), hard, sil_norm


def silhouette_pair(params: PoseParams, view: View, config: RefineConfig, alpha: torch.Tensor
                    ) -> tuple[torch.Tensor, torch.Tensor]:
    """The render and the mask the silhouette term compares: the mask grown by the fitted offset when it
    is fitted, both blurred alike in coarse stages (wide basin, exact optimum)."""
    if config.fit_dilation and view.sdf is not None:
        mask = grown_mask(view, params.acting_dilation())
        if view.sigma > 0:
            return gaussian_blur(alpha, view.sigma), gaussian_blur(mask, view.sigma)
        return alpha, mask
    if view.sigma > 0:
        return gaussian_blur(alpha, view.sigma), view.blurred_mask
    return alpha, view.mask


def linearise(params: PoseParams, problem: CarProblem, view: View, lighting: Lighting, config: RefineConfig,
               edges: str, sigma: float) -> LocalModel:
    """The loss, its gradient and a Gauss-Newton Hessian in (omega, uv, log depth, mask offset) from one
    render (`nmrlight.refine.linearise`): the silhouette and photo-edge terms with analytic edges."""
    if config.losses != "silhouette" or edges != "analytic":
        raise NmrlightError("refine: the lm optimiser takes the silhouette and photo-edge terms (losses "
                            f"'silhouette') with analytic edges, got losses {config.losses!r} and edges {edges!r}")
    with torch.no_grad():
        out = render_car(params, problem, view, lighting, config, edges, sigma)
    alpha = out.object_alpha[0].detach().requires_grad_(True)
    for p in params.parameters():
        p.grad = None
    loss, iou, hard, area = _car_terms(params, view, config, out, alpha)
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
            inner = view.sdf.double() + float(params.acting_dilation().detach()) * view.scale + 0.5
            slope = -view.scale if params.dilation_free() else 0.0   # clamped: the mask does not move
            columns = torch.cat([columns, (slope * ((inner >= 0) & (inner <= 1)).double())[None]])
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


def fixed_neighbours(problem: CarProblem, view: View) -> FixedLayer | None:
    """The window's other cars prepared once per view for every render of it (see `fixed_layer`)."""
    if "fixed" not in view.cache:
        view.cache["fixed"] = fixed_layer(window_neighbours(problem, view), view.camera)
    return view.cache["fixed"]


def photo_edges(view: View, sigma: float) -> torch.Tensor:
    """The view's photo edges (blurred like the render), computed once per view."""
    key = ("edges", sigma)
    if key not in view.cache:
        view.cache[key] = edge_map(gaussian_blur(view.photo, sigma), gaussian_blur(view.mask, sigma))
    return view.cache[key]


def visible_fraction(params: PoseParams, problem: CarProblem, view: View, rotation: torch.Tensor | None = None,
                     translation: torch.Tensor | None = None) -> float:
    """Area of the car's mask over the area of the car rendered alone at its current pose, or at
    (rotation, translation) when given (in `view`).

    Small when the car is mostly hidden behind nearer cars or cut by the image border: its few
    visible pixels then say little about where the car is.
    """
    if rotation is None or translation is None:
        rotation, translation = params.rotation().detach(), params.translation().detach()
    car = MeshObject(problem.vertices, problem.faces, rotation.float(), translation.float())
    with torch.no_grad():
        alone = render(Scene([car]), view.camera, None, edges="none", outputs=set())
    area = float((alone.object_id == 0).sum())
    return float(view.mask.sum()) / area if area > 0 else math.inf
