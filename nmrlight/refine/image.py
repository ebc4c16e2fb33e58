"""refine_image: the unit of work of a data-set run (one photograph, all its cars).

Steps: read the photo, pose every car, get its masks (`prepare`: label image, or a segmenter's COCO
masks associated with the cars; ignore masks and unmatched masks as don't-care pixels), shortlist
meshes for cars without a model id (`meshchoice`), fit the lighting on the closest cars with masks,
refine the cars nearest first (each in a window around it, the other cars of the
window rendered with their current poses so occlusions are right), refit the lighting on the refined
poses, and report each car. A car without a model id is refined with each shortlisted mesh and keeps
the one with the lowest final loss. Cars without mask pixels keep their pose ("no mask"), as do cars behind
the camera or outside the image ("not visible").
"""

from __future__ import annotations

import time
from dataclasses import replace

import numpy as np
import torch

from nmrlight.errors import NmrlightError
from nmrlight.io.dataset import DataFolder
from nmrlight.io.poses import CarPose
from nmrlight.refine.acceptance import accept, partial_move
from nmrlight.refine.coarse import MASK_QUALITIES
from nmrlight.refine.config import LIGHTING_MODES, LOSS_TERMS, RefineConfig
from nmrlight.refine.global_stage import refine_global, screen_config
from nmrlight.refine.ground import apply_ground
from nmrlight.refine.lighting import FitOptions, LightFit, LightSample, consistency, fit_lighting, sample_car
from nmrlight.refine.meshchoice import pick, screen, shortlist
from nmrlight.refine.occluders import hidden_pixels, neighbours, occluders
from nmrlight.refine.overlay import GifRecorder
from nmrlight.refine.pose import CarProblem, Neighbour, car_stages, refine_pose
from nmrlight.refine.prepare import _Car, attach_masks, image_masks, mesh_tensors, pose_cars
from nmrlight.refine.rescore import rescored
from nmrlight.refine.result import CarResult, ImageResult, LightingResult
from nmrlight.refine.window import crop, make_view, projected_box
from nmrlight.rotations import matrix_to_kaggle, so3_log
from nmrlight.scene import MeshObject
from nmrlight.shade import Lighting


def check_config(config: RefineConfig) -> None:
    if config.losses not in LOSS_TERMS:
        raise NmrlightError(f"refine: losses must be one of {', '.join(LOSS_TERMS)}, got {config.losses!r}")
    if config.lighting not in LIGHTING_MODES:
        raise NmrlightError(f"refine: lighting must be one of {', '.join(LIGHTING_MODES)}, got {config.lighting!r}")
    if not config.stages:
        raise NmrlightError("refine: at least one stage is needed")
    if config.mask_quality not in MASK_QUALITIES:
        raise NmrlightError(f"refine: mask quality must be one of {', '.join(MASK_QUALITIES)}, "
                            f"got {config.mask_quality!r}")
    if not 0.0 <= config.prior_depth_outliers < 1.0 or config.prior_depth_outlier_scale <= 1.0:
        raise NmrlightError("refine: prior_depth_outliers must be in [0, 1) and prior_depth_outlier_scale above 1, "
                            f"got {config.prior_depth_outliers!r} and {config.prior_depth_outlier_scale!r}")
    for name, meaning in (("global_free_polish_prior", "the share of the prior the polish keeps"),
                          ("accept_partial_share", "how far a rejected refinement still moves a car")):
        if not 0.0 <= getattr(config, name) <= 1.0:
            raise NmrlightError(f"refine: {name} ({meaning}) must be in [0, 1], got {getattr(config, name)!r}")
    lighting_options(config)  # raises on unknown lighting materials / robust loss


def _fixed(config: RefineConfig) -> Lighting:
    a, d, *direction = config.fixed_lighting
    return Lighting(ambient=float(a), directional=float(d), direction=tuple(float(x) for x in direction))


