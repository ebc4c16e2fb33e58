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
from nmrlight.refine.coarse import is_coarse, truncation_band
from nmrlight.refine.config import RefineConfig
from nmrlight.refine.image import check_config
from nmrlight.refine.pose import CarProblem
from nmrlight.refine.window import crop, mask_box
from nmrlight.render import render
from nmrlight.rotations import kaggle_to_matrix
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


def _silhouette_costs(coarse: bool, factors: tuple[float, ...]) -> list[float]:
    """The silhouette term of a car whose mask a segmenter box cut 3 % short on the left and right,
    at the true pose moved along its viewing ray by each depth factor."""
    from nmrlight.refine.car_view import evaluate as _evaluate
    from nmrlight.refine.coarse import band_weights
    from nmrlight.refine.params import PoseParams
    from nmrlight.refine.window import make_view

    camera = Camera.kaggle().scaled(0.2)
    mesh = car_for_model(MODEL).mesh
    vertices = torch.as_tensor(mesh.object_vertices(), dtype=torch.float32)
    faces = torch.as_tensor(mesh.faces, dtype=torch.long)
    rotation = torch.as_tensor(kaggle_to_matrix(np.array(TRUTH.rotation)), dtype=torch.float32)
    truth = torch.tensor(TRUTH.translation, dtype=torch.float32)
    with torch.no_grad():
        out = render(Scene([MeshObject(vertices, faces, rotation, truth)]), camera, None, outputs=set())
    full = out.object_id.numpy() == 0
    box = mask_box(full)
    cut = full.copy()
    k = int(round(0.03 * box.width))
    cut[:, box.x0:box.x0 + k] = False
    cut[:, box.x1 - k:box.x1] = False
    window = box.padded(0.15, 4, camera.width, camera.height)
    mask = crop(cut, window)
    view = make_view(camera, window, 160, np.zeros(mask.shape, np.float32), mask, None, 1)
    if coarse:
        band_weights([view], mask, 0.05, 0.0)
    config = RefineConfig(losses="silhouette", weight_edges=0.0, prior_weight=0.0, fit_dilation=False)
    costs = []
    for f in factors:
        problem = CarProblem(vertices, faces, rotation, truth * f, camera, window, view.photo.numpy(), mask, None)
        params = PoseParams(rotation, truth * f, camera)
        with torch.no_grad():
            costs.append(float(_evaluate(params, problem, view, LIGHT, config, "analytic", 0.0)[0]))
    return costs


def test_the_band_lets_a_mask_cut_short_at_its_box_keep_the_true_depth():
    """Read as exact, a mask cut short at its box's sides fits a car 1.5 % farther (smaller) as well as
    the true one, or better: a depth bias. With the truncation band (coarse), the true depth fits
    clearly best."""
    factors = (0.97, 0.985, 1.0, 1.015, 1.03, 1.045)
    exact = _silhouette_costs(False, factors)
    coarse = _silhouette_costs(True, factors)
    assert factors[int(np.argmin(exact))] >= 1.0 and exact[3] < 1.02 * exact[2], exact
    assert factors[int(np.argmin(coarse))] == 1.0 and coarse[3] > 2.0 * coarse[2], coarse


def test_the_cli_names_a_bad_mask_quality(tmp_path, monkeypatch, capsys):
    import sys

    from nmrlight.cli import main

    predictions = tmp_path / "p.csv"
    predictions.write_text("ImageId,PredictionString\n")
    monkeypatch.setattr(sys, "argv", ["nmrlight", "refine", str(tmp_path), "-p", str(predictions), "--out",
                                      str(tmp_path / "out"), "--mask-quality", "rough"])
    with pytest.raises(SystemExit) as info:
        main()
    err = capsys.readouterr().err
    assert info.value.code == 2 and "--mask-quality must be auto, coarse or fine, got 'rough'" in err
    assert not (tmp_path / "out").exists()
