"""A photograph's cars and masks made ready for refinement (the inputs side of `refine_image`).

- Meshes: a car's own model id; `RefineConfig.model` for every car when set; for cars without one
  (submission input, model id -1) a stand-in, the typical mesh of car_models_json/, until
  `meshchoice` has picked theirs.
- Masks, from one of: the data folder's label image (value k = the k-th car of the row; values beyond
  the row's cars are cars the detector missed, don't-care like unmatched COCO masks); a COCO file
  whose masks carry `car_index`; or a segmenter's unordered COCO masks (`RefineConfig.masks_file`),
  paired with the cars by `associate` on their visible silhouettes at the initial poses. Matched masks
  are painted into one label image, farthest car first (where two overlap, the pixel shows the nearer
  car). Masks left unmatched are cars the detector missed: their pixels are don't-care for every car.
- Ignore masks (`train_masks/`, `test_masks/` `<ImageId>.jpg`): don't-care pixels too.

The COCO file is parsed once per process (cached by path and modification time), decoded per image.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

import numpy as np
import torch

from nmrlight.camera import Camera
from nmrlight.errors import NmrlightError
from nmrlight.io.dataset import DataFolder
from nmrlight.io.masks import CocoInstances, decode_instances, read_coco_instances
from nmrlight.io.poses import CarPose
from nmrlight.refine.associate import associate
from nmrlight.refine.coarse import is_coarse
from nmrlight.refine.config import RefineConfig
from nmrlight.refine.meshchoice import typical_model
from nmrlight.refine.window import Box, _resample, crop, mask_box, projected_box
from nmrlight.render import render
from nmrlight.rotations import kaggle_to_matrix
from nmrlight.scene import MeshObject, Scene

_COCO: dict[tuple, CocoInstances] = {}


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
    model: int = -1                 # the mesh in use (a model id)
    choose_mesh: bool = False       # no model id given: pick the mesh by render-and-compare
    ignore: np.ndarray | None = None  # bool crop of the window: don't-care pixels (ignore masks, other cars)
    extra: dict = field(default_factory=dict)  # for the report: association, mesh choice
    coarse: bool = False            # its mask is a segmenter's coarse one (`coarse.truncation_band`)

    def posed(self) -> torch.Tensor:
        return self.vertices @ self.rotation.T + self.translation

    def use_mesh(self, data: DataFolder, model: int) -> None:
        mesh = data.car(model)
        self.model = int(model)
        self.vertices = torch.as_tensor(mesh.object_vertices(), dtype=torch.float32)
        self.faces = torch.as_tensor(mesh.faces, dtype=torch.long)


def mesh_tensors(data: DataFolder, model: int) -> tuple[torch.Tensor, torch.Tensor]:
    mesh = data.car(model)
    return (torch.as_tensor(mesh.object_vertices(), dtype=torch.float32),
            torch.as_tensor(mesh.faces, dtype=torch.long))


def pose_cars(data: DataFolder, cars: list[CarPose], camera: Camera, config: RefineConfig) -> list[_Car]:
    """Each car with its mesh and initial pose; "not visible" when behind the camera or off the image.

    A car whose model id has no readable mesh keeps the detector's pose (status "failed", the reason in
    extra.error) and is drawn with the typical mesh where it hides other cars; the photograph's other cars
    are refined."""
    unknown = config.model is None and any(int(c.model_type) < 0 for c in cars)
    stand_in = typical_model(data, data.model_ids()) if unknown else None
    out = []
    for index, pose in enumerate(cars):
        model = config.model if config.model is not None else int(pose.model_type)
        choose = model < 0
        if choose:
            model = stand_in
        missing = None
        try:
            vertices, faces = mesh_tensors(data, model)
        except NmrlightError as error:
            if config.model is not None or choose:
                raise
            missing = str(error)
            vertices, faces = mesh_tensors(data, typical_model(data, data.model_ids()))
        car = _Car(index, pose, vertices, faces,
                   torch.as_tensor(kaggle_to_matrix(np.asarray(pose.rotation, np.float64)), dtype=torch.float32),
                   torch.as_tensor(pose.translation, dtype=torch.float32), model=model, choose_mesh=choose)
        if missing is not None:
            car.status = "failed"
            car.extra["error"] = missing
        elif not np.isfinite(pose.translation).all() or pose.translation[2] <= camera.near:
            car.status = "not visible"
        else:
            car.box = projected_box(car.posed(), camera)
            if car.box is None:
                car.status = "not visible"
        out.append(car)
    return out


def coco_instances(config: RefineConfig) -> CocoInstances:
    """The masks file of the run, parsed once per process."""
    path = config.masks_file
    images = config.coco_images
    try:
        key = (path, images, os.stat(path).st_mtime_ns, os.stat(images).st_mtime_ns if images else None)
    except OSError as exc:
        raise NmrlightError(f"COCO masks {path}: cannot read ({exc})") from None
    if key not in _COCO:
        _COCO.clear()
        _COCO[key] = read_coco_instances(path, images)
    return _COCO[key]


@dataclass
class ImageMasks:
    """One photograph's masks, ready for the cars: label image, don't-care pixels, what was matched."""

    labels: np.ndarray | None        # int32 (H, W): k = the k-th car of the row, 0 = none
    dont_care: np.ndarray | None     # bool (H, W)
    summary: dict = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)


def image_masks(data: DataFolder, image_id: str, state: list[_Car], camera: Camera, shape: tuple[int, int],
                config: RefineConfig) -> ImageMasks:
    """The masks of one photograph from whichever source the run has (see the module docstring)."""
    ignore = data.read_ignore(image_id, shape)
    if config.masks_file:
        result = _coco_masks(image_id, state, camera, shape, config)
    elif data.mask_path(image_id) is not None or data.coco_path.is_file():
        result = _label_image(data.read_mask(image_id, shape=shape), len(state))
    else:
        result = ImageMasks(None, None, {"source": "none"})
    if ignore is not None:
        result.dont_care = ignore if result.dont_care is None else result.dont_care | ignore
        result.summary["ignore_pixels"] = int(ignore.sum())
    return result


def _label_image(labels: np.ndarray, n_cars: int) -> ImageMasks:
    """A label image's masks: values beyond the row's cars mark cars with no prediction (a segmenter
    found them, the detector did not); like unmatched COCO masks their pixels are don't-care, not
    background (a car behind one of them is hidden there, not absent)."""
    extra = labels > n_cars
    summary: dict = {"source": "label image"}
    if not extra.any():
        return ImageMasks(labels, None, summary)
    summary["unmatched"] = [int(v) for v in np.unique(labels[extra])]
    return ImageMasks(np.where(extra, 0, labels), extra, summary)


def _coco_masks(image_id: str, state: list[_Car], camera: Camera, shape: tuple[int, int],
                config: RefineConfig) -> ImageMasks:
    coco = coco_instances(config)
    decoded, warnings = decode_instances(coco.instances.get(image_id, []), *shape)
    labels = np.zeros(shape, np.int32)
    summary: dict = {"source": str(coco.path), "masks": len(decoded)}
    if coco.ordered:
        for instance, mask in decoded:
            if instance.car_index > len(state):
                warnings.append(f"{instance.where}: car_index {instance.car_index} but the row has "
                                f"{len(state)} cars; skipped")
                continue
            labels[mask] = instance.car_index
        summary["ordered"] = True
        return ImageMasks(labels, None, summary, warnings)
    masks = [m for _, m in decoded]
    silhouettes, scale = visible_silhouettes(state, camera, config.association_size)
    whole = whole_silhouettes(state, camera, scale)
    small = [downsampled_mask(m, silhouettes[0].shape) for m in masks] if silhouettes else []
    slack = config.association_slack * camera.fx * scale  # the detector's lateral error, in pixels
    matches, _ = associate(silhouettes, small, [i.score for i, _ in decoded], config.association_min_score,
                           slack=slack, whole=whole,
                           depths=[float(c.translation[2]) for c in state] if config.association_depth_order else None)
    taken = set()
    for car, found in sorted(zip(state, matches, strict=True), key=lambda p: -float(p[0].translation[2])):
        if found.mask is None:
            car.extra["association"] = "no mask"
            continue
        instance, mask = decoded[found.mask]
        labels[mask] = car.index + 1
        taken.add(found.mask)
        car.extra["association"] = {"entry": instance.entry, "id": instance.ann_id, "score": round(found.score, 4),
                                    "mask_score": instance.score}
    unmatched = [j for j in range(len(decoded)) if j not in taken]
    dont_care = None
    if unmatched:
        dont_care = np.zeros(shape, bool)
        for j in unmatched:
            dont_care |= decoded[j][1]
        dont_care &= labels == 0
    summary.update({"matched": len(taken), "unmatched": [decoded[j][0].entry for j in unmatched],
                    "association_scale": round(scale, 4), "associated": True})
    return ImageMasks(labels, dont_care, summary, warnings)


def downsampled_mask(mask: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """`mask` on the association frame: pixels more than half covered; a mask smaller than that (a
    sliver of a far, mostly hidden car) keeps every pixel it touches rather than vanishing."""
    cover = _resample(mask.astype(np.float32), *shape).numpy()
    small = cover > 0.5
    return small if small.any() else cover > 0


def visible_silhouettes(state: list[_Car], camera: Camera, size: int) -> tuple[list[np.ndarray], float]:
    """Each car's visible silhouette at its current pose, all cars rendered together at a scale whose
    frame's longer side is at most `size` pixels: ([bool (h, w)] in car order, scale)."""
    scale = min(1.0, size / max(camera.width, camera.height))
    cam = camera if scale == 1.0 else camera.scaled(scale)
    shown = [c for c in state if c.status != "not visible"]
    empty = np.zeros((cam.height, cam.width), bool)
    if not shown:
        return [empty.copy() for _ in state], scale
    objects = [MeshObject(c.vertices, c.faces, c.rotation, c.translation) for c in shown]
    with torch.no_grad():
        ids = render(Scene(objects), cam, None, edges="none", outputs=set()).object_id.numpy()
    position = {c.index: k for k, c in enumerate(shown)}
    return [ids == position[c.index] if c.index in position else empty.copy() for c in state], scale


