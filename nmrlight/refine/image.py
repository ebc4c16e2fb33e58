"""refine_image: the unit of work of a data-set run (one photograph, all its cars).

Steps: read photo and label mask (sizes checked), pose every car, fit the lighting on the closest
cars with masks, refine the cars nearest first (each in a window around it, the other cars of the
window rendered with their current poses so occlusions are right), refit the lighting on the refined
poses, and report each car. Cars without mask pixels keep their pose ("no mask"), as do cars behind
the camera or outside the image ("not visible").
"""

from __future__ import annotations

import time
from dataclasses import dataclass, replace

import numpy as np
import torch

from nmrlight.errors import NmrlightError
from nmrlight.io.dataset import DataFolder
from nmrlight.io.poses import CarPose
from nmrlight.refine.config import LIGHTING_MODES, LOSS_TERMS, RefineConfig
from nmrlight.refine.lighting import FitOptions, LightFit, LightSample, consistency, fit_lighting, sample_car
from nmrlight.refine.overlay import GifRecorder
from nmrlight.refine.pose import CarProblem, Neighbour, refine_pose
from nmrlight.refine.result import CarResult, ImageResult, LightingResult
from nmrlight.refine.window import Box, crop, make_view, mask_box, projected_box
from nmrlight.rotations import kaggle_to_matrix, matrix_to_kaggle
from nmrlight.scene import MeshObject
from nmrlight.shade import Lighting


@dataclass
class _Car:
    index: int
    pose: CarPose
    vertices: torch.Tensor
    faces: torch.Tensor
    rotation: torch.Tensor
    translation: torch.Tensor
    box: Box | None = None          # projected box of the current pose
    window: Box | None = None
    mask: np.ndarray | None = None  # bool crop of the window
    status: str = "refined"

    def posed(self) -> torch.Tensor:
        return self.vertices @ self.rotation.T + self.translation


def check_config(config: RefineConfig) -> None:
    if config.losses not in LOSS_TERMS:
        raise NmrlightError(f"refine: losses must be one of {', '.join(LOSS_TERMS)}, got {config.losses!r}")
    if config.lighting not in LIGHTING_MODES:
        raise NmrlightError(f"refine: lighting must be one of {', '.join(LIGHTING_MODES)}, got {config.lighting!r}")
    if not config.stages:
        raise NmrlightError("refine: at least one stage is needed")
    lighting_options(config)  # raises on unknown lighting materials / robust loss


def _fixed(config: RefineConfig) -> Lighting:
    a, d, *direction = config.fixed_lighting
    return Lighting(ambient=float(a), directional=float(d), direction=tuple(float(x) for x in direction))


def _prepare(data: DataFolder, cars: list[CarPose], camera, labels: np.ndarray | None,
             config: RefineConfig) -> list[_Car]:
    out = []
    for index, pose in enumerate(cars):
        mesh = data.car(pose.model_type)
        car = _Car(index, pose, torch.as_tensor(mesh.object_vertices(), dtype=torch.float32),
                   torch.as_tensor(mesh.faces, dtype=torch.long),
                   torch.as_tensor(kaggle_to_matrix(np.asarray(pose.rotation, np.float64)), dtype=torch.float32),
                   torch.as_tensor(pose.translation, dtype=torch.float32))
        if not np.isfinite(pose.translation).all() or pose.translation[2] <= camera.near:
            car.status = "not visible"
        else:
            car.box = projected_box(car.posed(), camera)
            if car.box is None:
                car.status = "not visible"
        if car.status == "refined":
            mask = labels == index + 1 if labels is not None else None
            mbox = mask_box(mask) if mask is not None else None
            if mbox is None or int(mask[mbox.y0:mbox.y1, mbox.x0:mbox.x1].sum()) < config.min_mask_pixels:
                car.status = "no mask"
            else:
                car.window = car.box.union(mbox).padded(config.pad, 4, camera.width, camera.height)
                car.mask = crop(mask, car.window)
        out.append(car)
    return out


def _neighbours(car: _Car, cars: list[_Car], limit: int) -> list[_Car]:
    near = [c for c in cars if c is not car and c.box is not None and c.box.intersects(car.window)]
    near.sort(key=lambda c: float(c.translation[2]))
    return near[:limit]


def _hidden(car: _Car, cars: list[_Car], labels: np.ndarray) -> np.ndarray:
    """Pixels of the window labelled as a car nearer than this one."""
    nearer = [c.index + 1 for c in cars if c is not car and float(c.translation[2]) < float(car.translation[2])]
    window = crop(labels, car.window)
    return np.isin(window, nearer) if nearer else np.zeros(window.shape, bool)


def lighting_samples(cars: list[_Car], camera, photo: np.ndarray, labels: np.ndarray, config: RefineConfig,
                     limit: int) -> list[LightSample]:
    """Samples (normals, photo values, material classes) of up to `limit` cars, most mask pixels first."""
    chosen = sorted((c for c in cars if c.status == "refined"), key=lambda c: -int(c.mask.sum()))
    samples = []
    for car in chosen[:max(1, limit)]:
        view = make_view(camera, car.window, config.lighting_size, crop(photo, car.window), car.mask,
                         _hidden(car, cars, labels), config.erode_pixels)
        others = [MeshObject(n.vertices, n.faces, n.rotation, n.translation)
                  for n in _neighbours(car, cars, config.max_neighbours)]
        samples.append(sample_car(car.vertices, car.faces, car.rotation, car.translation, view, others, car.index))
    return samples


