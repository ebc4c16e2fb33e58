"""A data set's per-mesh face layout, learned from its confidently posed cars, as the judge of flip ties.

Front and back of a car have nearly mirror outlines: seen end-on, the global stage's refined flip and the
detector's heading can end with the same loss, and the photograph's geometry cannot tell them apart. The
car's material layout can (glass, lamps, trim sit differently at the two ends), but a CAD mesh carries no
materials, and classes guessed from geometry do not place them well enough (docs/accuracy.md). So the
layout is read from the photographs: every car of the data set that fits well and whose heading was not
in doubt is rendered at its refined pose; each visible pixel's brightness over the learned shading
(l_a + l_d max(0, n . d)), over the car's median, is that face's relative reflectance; per mesh, the
median over cars (one car per vote: a wrongly posed car is outvoted) is the mesh's layout.

A tie is a car whose global stage refined both headings and whose two refinements under the pose prior
ended within `appearance_tie` of each other. Each of the two poses is rendered with the layout under the photograph's
light, its brightness fitted by least squares (I ~ s (a m + b): the paint's albedo varies), over the mask's
pixels where both poses show faces the layout has seen. The two kinds of evidence are added: the other pose
is taken when its mean absolute residual is lower (relative) by `appearance_switch` plus
`appearance_gap_weight` x its outline's disadvantage (its loss minus the held pose's; negative when its
outline fits better), and it fits its mask as well as the global stage asks of a switch (IoU 0.75; 0.85
for a car under half visible). A mesh's layout judges only when `appearance_min_voters` cars voted for it.
The review runs once all photographs of a run are
refined (`runner.run_refine`): it needs the other photographs' cars.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from scipy import ndimage

from nmrlight.errors import NmrlightError
from nmrlight.io.poses import CarPose
from nmrlight.refine.config import RefineConfig
from nmrlight.refine.global_stage import switch_bars
from nmrlight.refine.result import CarResult, ImageResult, LightingResult
from nmrlight.refine.window import Box, crop, projected_box
from nmrlight.render import render
from nmrlight.rotations import kaggle_to_matrix
from nmrlight.scene import MeshObject, Scene
from nmrlight.shade import Lighting

ERODE_PIXELS = 2          # silhouette pixels mix car and background; left out
MIN_PIXELS = 200          # a learning car shows at least this many inner pixels ...
MIN_WIDTH = 30            # ... and is at least this wide (image pixels)
LEARN_MIN_IOU = 0.9       # a learning car fits its mask at least this well ...
LEARN_MARGIN = 0.05       # ... and beat its other heading (when that was refined) by this loss
DARK_MEDIAN = 0.15        # a car this dark (reflectance) shows no paint against glass: it does not vote
SHADING_FLOOR = 0.05      # shading below this is not divided by


@dataclass
class FlipReview:
    """What the review did to a run: cars judged, switched, and the meshes with a layout."""

    learned: dict[int, int]     # model id -> cars that voted
    ties: int = 0               # cars found tied (judged, or left: no layout or too few pixels in common)
    judged: int = 0
    switched: int = 0


def _mesh_object(mesh, pose: CarPose) -> MeshObject:
    return MeshObject(torch.as_tensor(mesh.object_vertices(), dtype=torch.float32), torch.as_tensor(mesh.faces),
                      rotation=kaggle_to_matrix(torch.tensor(pose.rotation, dtype=torch.float64)).float(),
                      translation=torch.tensor(pose.translation, dtype=torch.float32))


def _box(camera, obj: MeshObject) -> Box | None:
    """Pixel box of a posed mesh with 4 px of margin, clipped to the image (None: off it)."""
    box = projected_box(obj.posed_vertices(), camera)
    return None if box is None else box.padded(0.0, 4, camera.width, camera.height)


def _faces_and_shading(camera, objects: list[MeshObject], k: int, box: Box,
                       lighting: LightingResult) -> tuple[np.ndarray, np.ndarray]:
    """In `box`: the face of object k seen at each pixel (-1: none; the others occlude) and the shading."""
    out = render(Scene(objects), camera.window(box.x0, box.y0, box.width, box.height), None, edges="none",
                 outputs={"normals"})
    start = sum(len(o.faces) for o in objects[:k])
    local = np.where(out.object_id.numpy() == k, out.face_id.numpy() - start, -1)
    light = Lighting(lighting.ambient, lighting.directional, tuple(lighting.direction))
    shading = light.intensity(out.normals.double().permute(1, 2, 0))[..., 0]
    return local, shading.numpy()


def _headings(car: CarResult) -> tuple[dict, dict] | None:
    """The global stage's summaries of the held heading's and the other heading's refinements under the
    prior (`detector_start`, `flip_start`), when it refined both; their losses compare (a polish without
    the prior that the chosen pose had after is not in them)."""
    record = car.extra.get("global")
    if not record or "flip_start" not in record or "detector_start" not in record:
        return None
    held, other = record["detector_start"], record["flip_start"]
    return (other, held) if record.get("flipped") else (held, other)


def _other_pose(car: CarResult) -> CarPose:
    other = _headings(car)[1]
    return CarPose(car.refined.model_type, tuple(other["rotation"]), tuple(other["translation"]),
                   car.refined.confidence)


def _gap(car: CarResult) -> float | None:
    """The other heading's loss minus the held heading's (None: only one heading refined)."""
    headings = _headings(car)
    return None if headings is None else float(headings[1]["loss_after"]) - float(headings[0]["loss_after"])


def _is_tie(car: CarResult, tie: float) -> bool:
    gap = _gap(car)
    return car.status == "refined" and gap is not None and abs(gap) < tie


def _votes(car: CarResult, tie: float) -> bool:
    """Whether a car's pose is trusted enough to teach its mesh's layout."""
    if car.status != "refined" or (car.iou_after or 0.0) < LEARN_MIN_IOU:
        return False
    gap = _gap(car)
    return gap is None or gap > max(LEARN_MARGIN, tie)


class _Photo:
    """One photograph's gray image, label mask and the refined cars as mesh objects (read once)."""

    def __init__(self, data, result: ImageResult) -> None:
        self.result = result
        self.camera = data.camera()
        self.gray = data.read_image(result.image_id)
        self.labels = data.read_mask(result.image_id, shape=self.gray.shape)
        self.meshes = [data.car(c.refined.model_type) for c in result.cars]
        self.objects = [_mesh_object(m, c.scene_pose()) for m, c in zip(self.meshes, result.cars, strict=True)]

    def reflectance(self, k: int) -> np.ndarray | None:
        """Car k's per-face relative reflectance (F,) (NaN: not seen), or None when it cannot vote."""
        box = _box(self.camera, self.objects[k])
        if box is None or box.width < MIN_WIDTH or self.result.lighting is None:
            return None
        local, shading = _faces_and_shading(self.camera, self.objects, k, box, self.result.lighting)
        inner = ndimage.binary_erosion(local >= 0, iterations=ERODE_PIXELS) & (crop(self.labels, box) == k + 1)
        if int(inner.sum()) < MIN_PIXELS:
            return None
        q = crop(self.gray, box)[inner] / np.maximum(shading[inner], SHADING_FLOOR)
        median = float(np.median(q))
        if median < DARK_MEDIAN:
            return None
        faces = local[inner]
        n = len(self.meshes[k].faces)
        count = np.bincount(faces, minlength=n)
        total = np.bincount(faces, q / median, minlength=n)
        return np.where(count > 0, total / np.maximum(count, 1), np.nan)

    def residuals(self, k: int, poses: list[CarPose], layout: np.ndarray) -> list[float] | None:
        """Mean absolute residual of the layout's fit for car k at each pose, over the mask pixels where
        every pose shows a face the layout has seen (None: too few such pixels)."""
        mesh = self.meshes[k]
        variants = []
        for pose in poses:
            objects = list(self.objects)
            objects[k] = _mesh_object(mesh, pose)
            variants.append(objects)
        boxes = [_box(self.camera, objects[k]) for objects in variants]
        if any(b is None or b.width < MIN_WIDTH for b in boxes) or self.result.lighting is None:
            return None
        box = boxes[0]
        for other in boxes[1:]:
            box = box.union(other)
        views = [_faces_and_shading(self.camera, objects, k, box, self.result.lighting) for objects in variants]
        seen = ~np.isnan(layout)
        common = crop(self.labels, box) == k + 1
        for local, _ in views:
            common &= ndimage.binary_erosion(local >= 0, iterations=ERODE_PIXELS)
            common &= seen[np.maximum(local, 0)]
        if int(common.sum()) < MIN_PIXELS // 4:
            return None
        observed = crop(self.gray, box)[common].astype(np.float64)
        out = []
        for local, shading in views:
            s = shading[common]
            design = np.stack([s * layout[local[common]], s], axis=1)
            coef, *_ = np.linalg.lstsq(design, observed, rcond=None)
            out.append(float(np.mean(np.abs(observed - design @ coef))))
        return out