def whole_silhouettes(state: list[_Car], camera: Camera, scale: float) -> list[np.ndarray]:
    """Each car's silhouette rendered alone (nothing in front of it) at `scale`, in car order."""
    cam = camera if scale == 1.0 else camera.scaled(scale)
    out = []
    for car in state:
        if car.status == "not visible":
            out.append(np.zeros((cam.height, cam.width), bool))
            continue
        with torch.no_grad():
            ids = render(Scene([MeshObject(car.vertices, car.faces, car.rotation, car.translation)]), cam, None,
                         edges="none", outputs=set()).object_id.numpy()
        out.append(ids == 0)
    return out


def attach_masks(state: list[_Car], masks: ImageMasks, camera: Camera, config: RefineConfig) -> None:
    """Each visible car's window (its box and its mask's, padded), mask crop and don't-care crop;
    "no mask" for cars with fewer than `min_mask_pixels` mask pixels."""
    labels = masks.labels
    for car in state:
        if car.status != "refined":
            continue
        mask = labels == car.index + 1 if labels is not None else None
        mbox = mask_box(mask) if mask is not None else None
        if mbox is None or int(mask[mbox.y0:mbox.y1, mbox.x0:mbox.x1].sum()) < config.min_mask_pixels:
            car.status = "no mask"
            continue
        car.window = car.box.union(mbox).padded(config.pad, 4, camera.width, camera.height)
        car.coarse = is_coarse(config.mask_quality, bool(masks.summary.get("associated")))
        car.mask = crop(mask, car.window)
        if masks.dont_care is not None:
            ignore = crop(masks.dont_care, car.window)
            car.ignore = ignore if ignore.any() else None