def lighting_options(config: RefineConfig) -> FitOptions:
    return FitOptions(materials=config.lighting_materials, robust=config.lighting_robust, delta=config.huber_delta,
                      agree=config.lighting_agree, bootstrap=config.lighting_bootstrap)


def fit_samples(samples: list[LightSample], config: RefineConfig, final: bool = True
                ) -> tuple[LightFit | None, list[int]]:
    """The lighting fitted on `samples`, and the row indices of the cars used. When `final` (the fit that
    is reported), also its uncertainty and self-consistency."""
    options = lighting_options(config)
    if not final:
        options = replace(options, bootstrap=0)
    fit = fit_lighting(samples, options=options)
    if fit is None:
        return None, []
    if final and config.lighting_consistency:
        check = consistency(samples, options)
        if check is not None:
            fit.consistency_deg, fit.consistency_ambient = check.angle_deg, check.ambient_gap
    return fit, [samples[k].index for k in fit.used]


def _fit_lighting(cars: list[_Car], camera, photo: np.ndarray, labels: np.ndarray,
                  config: RefineConfig, final: bool = True) -> tuple[LightFit | None, list[int]]:
    return fit_samples(lighting_samples(cars, camera, photo, labels, config, config.lighting_cars), config, final)


def _lighting_result(fit: LightFit | None, used: list[int], config: RefineConfig) -> LightingResult:
    if fit is None:
        a, d, *direction = config.fixed_lighting
        return LightingResult(float(a), float(d), tuple(float(x) for x in direction), [], {}, None)
    return LightingResult(fit.ambient, fit.directional, fit.direction, used,
                          {k: a for k, a in zip(used, fit.albedo, strict=True)}, fit.loss,
                          materials=config.lighting_materials,
                          class_albedo={k: a for k, a in zip(used, fit.class_albedo, strict=True)},
                          direction_sd_deg=fit.direction_sd_deg, ambient_sd=fit.ambient_sd,
                          consistency_deg=fit.consistency_deg, consistency_ambient=fit.consistency_ambient)


def refine_image(data: DataFolder, image_id: str, cars: list[CarPose], config: RefineConfig) -> ImageResult:
    """Refine every car of one photograph; the result lists the cars in the order given."""
    start = time.perf_counter()
    check_config(config)
    if config.threads:
        torch.set_num_threads(int(config.threads))
    photo = data.read_image(image_id, "gray")
    height, width = photo.shape
    labels = None
    if data.mask_path(image_id) is not None or data.coco_path.is_file():
        labels = data.read_mask(image_id, shape=(height, width))
    camera = data.camera(width, height)
    state = _prepare(data, cars, camera, labels, config)

    light_fit, used = (None, [])
    if config.lighting == "learn" and labels is not None:
        light_fit, used = _fit_lighting(state, camera, photo, labels, config, final=not config.lighting_refit)
    lighting = light_fit.lighting() if light_fit is not None else _fixed(config)

    results: dict[int, CarResult] = {}
    order = sorted(state, key=lambda c: float(c.translation[2]) if c.status == "refined" else np.inf)
    for car in order:
        if car.status != "refined":
            results[car.index] = CarResult(car.index, car.pose, car.pose, status=car.status)
            continue
        neighbours = [Neighbour(n.vertices, n.faces, n.rotation, n.translation)
                      for n in _neighbours(car, state, config.max_neighbours)]
        problem = CarProblem(car.vertices, car.faces, car.rotation, car.translation, camera, car.window,
                             crop(photo, car.window), car.mask,
                             _hidden(car, state, labels) if config.ignore_occluded else None, neighbours)
        recorder = GifRecorder() if config.gif_dir else None
        outcome = refine_pose(problem, lighting, config, frame=recorder)
        if recorder is not None:
            recorder.save(f"{config.gif_dir}/{image_id}_{car.index}.gif")
        status = "refined" if outcome.improved else "kept initial"
        refined = car.pose
        if outcome.improved:
            car.rotation, car.translation = outcome.rotation.float(), outcome.translation.float()
            car.box = projected_box(car.posed(), camera) or car.box
            angles = matrix_to_kaggle(car.rotation.double().numpy(), reference=np.asarray(car.pose.rotation))
            refined = CarPose(car.pose.model_type, tuple(float(a) for a in angles),
                              tuple(float(x) for x in car.translation.double()), car.pose.confidence)
        results[car.index] = CarResult(
            car.index, car.pose, refined, status=status, iou_before=outcome.iou_before,
            iou_after=outcome.iou_after, loss_before=outcome.loss_before, loss_after=outcome.loss_after,
            iterations=outcome.iterations, seconds=outcome.seconds,
            extra={"window": [car.window.x0, car.window.y0, car.window.x1, car.window.y1],
                   "mask_offset_px": round(outcome.mask_offset, 3)})

    if config.lighting == "learn" and labels is not None and config.lighting_refit and light_fit is not None:
        refit, used_refit = _fit_lighting(state, camera, photo, labels, config)
        if refit is not None:
            light_fit, used = refit, used_refit
    lighting_result = _lighting_result(light_fit, used, config)
    if config.lighting == "fixed":
        lighting_result.cars_used = []
    return ImageResult(image_id, [results[k] for k in range(len(cars))], lighting_result,
                       seconds=time.perf_counter() - start)
