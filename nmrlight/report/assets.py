"""Pictures of one photograph for its report page: the photo with every car's outline before and
after refinement, and a small before|after crop per car, written as JPEG files beside the pages.

Outlines come from the project renderer, once per photograph at the page's resolution (all cars in
one scene, so an outline is the car's visible part), and once per car window for the crops.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw

from nmrlight.errors import NmrlightError
from nmrlight.io.dataset import DataFolder
from nmrlight.io.poses import CarPose
from nmrlight.refine.overlay import BLUE, GREEN, RED
from nmrlight.refine.result import ImageResult
from nmrlight.rotations import kaggle_to_matrix

PHOTO_WIDTH = 1024        # the page's photograph is at most this wide
CROP_SIZE = 128           # longest side of each half of a car's crop
CROP_UPSCALE = 4.0        # small far cars are enlarged up to this factor
PHOTO_QUALITY = 65      # JPEG quality: about 60-90 KB for a 1024 px photograph
CROP_QUALITY = 70


@dataclass
class Assets:
    """What was drawn for one photograph: file names relative to its folder, and what went wrong."""

    photo: str | None = None
    crops: dict[int, str] = field(default_factory=dict)   # car index -> file name
    notes: list[str] = field(default_factory=list)


def outline(labels: np.ndarray) -> np.ndarray:
    """(H, W) bool: pixels of a label image (-1 background) that touch a pixel of another label."""
    inside = labels >= 0
    edge = np.zeros(labels.shape, bool)
    edge[1:, :] |= labels[1:, :] != labels[:-1, :]
    edge[:-1, :] |= labels[:-1, :] != labels[1:, :]
    edge[:, 1:] |= labels[:, 1:] != labels[:, :-1]
    edge[:, :-1] |= labels[:, :-1] != labels[:, 1:]
    return edge & inside


def _objects(data: DataFolder, poses: dict[int, CarPose], notes: list[str]) -> tuple[list, list[int]]:
    from nmrlight.scene import MeshObject

    objects, indices = [], []
    for index, pose in poses.items():
        if not pose.translation[2] > 0:
            continue
        try:
            mesh = data.car(pose.model_type)
        except NmrlightError as exc:
            notes.append(f"car {index}: {exc}")
            continue
        objects.append(MeshObject(torch.as_tensor(mesh.object_vertices(), dtype=torch.float32),
                                  torch.as_tensor(mesh.faces, dtype=torch.long),
                                  torch.as_tensor(kaggle_to_matrix(np.asarray(pose.rotation, dtype=np.float64)),
                                                  dtype=torch.float32),
                                  torch.as_tensor(pose.translation, dtype=torch.float32)))
        indices.append(index)
    return objects, indices


def car_labels(data: DataFolder, poses: dict[int, CarPose], camera, notes: list[str]) -> np.ndarray:
    """(H, W) int label image of the posed cars seen by `camera`: the car index, -1 background."""
    from nmrlight.render import render
    from nmrlight.scene import Scene

    objects, indices = _objects(data, poses, notes)
    labels = np.full((camera.height, camera.width), -1, dtype=np.int64)
    if not objects:
        return labels
    with torch.no_grad():
        out = render(Scene(objects), camera, None, edges="none", outputs={"alpha"})
    ids = out.object_id.numpy()
    lookup = np.asarray(indices, dtype=np.int64)
    labels[ids >= 0] = lookup[ids[ids >= 0]]
    return labels


def _resize_nearest(labels: np.ndarray, height: int, width: int) -> np.ndarray:
    rows = np.minimum((np.arange(height) + 0.5) * labels.shape[0] / height, labels.shape[0] - 1).astype(int)
    cols = np.minimum((np.arange(width) + 0.5) * labels.shape[1] / width, labels.shape[1] - 1).astype(int)
    return labels[rows][:, cols]


def _gray_rgb(photo: np.ndarray, height: int, width: int) -> np.ndarray:
    image = Image.fromarray((np.clip(photo, 0, 1) * 255).astype(np.uint8))
    if image.size != (width, height):
        image = image.resize((width, height), Image.BILINEAR)
    return np.repeat(np.asarray(image)[..., None], 3, axis=-1).copy()


def _draw(rgb: np.ndarray, labels: np.ndarray, colour: tuple[int, int, int]) -> None:
    rgb[outline(labels)] = colour


def _save_jpeg(image: Image.Image, path: Path, quality: int) -> None:
    image.save(path, format="JPEG", quality=quality, optimize=True)


def photo_overlay(data: DataFolder, result: ImageResult, photo: np.ndarray, mask: np.ndarray | None,
                  notes: list[str]) -> Image.Image:
    """The photograph at most PHOTO_WIDTH wide: mask outlines green, initial poses blue, refined red,
    each car's index at its refined centre."""
    height, width = photo.shape
    scale = min(1.0, PHOTO_WIDTH / width)
    camera = data.camera(width, height).scaled(scale)
    rgb = _gray_rgb(photo, camera.height, camera.width)
    if mask is not None:
        small = _resize_nearest(mask.astype(np.int64) - 1, camera.height, camera.width)
        _draw(rgb, small, GREEN)
    _draw(rgb, car_labels(data, {c.index: c.initial for c in result.cars}, camera, notes), BLUE)
    _draw(rgb, car_labels(data, {c.index: c.refined for c in result.cars}, camera, []), RED)
    image = Image.fromarray(rgb)
    pen = ImageDraw.Draw(image)
    K = camera.K.double().numpy()
    for car in result.cars:
        x, y, z = car.refined.translation
        if z > 0:
            u, v = K[0, 0] * x / z + K[0, 2], K[1, 1] * y / z + K[1, 2]
            if 0 <= u < camera.width and 0 <= v < camera.height:
                pen.text((u + 2, v - 12), str(car.index), fill=(255, 255, 0))
    return image


