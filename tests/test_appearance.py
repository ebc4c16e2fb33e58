"""The flip review (refine/appearance.py): a mesh's face layout learned from well-posed cars of other
photographs decides which of two tied headings a car shows, on rendered photographs whose cars carry a
material layout that differs front to back (bright head lamps, dark tail lamps, dark glass and tyres)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from nmrlight.camera import Camera
from nmrlight.io.poses import CarPose
from nmrlight.procedural import BODY, LIGHT, WHEEL, WINDOW, make_car
from nmrlight.refine.appearance import learn_layouts, review_flip_ties
from nmrlight.refine.config import RefineConfig
from nmrlight.refine.hypotheses import heading_turn
from nmrlight.refine.result import CarResult, ImageResult, LightingResult
from nmrlight.render import render
from nmrlight.rotations import kaggle_to_matrix, matrix_to_kaggle
from nmrlight.scene import MeshObject, Scene
from nmrlight.shade import Lighting

MODEL = 7
VOTERS = 3          # the test photographs' voters; the review's minimum is lowered to them
LIGHT_PARAMETERS = (0.45, 0.55, (0.3, -0.8, -0.5))


class _Folder:
    """What the review reads of a data folder: the camera, the photographs, their label masks, the mesh."""

    def __init__(self, camera: Camera, mesh) -> None:
        self._camera, self._mesh = camera, mesh
        self.images: dict[str, np.ndarray] = {}
        self.labels: dict[str, np.ndarray] = {}

    def camera(self) -> Camera:
        return self._camera

    def read_image(self, image_id: str) -> np.ndarray:
        return self.images[image_id]

    def read_mask(self, image_id: str, shape=None) -> np.ndarray:
        return self.labels[image_id]

    def car(self, model: int):
        assert model == MODEL
        return self._mesh


def _albedo(car, paint: float) -> torch.Tensor:
    """Per-face albedo: paint, dark glass and tyres, lamps bright at the front (+z) and dark at the back."""
    table = np.array([paint, 0.07, 0.04, 0.0])
    albedo = table[car.materials]
    centre_z = car.mesh.object_vertices()[car.mesh.faces].mean(1)[:, 2]
    lamps = car.materials == LIGHT
    albedo[lamps & (centre_z > 0)] = 0.95
    albedo[lamps & (centre_z <= 0)] = 0.2
    return torch.tensor(albedo, dtype=torch.float32)[:, None]


def _turned(pose: CarPose, degrees: float) -> CarPose:
    matrix = kaggle_to_matrix(torch.tensor(pose.rotation, dtype=torch.float64)) @ heading_turn(degrees).double()
    angles = matrix_to_kaggle(matrix)
    return CarPose(pose.model_type, tuple(float(a) for a in angles), pose.translation, pose.confidence)


def _photograph(folder: _Folder, car, image_id: str, poses: list[CarPose], paints: list[float]) -> None:
    mesh = car.mesh
    objects = [MeshObject(torch.tensor(mesh.object_vertices(), dtype=torch.float32), torch.tensor(mesh.faces),
                          rotation=kaggle_to_matrix(torch.tensor(p.rotation, dtype=torch.float64)).float(),
                          translation=torch.tensor(p.translation, dtype=torch.float32), albedo=_albedo(car, paint))
               for p, paint in zip(poses, paints, strict=True)]
    ambient, directional, direction = LIGHT_PARAMETERS
    out = render(Scene(objects), folder.camera(), Lighting(ambient, directional, direction), edges="none",
                 outputs={"image"}, background=0.3)
    folder.images[image_id] = out.image[0].numpy().astype(np.float64)
    folder.labels[image_id] = (out.object_id + 1).numpy().astype(np.int64)


def _result(image_id: str, cars: list[CarResult]) -> ImageResult:
    ambient, directional, direction = LIGHT_PARAMETERS
    return ImageResult(image_id, cars, LightingResult(ambient, directional, direction))


def _summary(pose: CarPose, loss: float) -> dict:
    return {"rotation": list(pose.rotation), "translation": list(pose.translation), "iou_after": 0.93,
            "loss_after": loss, "improved": True}


@pytest.fixture(scope="module")
def scene():
    """A photograph of three well-fitted cars (the voters), and one of two cars whose headings tied: the
    first was left flipped (its true heading the detector's), the second at its true heading."""
    car = make_car("sedan", seed=3)
    folder = _Folder(Camera.kaggle().scaled(0.25), car.mesh)
    # kaggle angles (pitch, yaw, roll): yaw turns the car about the camera's vertical
    voters = [CarPose(MODEL, (0.0, yaw, -math.pi), (x, 1.5, 14.0)) for yaw, x in
              ((-0.5, -4.5), (2.6, 0.0), (1.3, 4.5))]
    _photograph(folder, car, "voters", voters, [0.5, 0.7, 0.85])
    truth = [CarPose(MODEL, (0.0, yaw, -math.pi), (x, 1.5, 13.0)) for yaw, x in ((0.25, -2.5), (2.9, 2.5))]
    _photograph(folder, car, "ties", truth, [0.6, 0.75])
    voter_results = [CarResult(k, p, p, iou_after=0.96, loss_after=0.1) for k, p in enumerate(voters)]
    flipped = _turned(truth[0], 180.0)
    # the global stage's records of both headings' refinements under the prior; the held pose's own loss
    # (after a polish without the prior) is lower and plays no part
    tied = [CarResult(0, truth[0], flipped, iou_after=0.95, loss_after=0.090,
                      extra={"global": {"flipped": True, "detector_start": _summary(truth[0], 0.105),
                                        "flip_start": _summary(flipped, 0.100)}}),
            CarResult(1, truth[1], truth[1], iou_after=0.95, loss_after=0.090,
                      extra={"global": {"flipped": False, "detector_start": _summary(truth[1], 0.100),
                                        "flip_start": _summary(_turned(truth[1], 180.0), 0.104)}})]
    return folder, voter_results, tied, truth


def test_the_learned_layout_tells_front_from_back(scene):
    folder, voters, tied, truth = scene
    layouts = learn_layouts([], tie=0.03)
    assert layouts == {}
    from nmrlight.refine.appearance import _Photo

    photo = _Photo(folder, _result("voters", voters))
    layout, votes = learn_layouts([photo], tie=0.03)[MODEL]
    assert votes == 3
    seen = ~np.isnan(layout)
    materials = make_car("sedan", seed=3).materials
    # relative to paint (about 1): glass and tyres dark, wherever the cars showed them
    assert np.nanmedian(layout[seen & (materials == BODY)]) == pytest.approx(1.0, abs=0.15)
    assert np.nanmedian(layout[seen & (materials == WINDOW)]) < 0.3
    assert np.nanmedian(layout[seen & (materials == WHEEL)]) < 0.3


def test_a_tie_takes_the_heading_the_layout_fits(scene):
    folder, voters, tied, truth = scene
    import copy

    tied = copy.deepcopy(tied)
    log: list[str] = []
    review = review_flip_ties([(folder, _result("voters", copy.deepcopy(voters))), (folder, _result("ties", tied))],
                              RefineConfig(appearance_min_voters=VOTERS), log=log.append)
    assert review.learned == {MODEL: 3} and review.ties == review.judged == 2 and review.switched == 1
    wrong, right = tied
    assert wrong.refined.rotation == pytest.approx(truth[0].rotation)      # put back to its true heading
    assert wrong.extra["appearance"]["switched"] and not wrong.extra["global"]["flipped"]
    assert wrong.loss_after == pytest.approx(0.105) and wrong.iou_after == pytest.approx(0.93)
    first, second = wrong.extra["appearance"]["residuals"]
    assert second < 0.9 * first
    assert right.refined.rotation == pytest.approx(truth[1].rotation)      # kept
    a, b = right.extra["appearance"]["residuals"]
    assert a < 0.9 * b and not right.extra["appearance"]["switched"]
    assert any("car 0 takes its other heading" in line for line in log)
    # judged once: a second review (a resumed run) changes nothing
    again = review_flip_ties([(folder, _result("voters", copy.deepcopy(voters))), (folder, _result("ties", tied))],
                             RefineConfig(appearance_min_voters=VOTERS))
    assert again.judged == 0 and wrong.refined.rotation == pytest.approx(truth[0].rotation)


def test_no_voters_too_few_voters_or_no_tie_changes_nothing(scene):
    folder, voters, tied, truth = scene
    import copy

    alone = copy.deepcopy(tied)
    review = review_flip_ties([(folder, _result("ties", alone))], RefineConfig(appearance_min_voters=VOTERS))
    assert review.judged == 0 and alone[0].refined.rotation == pytest.approx(tied[0].refined.rotation)
    assert alone[0].extra["appearance"]["residuals"] is None
    apart = copy.deepcopy(tied)
    review = review_flip_ties([(folder, _result("voters", copy.deepcopy(voters))), (folder, _result("ties", apart))],
                              # the losses differ by 0.005 and 0.004: no tie
                              RefineConfig(appearance_tie=0.0035, appearance_min_voters=VOTERS))
    assert review.judged == 0 and "appearance" not in apart[0].extra
    few = copy.deepcopy(tied)   # a layout of 3 cars where 4 are asked for: recorded, not judged
    review = review_flip_ties([(folder, _result("voters", copy.deepcopy(voters))), (folder, _result("ties", few))],
                              RefineConfig(appearance_min_voters=VOTERS + 1))
    assert review.learned == {MODEL: VOTERS} and review.ties == 2 and review.judged == 0 and review.switched == 0
    assert few[0].extra["appearance"] == {"tie": 0.005, "voters": VOTERS, "residuals": None, "switched": False}
    assert few[0].refined.rotation == pytest.approx(tied[0].refined.rotation)


def test_the_run_saves_what_the_review_changed(scene, tmp_path):
    """run_refine's last step: the judged photographs are written again (a resumed run finds them judged),
    the others are left as they were."""
    import copy

    from nmrlight.refine.outdir import load_result, result_path
    from nmrlight.refine.runner import _review_flips

    folder, voters, tied, truth = scene
    (tmp_path / "images").mkdir()
    results = {"voters": _result("voters", copy.deepcopy(voters)), "ties": _result("ties", copy.deepcopy(tied))}
    log: list[str] = []
    _review_flips(folder, results, RefineConfig(appearance_min_voters=VOTERS), tmp_path, log.append)
    assert not result_path(tmp_path, "voters").exists()
    saved = load_result(tmp_path, "ties")
    assert saved is not None and saved.cars[0].extra["appearance"]["switched"]
    assert saved.cars[0].refined.rotation == pytest.approx(truth[0].rotation)
    assert any("2 tied cars, 2 judged by the layouts of 1 meshes (1 with the 3 voters a judgment needs), "
               "1 switched" in line for line in log)


def test_a_switch_must_fit_its_mask_as_the_global_stage_asks(scene):
    """The layout prefers the true heading, but its refined pose ended below the global stage's IoU bar for
    a switch (0.75; 0.85 for a car under half visible): the car keeps its heading."""
    import copy

    folder, voters, tied, truth = scene
    for iou, visible in ((0.7, 0.9), (0.8, 0.4)):
        poor = copy.deepcopy(tied)
        poor[0].extra["global"]["detector_start"]["iou_after"] = iou
        poor[0].extra["visible_fraction"] = visible
        review = review_flip_ties([(folder, _result("voters", copy.deepcopy(voters))), (folder, _result("ties", poor))],
                                  RefineConfig(appearance_min_voters=VOTERS))
        assert review.judged == 2 and review.switched == 0
        assert poor[0].refined.rotation == pytest.approx(tied[0].refined.rotation)


def test_the_outlines_evidence_adds_to_the_layouts(scene):
    """The bar the layout's gain must clear rises with how much worse the other heading's outline fit
    ended (`appearance_gap_weight` x the loss gap) and falls when it fit better. Here the layout's gain
    is 0.98: at a bar of 0.95 + 10 x gap, a gap of +0.005 refuses the switch and one of -0.005 takes it."""
    import copy

    folder, voters, tied, truth = scene
    config = RefineConfig(appearance_switch=0.95, appearance_gap_weight=10.0, appearance_min_voters=VOTERS)
    for other_loss, switched in ((0.105, False), (0.095, True)):
        cars = copy.deepcopy(tied)
        cars[0].extra["global"]["detector_start"]["loss_after"] = other_loss   # held: the flip, at 0.100
        review = review_flip_ties([(folder, _result("voters", copy.deepcopy(voters))), (folder, _result("ties", cars))],
                                  config)
        a, b = cars[0].extra["appearance"]["residuals"]
        assert 0.95 < (a - b) / a < 1.0
        assert review.switched == int(switched) and cars[0].extra["appearance"]["switched"] == switched
        assert (cars[0].refined.rotation == pytest.approx(truth[0].rotation)) == switched