def lighting_samples(cars: list[_Car], camera, photo: np.ndarray, labels: np.ndarray, config: RefineConfig,
                     limit: int) -> list[LightSample]:
    """Samples (normals, photo values, material classes) of up to `limit` cars (0: all), most mask pixels first."""
    chosen = sorted((c for c in cars if c.status == "refined"), key=lambda c: -int(c.mask.sum()))
    samples = []
    for car in (chosen[:limit] if limit > 0 else chosen):
        view = make_view(camera, car.window, config.lighting_size, crop(photo, car.window), car.mask,
                         hidden_pixels(car, cars, labels), config.erode_pixels)
        others = [MeshObject(n.vertices, n.faces, n.rotation, n.translation)
                  for n in neighbours(car, cars, config.max_neighbours)]
        samples.append(sample_car(car.vertices, car.faces, car.rotation, car.translation, view, others, car.index))
    return samples


def lighting_options(config: RefineConfig) -> FitOptions:
    return FitOptions(materials=config.lighting_materials, robust=config.lighting_robust, delta=config.huber_delta,
                      agree=config.lighting_agree, bootstrap=config.lighting_bootstrap,
                      reclassify=config.lighting_reclassify, other_weight=config.lighting_other_weight,
                      car_power=config.lighting_car_power, consistency_splits=config.lighting_consistency_splits)


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
    camera = data.camera(width, height)
    state = pose_cars(data, cars, camera, config)
    masks = image_masks(data, image_id, state, camera, (height, width), config)
    masks.warnings += [f"car {car.index}: not refined ({car.extra['error']}); kept the detector's pose"
                       for car in state if car.status == "failed"]
    labels = masks.labels
    attach_masks(state, masks, camera, config)
    _shortlist_meshes(data, state, camera, labels, config)

    light_fit, used = (None, [])
    # the light is learned for the report in any case, but fitted before the refinement only when a
    # shading term will use it
    shading = config.losses in ("grayscale", "both")
    if config.lighting == "learn" and labels is not None and shading:
        light_fit, used = _fit_lighting(state, camera, photo, labels, config, final=not config.lighting_refit)
    lighting = light_fit.lighting() if light_fit is not None else _fixed(config)

    results: dict[int, CarResult] = {}
    order = sorted(state, key=lambda c: float(c.translation[2]) if c.status == "refined" else np.inf)
    # the detector's poses, where later joint passes centre each car's prior
    detector = {c.index: (c.rotation.clone(), c.translation.clone()) for c in state} if config.joint_passes > 1 else {}
    for car in order:
        initial = _with_model(car.pose, car.model)
        if car.status != "refined":
            results[car.index] = CarResult(car.index, initial, initial, status=car.status, extra=dict(car.extra))
            continue
        try:
            results[car.index] = _refine_car(car, state, camera, photo, labels, lighting, config, data, image_id)
        except (NmrlightError, torch.linalg.LinAlgError) as error:
            # one car that cannot be refined (a pose gone non-finite, a singular solve) keeps the
            # detector's pose; the photograph's other cars go on
            car.status = "failed"
            results[car.index] = CarResult(car.index, initial, initial, status="failed",
                                           extra={**car.extra, "error": str(error)})
            masks.warnings.append(f"car {car.index}: refinement failed ({error}); kept the detector's pose")

    if config.joint_passes > 1:
        _joint_passes(state, results, detector, camera, photo, labels, lighting, config)

    if config.ground_plane:
        apply_ground(state, results, config)
    if config.lighting == "learn" and labels is not None and (
            not shading or (config.lighting_refit and light_fit is not None)):
        refit, used_refit = _fit_lighting(state, camera, photo, labels, config)
        if refit is not None:
            light_fit, used = refit, used_refit
    if config.rescore:
        for result in results.values():
            _rescore(result)
    lighting_result = _lighting_result(light_fit, used, config)
    if config.lighting == "fixed":
        lighting_result.cars_used = []
    return ImageResult(image_id, [results[k] for k in range(len(cars))], lighting_result,
                       seconds=time.perf_counter() - start, warnings=masks.warnings, masks=masks.summary)


