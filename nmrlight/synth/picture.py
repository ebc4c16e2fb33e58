"""One synthetic picture: layout, lighting, background, render, noise and masks."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from nmrlight.io.poses import CarPose
from nmrlight.procedural import ProceduralCar, car_for_model
from nmrlight.rotations import kaggle_to_matrix
from nmrlight.synth.background import background
from nmrlight.synth.config import SynthConfig
from nmrlight.synth.layout import place_cars
from nmrlight.synth.masks import detector_labels
from nmrlight.synth.materials import _albedo, _lighting


@dataclass
class SynthImage:
    """One synthesised picture with everything known about it."""

    image_id: str
    image: np.ndarray            # (H, W) or (H, W, 3) float in [0, 1], noisy
    labels: np.ndarray           # (H, W) int: k = k-th car of the truth row, detector edge errors
    object_id: np.ndarray        # (H, W) int: exact render object index, -1 background
    cars: list[CarPose]
    lighting: tuple[float, float, float, float, float]   # ambient, directional, dx, dy, dz
    materials: str = "lambert"
    unannotated: list[CarPose] = field(default_factory=list)   # rendered, left out of the truth (far)
    ignore: np.ndarray | None = None          # (H, W) bool: pixels of unannotated cars (train_masks/)
    visible_pixels: np.ndarray | None = None  # (N,) visible pixels of each truth car
    full_pixels: np.ndarray | None = None     # (N,) its pixels rendered alone (unoccluded), in the image

    @property
    def visible_fraction(self) -> np.ndarray | None:
        """Visible / unoccluded pixels of each truth car (0 where it has none)."""
        if self.visible_pixels is None or self.full_pixels is None:
            return None
        return np.where(self.full_pixels > 0, self.visible_pixels / np.maximum(self.full_pixels, 1), 0.0)


class _Models:
    """Procedural cars by model id, with their render tensors and sizes (cached)."""

    def __init__(self) -> None:
        self.cars: dict[int, ProceduralCar] = {}
        self.tensors: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}

    def get(self, model: int) -> ProceduralCar:
        if model not in self.cars:
            car = car_for_model(model)
            self.cars[model] = car
            self.tensors[model] = (torch.as_tensor(car.mesh.object_vertices(), dtype=torch.float32),
                                   torch.as_tensor(car.mesh.faces, dtype=torch.long))
        return self.cars[model]

    def sizes(self, models) -> dict[int, tuple[float, float, float]]:
        out = {}
        for m in models:
            ext = np.ptp(self.get(int(m)).mesh.vertices, axis=0)
            out[int(m)] = (float(ext[2]), float(ext[0]), float(ext[1]))
        return out


def image_id(index: int) -> str:
    """ImageId of the index-th (0-based) synthetic picture: ID_synth_000001, ..."""
    return f"ID_synth_{index + 1:06d}"


def synthesize_image(index: int, seed: int, config: SynthConfig, models: _Models | None = None
                     ) -> SynthImage:
    """Make picture `index` of the data set `seed` (independent of the other pictures)."""
    from nmrlight.render import render
    from nmrlight.scene import MeshObject, Scene
    from nmrlight.shade import Lighting

    models = models or _Models()
    rng = np.random.default_rng([int(seed), int(index)])
    if config.layout != "default" or config.materials != "lambert" or config.clutter:
        from nmrlight.synth.street_picture import street_picture

        return SynthImage(image_id(index), materials=config.materials, **street_picture(rng, config, models))
    camera = config.camera()
    pitch = float(np.clip(rng.normal(*config.pitch), 0.1, 0.25))
    cam_h = float(rng.uniform(*config.camera_height))
    ego = float(rng.uniform(-1.0, 1.0))
    cars = place_cars(rng, camera, config, models.sizes(config.model_types), pitch, cam_h, ego)
    light = _lighting(rng)
    bg = background(camera, rng, pitch, cam_h, ego, config.rgb)
    objects = []
    for car in cars:
        proc = models.get(car.model_type)
        verts, faces = models.tensors[car.model_type]
        R = torch.as_tensor(kaggle_to_matrix(np.array(car.rotation)), dtype=torch.float32)
        objects.append(MeshObject(vertices=verts, faces=faces, rotation=R,
                                  translation=torch.tensor(car.translation, dtype=torch.float32),
                                  albedo=_albedo(proc, rng, config.rgb)))
    lighting = Lighting(ambient=light[0], directional=light[1], direction=light[2:])
    with torch.no_grad():
        out = render(Scene(objects), camera, lighting, background=torch.as_tensor(bg), edges=config.edges,
                     outputs={"image"})
    image = out.image.numpy()
    image = image + rng.normal(0.0, config.noise_sigma, image.shape).astype(np.float32)
    image = np.clip(image, 0.0, 1.0)
    image = image[0] if image.shape[0] == 1 else np.transpose(image, (1, 2, 0))
    object_id = out.object_id.numpy().astype(np.int32)
    depths = np.array([c.translation[2] for c in cars])
    labels = detector_labels(object_id, depths, rng if config.mask_errors else None)
    return SynthImage(image_id(index), image, labels, object_id, cars, light)

