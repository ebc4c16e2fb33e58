"""Coarse segmenter masks (nmrlight.refine.coarse): the truncation band beyond the mask's box, which
masks count as coarse, and that the band undoes the depth bias of a mask cut short at its box."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from nmrlight.camera import Camera
from nmrlight.errors import NmrlightError
from nmrlight.io.poses import CarPose
from nmrlight.procedural import car_for_model
from nmrlight.refine.ablation import car_errors
from nmrlight.refine.coarse import is_coarse, truncation_band
from nmrlight.refine.config import RefineConfig
from nmrlight.refine.image import check_config
from nmrlight.refine.pose import CarProblem, refine_pose
from nmrlight.refine.window import crop, mask_box
from nmrlight.render import render
from nmrlight.rotations import kaggle_to_matrix, matrix_to_kaggle
from nmrlight.scene import MeshObject, Scene
from nmrlight.shade import Lighting


def test_truncation_band_is_the_strip_just_outside_each_side_of_the_mask_box():
    mask = np.zeros((50, 100), bool)
    mask[10:30, 20:60] = True          # box 40 wide, 20 high
    mask[10:15, 20:30] = False         # a notch inside the box is no band
    band = truncation_band(mask, 0.05)  # 2 px left/right (0.05 x 40), 1 px above/below (max(1, 1))
    expected = np.zeros_like(mask)
    for r in range(50):
        for c in range(100):
            in_box = 10 <= r < 30 and 20 <= c < 60
            in_grown = 9 <= r < 31 and 18 <= c < 62
            expected[r, c] = in_grown and not in_box
    assert np.array_equal(band, expected)
    assert truncation_band(mask, 0.0) is None
    assert truncation_band(np.zeros((5, 5), bool), 0.05) is None


def test_the_band_stops_at_the_crop_border():
    mask = np.zeros((20, 20), bool)
    mask[0:10, 0:20] = True            # touches the top, left and right borders
    band = truncation_band(mask, 0.1)
    assert band.sum() == 20            # only the row below the box (1 px: 0.1 x 10), full width
    assert band[10].all() and not band[11:].any()


def test_which_masks_are_coarse():
    assert is_coarse("auto", unordered_coco=True)
    assert not is_coarse("auto", unordered_coco=False)
    assert is_coarse("coarse", unordered_coco=False)
    assert not is_coarse("fine", unordered_coco=True)
    with pytest.raises(NmrlightError, match="mask quality.*'rough'"):
        check_config(RefineConfig(mask_quality="rough"))


MODEL = 17
TRUTH = CarPose(MODEL, (0.15, 0.6, math.pi), (-1.0, 1.5, 12.0))
LIGHT = Lighting(0.4, 0.6, (0.5, -0.7, -0.5))


def test_the_band_undoes_the_depth_bias_of_a_mask_cut_at_its_box():
    """A segmenter box that fell 4 % inside the car on one side cuts the mask straight there: read
    as exact, the shorter silhouette pulls the car away (depth); read as coarse, the cut side's band
    is left to the photo's edges and the car stays where it is."""
    torch.set_num_threads(1)
    camera = Camera.kaggle().scaled(0.12)
    mesh = car_for_model(MODEL).mesh
    vertices = torch.as_tensor(mesh.object_vertices(), dtype=torch.float32)
    faces = torch.as_tensor(mesh.faces, dtype=torch.long)
    rotation = torch.as_tensor(kaggle_to_matrix(np.array(TRUTH.rotation)), dtype=torch.float32)
    translation = torch.tensor(TRUTH.translation, dtype=torch.float32)
    with torch.no_grad():
        out = render(Scene([MeshObject(vertices, faces, rotation, translation, albedo=(0.7,))]), camera, LIGHT,
                     background=0.3, outputs={"image"})
    full = out.object_id.numpy() == 0
    box = mask_box(full)
    cut = full.copy()
    cut[:, box.x0:box.x0 + int(round(0.04 * box.width))] = False   # the left 4 % of the car lost
    window = box.padded(0.15, 4, camera.width, camera.height)
    start = torch.tensor([TRUTH.translation[0], TRUTH.translation[1], TRUTH.translation[2] * 1.02])
    stages = ((48, "analytic", 2.0, 10), (96, "analytic", 0.0, 20))
    config = RefineConfig(threads=1, stages=stages, large_stage=None)
    errors = {}
    for coarse in (False, True):
        problem = CarProblem(vertices, faces, rotation, start, camera, window, crop(out.image[0].numpy(), window),
                             crop(cut, window), None, coarse=coarse)
        outcome = refine_pose(problem, LIGHT, config)
        angles = matrix_to_kaggle(outcome.rotation.double().numpy(), reference=np.array(TRUTH.rotation))
        refined = CarPose(MODEL, tuple(angles), tuple(float(x) for x in outcome.translation))
        errors[coarse] = car_errors(refined, TRUTH)[1]
    assert errors[True] < 0.008, errors
    assert errors[False] > 2 * errors[True], errors