def _refine_car(car: _Car, state: list[_Car], camera, photo: np.ndarray, labels: np.ndarray | None,
                lighting: Lighting, config: RefineConfig, data: DataFolder, image_id: str) -> CarResult:
    """One car refined: its candidate meshes screened and refined, the global stage for the chosen one,
    the acceptance rule; the car is moved to the accepted pose (its neighbours then see it there)."""
    candidates = [m for m, *_ in car.extra.get("mesh_choice", {}).get("shortlist", [])] or [car.model]
    candidates, screened = screen(candidates, lambda m, car=car: _coarse_loss(
        car, m, state, camera, photo, labels, lighting, config, data), max(1, config.mesh_candidates))
    # with several meshes, each is refined from the detector's pose and the global stage runs for the
    # chosen one only (`global_each_mesh`: for every one, as until the fifteenth session)
    each = config.global_stage and (config.global_each_mesh or len(candidates) == 1)
    outcomes, stages = {}, {}
    for model in candidates:
        if model != car.model:
            car.use_mesh(data, model)
        problem = _car_problem(car, state, camera, photo, labels, config)
        recorder = GifRecorder() if config.gif_dir else None
        if each:
            found = refine_global(problem, lighting, config, frame=recorder)
            stages[model] = _stage_record(found, car)
            outcomes[model] = (found.outcome, recorder)
        else:
            outcomes[model] = (refine_pose(problem, lighting, config, frame=recorder), recorder)
    if len(outcomes) > 1 or screened:
        choice = pick({m: o.loss_after for m, (o, _) in outcomes.items()}, car.extra["mesh_choice"]["shortlist"],
                      screened)
        spent = car.extra["mesh_choice"].get("seconds", 0.0) + sum(o.seconds for o, _ in outcomes.values()) + \
            car.extra["mesh_choice"].get("screen_seconds", 0.0)
        # each candidate's refined translation (before the chosen one's global stage): a larger mesh ends
        # farther away, so their spread is the depth the choice is unsure of (docs/accuracy.md)
        translations = {str(m): [round(float(x), 4) for x in o.translation.detach().double()]
                        for m, (o, _) in outcomes.items()}
        car.extra["mesh_choice"] = {**choice.to_dict(), "translations": translations, "seconds": round(spent, 3)}
        if choice.chosen != car.model:
            car.use_mesh(data, choice.chosen)
    if config.global_stage and not each:
        problem = _car_problem(car, state, camera, photo, labels, config)
        found = refine_global(problem, lighting, config, base=outcomes[car.model][0])
        stages[car.model] = _stage_record(found, car)
        outcomes[car.model] = (found.outcome, outcomes[car.model][1])
    if car.model in stages:
        car.extra["global"] = stages[car.model]   # the chosen mesh's record (was the last one refined)
    outcome, recorder = outcomes[car.model]
    outcome, rejected = accept(outcome, config, car.translation)
    if rejected:
        car.extra["rejected"] = rejected
    if recorder is not None:
        recorder.save(f"{config.gif_dir}/{image_id}_{car.index}.gif")
    initial = _with_model(car.pose, car.model)
    status = "refined" if outcome.improved else "kept initial"
    refined = initial
    if outcome.improved:
        refined = _move(car, outcome, camera)
    elif rejected and config.accept_partial_share > 0:
        # weak evidence still counts: the car is reported part of the way toward the rejected refinement;
        # its neighbours keep seeing it at the detector's pose (a rejected pose may be a wrong basin, and a
        # pose between the two would hide or free their pixels on no better evidence)
        car.extra["rejected_pose"] = _outcome_summary(outcome, car)
        refined = _pose_of(car, partial_move(outcome, car.rotation, car.translation, config.accept_partial_share))
        status = "partly moved"
    return CarResult(
        car.index, initial, refined, status=status, iou_before=outcome.iou_before,
        iou_after=outcome.iou_after, loss_before=outcome.loss_before, loss_after=outcome.loss_after,
        iterations=outcome.iterations, seconds=outcome.seconds,
        extra={"window": [car.window.x0, car.window.y0, car.window.x1, car.window.y1],
               "mask_offset_px": round(outcome.mask_offset, 3),
               "visible_fraction": round(min(outcome.visible, 9.99), 3), **car.extra})


