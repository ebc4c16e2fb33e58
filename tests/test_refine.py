"""Lighting estimation, pose refinement, refine_image and reports on a tiny scene rendered directly."""

from __future__ import annotations

import csv
import json
import math

import numpy as np
import pytest
import torch

from nmrlight.camera import Camera
from nmrlight.errors import NmrlightError
from nmrlight.io.camera_file import write_intrinsics
from nmrlight.io.dataset import DataFolder
from nmrlight.io.images import write_image
from nmrlight.io.masks import write_label_mask
from nmrlight.io.poses import CarPose
from nmrlight.procedural import car_for_model, write_models
from nmrlight.refine.ablation import car_errors
from nmrlight.refine.config import RefineConfig
from nmrlight.refine.image import refine_image
from nmrlight.refine.lighting import direction_error_deg, fit_lighting, sample_car
from nmrlight.refine.report import write_refined_csv, write_reports
from nmrlight.refine.result import ImageResult
from nmrlight.refine.window import Box, make_view
from nmrlight.render import render
from nmrlight.rotations import kaggle_to_matrix
from nmrlight.scene import MeshObject, Scene
from nmrlight.shade import Lighting

MODEL = 17
LIGHT = (0.4, 0.6, (0.5, -0.7, -0.5))
ALBEDO = (0.7, 0.45)
TRUTH = [CarPose(MODEL, (0.15, 0.6, math.pi), (-1.5, 1.5, 11.0)),
         CarPose(MODEL, (0.15, -2.2, math.pi), (3.0, 1.6, 16.0))]
FAST = RefineConfig(threads=1, stages=((64, "analytic", 2.0, 15), (128, "analytic", 1.0, 15),
                                       (160, "analytic", 0.0, 25)))
IMAGE = "ID_tiny"


def _objects(mesh, cars):
    v = torch.as_tensor(mesh.object_vertices(), dtype=torch.float32)
    f = torch.as_tensor(mesh.faces, dtype=torch.long)
    return [MeshObject(v, f, torch.as_tensor(kaggle_to_matrix(np.array(c.rotation)), dtype=torch.float32),
                       torch.tensor(c.translation, dtype=torch.float32), albedo=(a,))
            for c, a in zip(cars, ALBEDO, strict=True)]


@pytest.fixture(scope="module")
def scene(tmp_path_factory):
    """A data folder with one 846 x 678 picture of two uniformly painted cars under a known light."""
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("tiny")
    data = DataFolder.create(root)
    camera = Camera.kaggle().scaled(0.25)
    write_intrinsics(camera, root / "camera" / "camera_intrinsic.txt")
    write_models(root, [MODEL])
    mesh = car_for_model(MODEL).mesh
    lighting = Lighting(LIGHT[0], LIGHT[1], LIGHT[2])
    with torch.no_grad():
        out = render(Scene(_objects(mesh, TRUTH)), camera, lighting, background=0.3, outputs={"image"})
    write_image(root / "images" / f"{IMAGE}.png", out.image[0].numpy())
    labels = out.object_id.numpy() + 1
    write_label_mask(root / "masks" / f"{IMAGE}.png", labels)
    return data, camera, mesh


def _perturbed(car: CarPose, yaw_deg: float, depth: float) -> CarPose:
    v1, v2, v3 = car.rotation
    return CarPose(car.model_type, (v1, v2 + math.radians(yaw_deg), v3), tuple(np.array(car.translation) * depth))


def test_lighting_recovers_the_truth(scene) -> None:
    data, camera, mesh = scene
    photo = data.read_image(IMAGE)
    labels = data.read_mask(IMAGE)
    samples = []
    for k, obj in enumerate(_objects(mesh, TRUTH)):
        mask = labels == k + 1
        rows, cols = np.nonzero(mask)
        box = Box(int(cols.min()) - 5, int(rows.min()) - 5, int(cols.max()) + 6, int(rows.max()) + 6)
        crop = (slice(box.y0, box.y1), slice(box.x0, box.x1))
        view = make_view(camera, box, 128, photo[crop], mask[crop], None, 1)
        samples.append(sample_car(obj.vertices, obj.faces, obj.rotation, obj.translation, view))
    fit = fit_lighting(samples)
    total = LIGHT[0] + LIGHT[1]  # convention: l_a + l_d = 1, the albedos carry the scale
    assert fit.ambient == pytest.approx(LIGHT[0] / total, abs=0.03)
    assert fit.directional == pytest.approx(LIGHT[1] / total, abs=0.03)
    assert direction_error_deg(fit.direction, LIGHT[2]) < 4.0
    for albedo, truth in zip(fit.albedo, ALBEDO, strict=True):
        assert albedo == pytest.approx(truth * total, rel=0.05)


