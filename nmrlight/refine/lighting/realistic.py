"""Cars with real materials painted into a synthetic data folder, to test the lighting fit where it is hard.

`nmrlight synth` renders Lambertian cars with darker windows and tyres. Real cars add what the
lighting model does not have: paint that varies across the body, dark glass that mirrors the sky,
black plastic trim, specular highlights on paint and glass, and shadows cast on a car by something
else. `paint_realistic` re-renders every car of a synthetic folder (poses from train.csv, light from
lighting.csv) with such materials and writes the pixels over the original cars; masks, poses and
the true lighting stay as they were. The per-face labels of the procedural meshes are used here, to
make the truth; the lighting fit never sees them.

Appearance of a pixel (camera frame, n toward the camera, v toward the camera, d toward the light,
A ambient, D directional, lit = 0 inside a cast shadow, else 1):
  I = a (A + D lit max(0, n.d)) + reflect + lit D k_s max(0, n.h)^e,  h = normalise(d + v)
with a per face: paint x exp(N(0, 0.06)) on the body, black trim (0.06) below 18 % of the height on
half the cars, glass 0.04-0.10 with a sky reflection 0.1-0.3 x (0.5 + 0.5 up-ness), tyres 0.05,
lamps 0.8; k_s 0.15-0.5 on paint and 0.6 on glass, e 20-80; a straight shadow edge across a third
of the cars.
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import torch

from nmrlight.errors import NmrlightError
from nmrlight.io.dataset import DataFolder
from nmrlight.io.images import write_image
from nmrlight.io.poses import read_poses
from nmrlight.procedural import BODY, LIGHT, WHEEL, WINDOW, car_for_model
from nmrlight.render import render
from nmrlight.rotations import kaggle_to_matrix
from nmrlight.scene import MeshObject, Scene


def read_lighting_csv(path: str | Path) -> dict[str, tuple[float, float, tuple[float, float, float]]]:
    """ImageId -> (ambient, directional, direction) from a lighting.csv (synth's truth or refine's output)."""
    path = Path(path)
    if not path.is_file():
        raise NmrlightError(f"{path}: lighting file not found")
    out = {}
    with path.open(newline="") as handle:
        reader = csv.DictReader(handle)
        need = {"ImageId", "ambient", "directional", "dx", "dy", "dz"}
        if reader.fieldnames is None or not need <= set(reader.fieldnames):
            raise NmrlightError(f"{path}: needs the columns {', '.join(sorted(need))}, got {reader.fieldnames}")
        for line, row in enumerate(reader, start=2):
            try:
                out[row["ImageId"]] = (float(row["ambient"]), float(row["directional"]),
                                       (float(row["dx"]), float(row["dy"]), float(row["dz"])))
            except (TypeError, ValueError) as exc:
                raise NmrlightError(f"{path}, line {line}: not a number ({exc})") from None
    return out


EFFECTS = ("variation", "trim", "glass", "tyres", "lamps", "highlights", "reflections", "shadows")


def _face_albedo(materials: np.ndarray, rise: np.ndarray, rng: np.random.Generator,
                 off: frozenset[str] = frozenset()) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per face: albedo, specular strength, sky reflection strength (effects in `off` left out; the
    random draws are the same either way, so scenes with and without an effect are otherwise alike)."""
    paint = rng.uniform(0.15, 0.9)
    variation = np.exp(rng.normal(0.0, 0.06, len(materials)))
    albedo = paint * (variation if "variation" not in off else np.ones(len(materials)))
    spec = np.full(len(materials), rng.uniform(0.15, 0.5))
    reflect = np.zeros(len(materials))
    if rng.random() < 0.5 and "trim" not in off:
        albedo[(materials == BODY) & (rise < 0.18)] = 0.06
    glass = materials == WINDOW
    glass_albedo, glass_reflect = rng.uniform(0.04, 0.10), rng.uniform(0.1, 0.3)
    if "glass" not in off:
        albedo[glass] = glass_albedo
        spec[glass] = 0.6
        if "reflections" not in off:
            reflect[glass] = glass_reflect
    if "tyres" not in off:
        albedo[materials == WHEEL] = 0.05
        spec[materials == WHEEL] = 0.02
    if "lamps" not in off:
        albedo[materials == LIGHT] = 0.8
    if "highlights" in off:
        spec[:] = 0.0
    return albedo, spec, reflect