def _coarse_loss(car: _Car, model: int, state: list[_Car], camera, photo: np.ndarray, labels: np.ndarray | None,
                 lighting: Lighting, config: RefineConfig, data: DataFolder) -> float:
    """The loss `car` reaches with mesh `model` after the coarsest stage alone (the mesh screen); the car
    keeps that mesh afterwards (the caller sets the one it refines)."""
    if model != car.model:
        car.use_mesh(data, model)
    outcome = refine_pose(_car_problem(car, state, camera, photo, labels, config), lighting,
                          screen_config(config, config.mesh_screen_iterations))
    choice = car.extra.setdefault("mesh_choice", {})
    choice["screen_seconds"] = round(choice.get("screen_seconds", 0.0) + outcome.seconds, 3)
    return outcome.loss_after


def _car_problem(car: _Car, state: list[_Car], camera, photo: np.ndarray, labels: np.ndarray | None,
                 config: RefineConfig, prior: tuple[torch.Tensor, torch.Tensor] | None = None) -> CarProblem:
    """`car` at its current pose and mesh in its window, the window's other cars at their current poses;
    `prior`: the (rotation, translation) the prior is centred on when it is not the start."""
    near, hidden, contradicted = occluders(car, state, camera, labels, config.max_neighbours,
                                           config.occluder_contradiction, config.ignore_occluded)
    if contradicted:  # reported per car (report.json): the last problem's
        car.extra["contradicted_neighbours"] = [n.index for n in contradicted]
    else:
        car.extra.pop("contradicted_neighbours", None)
    rendered = [Neighbour(n.vertices, n.faces, n.rotation, n.translation) for n in near]
    rotation0, translation0 = prior if prior is not None else (None, None)
    return CarProblem(car.vertices, car.faces, car.rotation, car.translation, camera, car.window,
                      crop(photo, car.window), car.mask, hidden, rendered, coarse=car.coarse,
                      prior_rotation=rotation0, prior_translation=translation0)


def _move(car: _Car, outcome, camera) -> CarPose:
    """Move `car` to the outcome's pose; returns that pose as a CarPose (angles near the detector's)."""
    car.rotation, car.translation = outcome.rotation.float(), outcome.translation.float()
    car.box = projected_box(car.posed(), camera) or car.box
    return _pose_of(car, outcome)


def _pose_of(car: _Car, outcome) -> CarPose:
    """The outcome's pose as a CarPose of `car` (angles near the detector's), the car left where it is."""
    # in the car's own precision (float32), as `_move` stores it
    rotation, translation = outcome.rotation.float().double(), outcome.translation.float().double()
    angles = matrix_to_kaggle(rotation.numpy(), reference=np.asarray(car.pose.rotation))
    return CarPose(car.model, tuple(float(a) for a in angles), tuple(float(x) for x in translation),
                   car.pose.confidence)


def _joint_passes(state: list[_Car], results: dict[int, CarResult], detector: dict, camera, photo: np.ndarray,
                  labels: np.ndarray | None, lighting, config: RefineConfig) -> None:
    """Passes 2..`joint_passes` over the photograph's cars (crowded photographs, docs/crowded.md).

    After the first, nearest-first pass every car is refined again from its refined pose with all
    its neighbours at theirs (in the first pass the farther ones were still at the detector's), in
    the last stage only, its prior still centred on the detector's pose, so that evidence shared with
    a neighbour is re-read once the neighbour has moved. Stops when no car moved by more than
    `joint_tolerance` (translation over depth; rotation in radians).
    """
    cars = [c for c in state if c.status == "refined"]
    for number in range(2, config.joint_passes + 1):
        largest = 0.0
        for car in sorted(cars, key=lambda c: float(c.translation[2])):
            problem = _car_problem(car, state, camera, photo, labels, config, prior=detector[car.index])
            outcome, _ = accept(refine_pose(problem, lighting, _later_pass(config, car.window)), config,
                                detector[car.index][1])
            result = results[car.index]
            result.iterations += outcome.iterations
            result.seconds += outcome.seconds
            if not outcome.improved:
                continue
            before_r, before_t = car.rotation.double(), car.translation.double()
            result.refined = _move(car, outcome, camera)
            result.status = "refined"
            result.iou_after, result.loss_after = outcome.iou_after, outcome.loss_after
            result.extra["mask_offset_px"] = round(outcome.mask_offset, 3)
            result.extra["joint_passes"] = number
            turn = float(so3_log(car.rotation.double() @ before_r.T).norm())
            shift = float((car.translation.double() - before_t).norm() / before_t[2].abs())
            largest = max(largest, turn, shift)
        if largest < config.joint_tolerance:
            break