def test_refinement_reduces_the_errors(scene) -> None:
    data, _, _ = scene
    start = [_perturbed(TRUTH[0], 5.0, 1.03), _perturbed(TRUTH[1], -4.0, 0.97)]
    result = refine_image(data, IMAGE, start, FAST)
    assert [c.index for c in result.cars] == [0, 1]
    for car, truth in zip(result.cars, TRUTH, strict=True):
        assert car.status == "refined"
        rot0, tr0 = car_errors(car.initial, truth)
        rot1, tr1 = car_errors(car.refined, truth)
        assert rot1 < 0.4 * rot0, (rot0, rot1)
        assert tr1 < 0.3 * tr0, (tr0, tr1)
        assert car.iou_after > car.iou_before
        assert car.loss_after < car.loss_before
        assert car.iterations > 0 and car.seconds > 0
    li = result.lighting
    assert li.cars_used and direction_error_deg(li.direction, LIGHT[2]) < 8.0
    assert li.ambient + li.directional == pytest.approx(1.0)


def test_cars_without_mask_or_behind_keep_their_pose(scene, tmp_path) -> None:
    data, _, _ = scene
    hidden = CarPose(MODEL, (0.15, 0.0, math.pi), (0.0, 1.5, -8.0))       # behind the camera
    unlabelled = CarPose(MODEL, (0.15, 0.0, math.pi), (-6.0, 1.5, 40.0))  # no label 4 in the mask
    cars = [hidden, TRUTH[0], TRUTH[1], unlabelled]
    # labels follow the row: shift the two real cars to labels 2 and 3
    labels = data.read_mask(IMAGE)
    root = tmp_path / "shifted"
    shifted = DataFolder.create(root)
    for sub in ("images", "car_models_json", "camera"):
        for path in (data.root / sub).iterdir():
            (root / sub / path.name).write_bytes(path.read_bytes())
    write_label_mask(root / "masks" / f"{IMAGE}.png", np.where(labels > 0, labels + 1, 0))
    config = RefineConfig(threads=1, stages=((64, "analytic", 0.0, 3),), lighting="fixed")
    result = refine_image(shifted, IMAGE, cars, config)
    assert len(result.cars) == 4
    assert [c.index for c in result.cars] == [0, 1, 2, 3]
    assert result.cars[0].status == "not visible" and result.cars[0].refined == hidden
    assert result.cars[3].status == "no mask" and result.cars[3].refined == unlabelled
    assert result.cars[1].status in ("refined", "kept initial")


def test_mask_of_the_wrong_size_names_the_file(scene, tmp_path) -> None:
    data, _, _ = scene
    root = tmp_path / "bad"
    bad = DataFolder.create(root)
    for sub in ("images", "car_models_json", "camera"):
        for path in (data.root / sub).iterdir():
            (root / sub / path.name).write_bytes(path.read_bytes())
    write_label_mask(root / "masks" / f"{IMAGE}.png", np.zeros((10, 12), np.int32))
    with pytest.raises(NmrlightError, match=f"{IMAGE}.png"):
        refine_image(bad, IMAGE, list(TRUTH), FAST)


def test_reports_are_written_and_parse(scene, tmp_path) -> None:
    data, _, _ = scene
    config = RefineConfig(threads=1, stages=((64, "analytic", 0.0, 3),), gif_dir=str(tmp_path / "gifs"))
    result = refine_image(data, IMAGE, list(TRUTH), config)
    again = ImageResult.from_dict(json.loads(json.dumps(result.to_dict())))
    assert again.refined_poses() == result.refined_poses()
    out = tmp_path / "out"
    write_reports(out, [result], data, {IMAGE: list(TRUTH)})
    write_refined_csv(out / "refined.csv", [result])
    rows = list(csv.DictReader((out / "lighting.csv").open()))
    assert rows[0]["ImageId"] == IMAGE and float(rows[0]["ambient"]) > 0
    report = json.loads((out / "report.json").read_text())
    assert report["images"][0]["image_id"] == IMAGE and len(report["images"][0]["cars"]) == 2
    page = (out / "report.html").read_text()
    assert page.count("data:image/png;base64,") == 4
    assert (tmp_path / "gifs" / f"{IMAGE}_0.gif").is_file()


def test_grown_mask_dilates_and_erodes_by_pixels() -> None:
    from nmrlight.refine.window import grown_mask, signed_distance

    mask = np.zeros((40, 40), bool)
    mask[10:30, 12:28] = True
    sdf = signed_distance(mask)
    assert np.array_equal(np.clip(sdf + 0.5, 0, 1) > 0.5, mask)
    camera = Camera.from_intrinsics(50.0, 50.0, 20.0, 20.0, 40, 40)
    view = make_view(camera, Box(0, 0, 40, 40), 40, np.zeros((40, 40), np.float32), mask, None, 1, sdf=True)
    area = float(view.mask.sum())
    grown = float(grown_mask(view, torch.tensor(1.0)).sum())
    shrunk = float(grown_mask(view, torch.tensor(-1.0)).sum())
    assert abs(float(grown_mask(view, torch.tensor(0.0)).sum()) - area) < 1e-3
    assert abs(grown - 22 * 18) < 4 and abs(shrunk - 18 * 14) < 1e-3


def test_large_stage_only_for_large_windows() -> None:
    from nmrlight.refine.pose import car_stages

    config = RefineConfig(large_stage=(256, "analytic", 0.0, 10), large_stage_min_pixels=300)
    assert car_stages(config, Box(0, 0, 200, 100)) == tuple(config.stages)
    assert car_stages(config, Box(0, 0, 400, 100))[-1] == (256, "analytic", 0.0, 10)