def realistic_image(photo: np.ndarray, cars, light, camera, rng: np.random.Generator, noise: float = 0.02,
                    off: frozenset[str] = frozenset()) -> np.ndarray:
    """`photo` (H, W) with every car of `cars` (CarPose list) repainted with real materials under `light`
    (the effects named in `off`, from EFFECTS, left out: to see what each costs the fit)."""
    unknown = set(off) - set(EFFECTS)
    if unknown:
        raise NmrlightError(f"realistic materials: unknown effect {sorted(unknown)[0]!r}; known: {', '.join(EFFECTS)}")
    ambient, directional, direction = light
    d = torch.as_tensor(direction, dtype=torch.float64)
    d = d / d.norm()
    objects, albedo, spec, reflect, power = [], [], [], [], []
    for car in cars:
        proc = car_for_model(car.model_type)
        verts = proc.mesh.object_vertices()
        rise = (verts[proc.mesh.faces].mean(1)[:, 1] - verts[:, 1].min()) / np.ptp(verts[:, 1])
        a, s, r = _face_albedo(proc.materials, rise, rng, off)
        albedo.append(a)
        spec.append(s)
        reflect.append(r)
        power.append(np.full(len(a), rng.uniform(20, 80)))
        objects.append(MeshObject(torch.as_tensor(verts, dtype=torch.float32),
                                  torch.as_tensor(proc.mesh.faces, dtype=torch.long),
                                  torch.as_tensor(kaggle_to_matrix(np.array(car.rotation)), dtype=torch.float32),
                                  torch.tensor(car.translation, dtype=torch.float32)))
    if not objects:
        return photo
    with torch.no_grad():
        out = render(Scene(objects), camera, None, edges="none", outputs={"normals", "depth"})
    face = out.face_id
    covered = face >= 0
    f = face[covered]
    table = [torch.as_tensor(np.concatenate(x)) for x in (albedo, spec, reflect, power)]
    a, ks, kr, e = (t[f] for t in table)
    n = out.normals.permute(1, 2, 0)[covered].double()
    rows, cols = torch.nonzero(covered, as_tuple=True)
    z = out.depth[covered].double()
    point = torch.stack([(cols + 0.5 - camera.cx) / camera.fx * z, (rows + 0.5 - camera.cy) / camera.fy * z, z], 1)
    view = -point / point.norm(dim=1, keepdim=True)
    half = d + view
    half = half / half.norm(dim=1, keepdim=True)
    lit = torch.ones(len(f), dtype=torch.float64)
    owner = out.object_id[covered]
    for k in range(len(objects)):
        if rng.random() < 1 / 3:
            sel = owner == k
            if not bool(sel.any()):
                continue
            angle = rng.uniform(0, 2 * np.pi)
            across = torch.cos(torch.tensor(angle)) * cols[sel] + torch.sin(torch.tensor(angle)) * rows[sel]
            cut = float(torch.quantile(across.double(), rng.uniform(0.3, 0.7)))
            if "shadows" not in off:
                lit[sel] = torch.where(across.double() < cut, 0.0, 1.0).double()
    up = (-n[:, 1]).clamp(0, 1)   # camera y is down
    value = (a * (ambient + directional * lit * (n @ d).clamp_min(0)) + kr * (0.5 + 0.5 * up)
             + lit * directional * ks * (n * half).sum(1).clamp_min(0) ** e)
    value = value + torch.as_tensor(rng.normal(0.0, noise, len(value)))
    result = photo.copy()
    result[rows.numpy(), cols.numpy()] = np.clip(value.numpy(), 0.0, 1.0)
    return result


def paint_realistic(folder: str | Path, seed: int, off: frozenset[str] = frozenset()) -> int:
    """Repaint the cars of every image of a synthetic folder with real materials (but those in `off`);
    returns the images done."""
    data = DataFolder(folder)
    truth = read_poses(data.root / "train.csv")
    lights = read_lighting_csv(data.root / "lighting.csv")
    done = 0
    for index, image_id in enumerate(data.image_ids()):
        if image_id not in lights:
            raise NmrlightError(f"{data.root / 'lighting.csv'}: no row for image {image_id}")
        photo = data.read_image(image_id, "gray")
        camera = data.camera(photo.shape[1], photo.shape[0])
        rng = np.random.default_rng([int(seed), index, 7])
        image = realistic_image(photo, truth.get(image_id, []), lights[image_id], camera, rng, off=off)
        write_image(data.image_path(image_id), image)
        done += 1
    return done