def _later_pass(config: RefineConfig, window) -> RefineConfig:
    """The settings of a joint pass for a car: its last stage alone, `joint_iterations` long, with the
    steps that stage had (a car that starts refined must not be kicked out by the first stage's steps)."""
    stages = car_stages(config, window)
    size, edges, sigma, _ = stages[-1]
    shrink = config.stage_lr_decay ** (len(stages) - 1)
    return replace(config, stages=((size, edges, sigma, config.joint_iterations),), large_stage=None,
                   align_start=False, lr_rotation=config.lr_rotation * shrink, lr_pixels=config.lr_pixels * shrink,
                   lr_log_depth=config.lr_log_depth * shrink, lr_dilation=config.lr_dilation * shrink)


def _rescore(result: CarResult) -> None:
    """Replace the refined car's confidence by the re-scored one (the detector's kept in extra)."""
    result.extra["detector_confidence"] = float(result.initial.confidence)
    p = result.refined
    result.refined = CarPose(p.model_type, p.rotation, p.translation, rescored(result))


def _stage_record(found, car: _Car) -> dict:
    """What report.json keeps of a car's global stage: its summary, where the detector's start went and
    where the best fully refined flip went (if one was)."""
    record = {**found.to_dict(), "detector_start": _outcome_summary(found.detector, car)}
    if found.flip is not None:
        record["flip_start"] = _outcome_summary(found.flip, car)
    return record


def _outcome_summary(outcome, car: _Car) -> dict:
    """Where a refinement ended (pose, IoU, loss) for report.json: the detector's start's (the global stage's
    baseline), the best flip's, or a rejected one's."""
    pose = _pose_of(car, outcome)
    return {"rotation": list(pose.rotation), "translation": list(pose.translation),
            "iou_after": round(outcome.iou_after, 4), "loss_after": round(outcome.loss_after, 5),
            "improved": bool(outcome.improved)}


def _with_model(pose: CarPose, model: int) -> CarPose:
    return CarPose(int(model), pose.rotation, pose.translation, pose.confidence)


def _shortlist_meshes(data: DataFolder, state: list[_Car], camera, labels: np.ndarray | None,
                      config: RefineConfig) -> None:
    """For cars without a model id: the meshes to refine (best shortlist first), nearest car first so
    that the cars in front are shown with their own shortlisted meshes."""
    choosing = [c for c in state if c.choose_mesh]
    if not choosing:
        return
    models = data.model_ids()
    for car in sorted(choosing, key=lambda c: float(c.translation[2])):
        if car.status != "refined":
            car.extra["mesh_choice"] = {"chosen": car.model, "by": f"typical mesh ({car.status})"}
            continue
        near, ignore, _ = occluders(car, state, camera, labels, config.max_neighbours,
                                    config.occluder_contradiction)
        nearer = [MeshObject(n.vertices, n.faces, n.rotation, n.translation)
                  for n in near if float(n.translation[2]) < float(car.translation[2])]
        keep = max(1, config.mesh_candidates, config.mesh_screened)
        began = time.perf_counter()
        best = shortlist(lambda m: mesh_tensors(data, m), models, car.rotation, car.translation, camera,
                         car.window, car.mask, ignore, nearer, config.mesh_shortlist_size, keep,
                         config.mesh_shortlist_steps)
        car.use_mesh(data, best[0][0])
        car.extra["mesh_choice"] = {"chosen": car.model,
                                    "shortlist": [[m, round(s, 4), round(f, 4)] for m, s, f in best],
                                    "seconds": round(time.perf_counter() - began, 3)}