def learn_layouts(photos: list[_Photo], tie: float) -> dict[int, tuple[np.ndarray, int]]:
    """Per model id: the median relative reflectance of each face over the cars that vote (NaN: no car
    showed it), and how many cars voted."""
    votes: dict[int, list[np.ndarray]] = {}
    for photo in photos:
        for k, car in enumerate(photo.result.cars):
            if _votes(car, tie):
                face = photo.reflectance(k)
                if face is not None:
                    votes.setdefault(int(car.refined.model_type), []).append(face)
    layouts = {}
    for model, faces in votes.items():
        stack = np.stack(faces)
        seen = ~np.isnan(stack)
        median = np.full(stack.shape[1], np.nan)
        any_seen = seen.any(0)
        median[any_seen] = np.nanmedian(stack[:, any_seen], axis=0)
        layouts[model] = (median, len(faces))
    return layouts


def review_flip_ties(photographs: list[tuple[object, ImageResult]], config: RefineConfig,
                     log: Callable[[str], None] | None = None) -> FlipReview:
    """Judge every flip tie (`appearance_tie`) of a run's results by the meshes' learned layouts; switch a
    car to its other heading's refined pose when the layout fits it better by `appearance_switch`
    (relative) plus `appearance_gap_weight` x the loss it loses by on its outline, the layout rests on at
    least `appearance_min_voters` cars, and that pose meets the global stage's IoU bar for a switch
    (`global_stage.switch_bars`).

    `photographs`: (DataFolder, ImageResult) pairs, the results of one run (or of runs on data folders
    that share their meshes: the more cars vote, the better the layout). Changes the results in place
    (extra["appearance"] records each judged car) and returns what it did."""
    tie = config.appearance_tie
    ties = {id(r): [k for k, c in enumerate(r.cars) if _is_tie(c, tie) and "appearance" not in c.extra]
            for _, r in photographs if r.status == "ok"}
    if not any(ties.values()):
        return FlipReview({})
    photos = []
    for data, r in photographs:
        if r.status != "ok":
            continue
        try:
            photos.append(_Photo(data, r))
        except (NmrlightError, OSError, ValueError) as error:   # a photograph that cannot be read: skipped
            if log is not None:
                log(f"image {r.image_id}: left out of the flip review ({error})")
    layouts = learn_layouts(photos, tie)
    review = FlipReview({m: n for m, (_, n) in layouts.items()}, sum(map(len, ties.values())))
    for photo in photos:
        for k in ties.get(id(photo.result), []):
            car = photo.result.cars[k]
            layout, voters = layouts.get(int(car.refined.model_type), (None, 0))
            other, other_record = _other_pose(car), _headings(car)[1]
            # the median of a few cars' reflectances is too noisy to overrule a heading
            residuals = None if layout is None or voters < config.appearance_min_voters else \
                photo.residuals(k, [car.refined, other], layout)
            record = {"tie": round(_gap(car), 5), "voters": voters,
                      "residuals": None if residuals is None else [round(r, 5) for r in residuals],
                      "switched": False}
            if residuals is not None:
                review.judged += 1
                gain = (residuals[0] - residuals[1]) / max(residuals)
                needed = config.appearance_switch + config.appearance_gap_weight * _gap(car)
                min_iou, _ = switch_bars(config, float(car.extra.get("visible_fraction", 1.0)))
                fits = min_iou is None or float(other_record.get("iou_after", 0.0)) >= min_iou
                if gain > needed and fits:
                    record["switched"] = True
                    record["replaced"] = {"rotation": list(car.refined.rotation),
                                          "translation": list(car.refined.translation), "loss_after": car.loss_after}
                    car.refined = other
                    car.loss_after = float(other_record["loss_after"])
                    car.iou_after = other_record.get("iou_after", car.iou_after)
                    car.extra["global"]["flipped"] = not car.extra["global"].get("flipped", False)
                    review.switched += 1
                    if log is not None:
                        log(f"image {photo.result.image_id}: car {k} takes its other heading (the learned layout "
                            f"fits it {gain:.0%} better)")
            car.extra["appearance"] = record
    return review
