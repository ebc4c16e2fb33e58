"""One picture of the street presets (kaggle, crowded): real-data layout, cluttered street, materials
with specular highlights, unannotated far cars (ignore regions) and each car's visible fraction.
"""

from __future__ import annotations

import numpy as np
import torch
from scipy import ndimage

from nmrlight.camera import Camera
from nmrlight.io.poses import CarPose
from nmrlight.rotations import kaggle_to_matrix
from nmrlight.synth.background import background as lane_background
from nmrlight.synth.config import SynthConfig
from nmrlight.synth.layout import place_cars
from nmrlight.synth.masks import detector_labels
from nmrlight.synth.materials import _albedo, _lighting, realistic_materials, specular
from nmrlight.synth.street import Road, crowded_cars, far_cars, kaggle_cars, sample_road
from nmrlight.synth.street_background import street_background


def _pose(car: CarPose) -> tuple[torch.Tensor, torch.Tensor]:
    rotation = torch.as_tensor(kaggle_to_matrix(np.array(car.rotation)), dtype=torch.float32)
    return rotation, torch.tensor(car.translation, dtype=torch.float32)


def unoccluded_pixels(obj, camera: Camera) -> int:
    """Pixels inside the image that the object covers when rendered alone (its unoccluded silhouette).

    Renders only the window of the image around the object's projected vertices, so far cars cost
    little.
    """
    from nmrlight.render import render
    from nmrlight.scene import Scene

    with torch.no_grad():
        points = obj.vertices @ obj.rotation.T + obj.translation
        uv, ok = camera.project(points)
        if not bool(ok.any()):
            return 0
        uv = uv[ok]
        x0, y0 = (int(max(0, np.floor(float(uv[:, i].min())) - 1)) for i in (0, 1))
        x1 = int(min(camera.width, np.ceil(float(uv[:, 0].max())) + 1))
        y1 = int(min(camera.height, np.ceil(float(uv[:, 1].max())) + 1))
        if x1 <= x0 or y1 <= y0:
            return 0
        out = render(Scene([obj]), camera.window(x0, y0, x1 - x0, y1 - y0), edges="none", outputs=set())
        return int((out.object_id >= 0).sum())


def street_picture(rng: np.random.Generator, config: SynthConfig, models) -> dict:
    """Everything about one street picture, drawn from `rng` (see `picture.synthesize_image`)."""
    from nmrlight.render import render
    from nmrlight.scene import MeshObject, Scene
    from nmrlight.shade import Lighting

    camera = config.camera()
    road: Road = sample_road(rng, config.pitch, config.roll, config.camera_height)
    sizes = models.sizes(config.model_types)
    if config.layout == "crowded":
        cars = crowded_cars(rng, camera, road, sizes, config.model_types)
    elif config.layout == "default":   # the lanes of the default look, with other materials or clutter
        cars = place_cars(rng, camera, config, sizes, road.pitch, road.height, road.ego)
    else:
        cars = kaggle_cars(rng, camera, road, sizes, config.model_types, config.cars_mean, config.cars_min,
                           config.cars_max)
    unannotated = far_cars(rng, camera, road, sizes, config.model_types, config.unannotated_mean, cars)
    everything = cars + unannotated
    light = _lighting(rng)
    if config.clutter:
        bg = street_background(camera, rng, road, everything, sizes, config.rgb)
    else:
        bg = lane_background(camera, rng, road.pitch, road.height, road.ego, config.rgb)
    objects, ks, shininess = [], [], []
    for car in everything:
        proc = models.get(car.model_type)
        verts, faces = models.tensors[car.model_type]
        if config.materials == "realistic":
            albedo, k, e = realistic_materials(proc, rng, config.rgb)
            ks.append(k)
            shininess.append(e)
        else:
            albedo = _albedo(proc, rng, config.rgb)
        rotation, translation = _pose(car)
        objects.append(MeshObject(vertices=verts, faces=faces, rotation=rotation, translation=translation,
                                  albedo=albedo))
    lighting = Lighting(ambient=light[0], directional=light[1], direction=light[2:])
    realistic = config.materials == "realistic" and bool(objects)
    outputs = {"image", "normals", "depth"} if realistic else {"image"}
    if objects:
        with torch.no_grad():
            out = render(Scene(objects), camera, lighting, background=torch.as_tensor(bg), edges=config.edges,
                         outputs=outputs)
        image = out.image.numpy()
        object_id = out.object_id.numpy().astype(np.int32)
    else:
        image, object_id = bg, np.full((camera.height, camera.width), -1, dtype=np.int32)
    if realistic:
        face = out.face_id.numpy()
        covered = face >= 0
        ks_map = np.zeros(face.shape, dtype=np.float32)
        exp_map = np.ones(face.shape, dtype=np.float32)
        ks_map[covered] = np.concatenate(ks)[face[covered]]
        exp_map[covered] = np.concatenate(shininess)[face[covered]]
        highlight = specular(out.normals.numpy(), out.depth.numpy(), covered, camera.fx, camera.fy, camera.cx,
                             camera.cy, np.array(light[2:]), light[1], ks_map, exp_map)
        image = image + highlight[None]
    image = image + rng.normal(0.0, config.noise_sigma, image.shape).astype(np.float32)
    image = np.clip(image, 0.0, 1.0)
    image = image[0] if image.shape[0] == 1 else np.transpose(image, (1, 2, 0))
    n = len(cars)
    depths = np.array([c.translation[2] for c in everything])
    label_of = np.r_[np.arange(1, n + 1), np.zeros(len(unannotated), dtype=np.int64)]
    labels = detector_labels(object_id, depths, rng if config.mask_errors else None, label_of)
    ignore = ndimage.binary_dilation(object_id >= n, iterations=2) if unannotated else (object_id >= n)
    visible = np.bincount(object_id[object_id >= 0].ravel(), minlength=len(everything))[:n]
    full = np.array([unoccluded_pixels(obj, camera) for obj in objects[:n]], dtype=np.int64)
    return {"image": image, "labels": labels, "object_id": object_id, "cars": cars, "lighting": light,
            "unannotated": unannotated, "ignore": ignore, "visible_pixels": visible, "full_pixels": full}
