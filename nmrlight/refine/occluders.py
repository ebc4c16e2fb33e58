"""Which other cars hide a car while it is refined: rendered neighbours, or their masks.

A car is refined over the other cars of its window, rendered at their current poses, so that the
pixels a nearer car hides are neither asked of it nor held against it. That is right while the
neighbours' poses are right. A neighbour whose render covers a large share of this car's mask is
contradicted by the photograph there (the mask says this car shows at those pixels): a gross detector
error kept because its own fit was rejected, a false positive, a far car predicted near. Rendered, it
would hide the very pixels that locate this car, and the car cannot fit at any pose. Such a neighbour
(`contradicted`) hides nothing from this car; its own mask's pixels are don't-care instead, since
behind them this car may or may not continue.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from nmrlight.camera import Camera
from nmrlight.refine.prepare import _Car, downsampled_mask
from nmrlight.refine.window import crop
from nmrlight.render import render
from nmrlight.scene import MeshObject, Scene

CHECK_SIZE = 160   # longer side (render pixels) of the window the contradiction is measured on


def neighbours(car: _Car, cars: list[_Car], limit: int) -> list[_Car]:
    """The other cars whose boxes meet `car`'s window, nearest first, at most `limit`."""
    near = [c for c in cars if c is not car and c.box is not None and c.box.intersects(car.window)]
    near.sort(key=lambda c: float(c.translation[2]))
    return near[:limit]


def hidden_pixels(car: _Car, cars: list[_Car], labels: np.ndarray) -> np.ndarray:
    """Pixels of the window labelled as a car nearer than this one, or don't-care (`car.ignore`)."""
    nearer = [c.index + 1 for c in cars if c is not car and float(c.translation[2]) < float(car.translation[2])]
    window = crop(labels, car.window)
    hidden = np.isin(window, nearer) if nearer else np.zeros(window.shape, bool)
    return hidden | car.ignore if car.ignore is not None else hidden


def mask_cover(car: _Car, other: _Car, camera: Camera, size: int = CHECK_SIZE) -> float:
    """Share of `car`'s mask that `other`, rendered alone at its current pose, covers (in `car`'s window)."""
    box = car.window
    scale = min(1.0, size / max(box.width, box.height))
    cam = camera.window(box.x0, box.y0, box.width, box.height).scaled(scale)
    mask = downsampled_mask(car.mask, (cam.height, cam.width))
    area = int(mask.sum())
    if area == 0:
        return 0.0
    posed = MeshObject(other.vertices, other.faces, other.rotation.float(), other.translation.float())
    cover = (render(Scene([posed]), cam, None, edges="none", outputs=set()).object_id == 0).numpy()
    return float((cover & mask).sum()) / area


def contradicted(car: _Car, others: list[_Car], camera: Camera, share: float | None) -> list[_Car]:
    """The cars of `others` nearer than `car` that cover more than `share` of its mask (None: none)."""
    if share is None or car.mask is None or not car.mask.any():
        return []
    depth = float(car.translation[2])
    return [n for n in others if float(n.translation[2]) < depth and mask_cover(car, n, camera) > share]


class Occluders(NamedTuple):
    rendered: list[_Car]          # the other cars drawn over the car (nearest first)
    hidden: np.ndarray | None     # the car's don't-care pixels (window crop)
    contradicted: list[_Car]      # nearer cars left out: their render covered the car's mask


def occluders(car: _Car, cars: list[_Car], camera: Camera, labels: np.ndarray | None, limit: int,
              share: float | None, ignore_occluded: bool = False) -> Occluders:
    """The cars rendered over `car` while it is refined, and its don't-care pixels.

    Nearer neighbours that `contradicted` names are left out, their mask pixels made don't-care.
    """
    near = neighbours(car, cars, limit)
    hidden = hidden_pixels(car, cars, labels) if ignore_occluded and labels is not None else car.ignore
    dropped = contradicted(car, near, camera, share) if labels is not None else []
    if not dropped:
        return Occluders(near, hidden, [])
    theirs = np.isin(crop(labels, car.window), [n.index + 1 for n in dropped])
    left_out = {n.index for n in dropped}
    return Occluders([n for n in near if n.index not in left_out], theirs if hidden is None else hidden | theirs,
                     dropped)