def car_crop(data: DataFolder, photo: np.ndarray, mask: np.ndarray | None, index: int, initial: CarPose,
             refined: CarPose, box: list[int]) -> Image.Image:
    """Before | after crop of one car's window: mask green, initial pose blue (left), refined red (right)."""
    x0, y0, x1, y1 = (int(v) for v in box)
    height, width = photo.shape
    x0, y0, x1, y1 = max(0, x0), max(0, y0), min(width, x1), min(height, y1)
    if x1 <= x0 or y1 <= y0:
        raise NmrlightError(f"car {index}: empty window {box}")
    scale = min(CROP_UPSCALE, CROP_SIZE / max(x1 - x0, y1 - y0))
    camera = data.camera(width, height).window(x0, y0, x1 - x0, y1 - y0).scaled(scale)
    base = _gray_rgb(photo[y0:y1, x0:x1], camera.height, camera.width)
    if mask is not None:
        own = np.where(mask[y0:y1, x0:x1] == index + 1, 0, -1)
        _draw(base, _resize_nearest(own, camera.height, camera.width), GREEN)
    halves = []
    for pose, colour in ((initial, BLUE), (refined, RED)):
        rgb = base.copy()
        _draw(rgb, car_labels(data, {index: pose}, camera, []), colour)
        halves.append(rgb)
    gap = np.full((camera.height, 2, 3), 255, np.uint8)
    return Image.fromarray(np.concatenate([halves[0], gap, halves[1]], axis=1))


def write_assets(data: DataFolder, result: ImageResult, folder: Path) -> Assets:
    """Draw the photograph and the crops of `result` into `folder`; problems become notes, not errors."""
    folder.mkdir(parents=True, exist_ok=True)
    assets = Assets()
    try:
        photo = data.read_image(result.image_id, "gray")
    except (NmrlightError, OSError) as exc:
        assets.notes.append(f"no photograph: {exc}")
        return assets
    mask = None
    try:
        if data.mask_path(result.image_id) is not None or data.coco_path.is_file():
            mask = data.read_mask(result.image_id, shape=photo.shape)
    except NmrlightError as exc:
        assets.notes.append(f"no mask outlines: {exc}")
    _save_jpeg(photo_overlay(data, result, photo, mask, assets.notes), folder / "photo.jpg", PHOTO_QUALITY)
    assets.photo = "photo.jpg"
    for car in result.cars:
        box = car.extra.get("window")
        if not box:
            continue
        try:
            crop = car_crop(data, photo, mask, car.index, car.initial, car.refined, box)
        except NmrlightError as exc:
            assets.notes.append(str(exc))
            continue
        name = f"car{car.index}.jpg"
        _save_jpeg(crop, folder / name, CROP_QUALITY)
        assets.crops[car.index] = name
    return assets
