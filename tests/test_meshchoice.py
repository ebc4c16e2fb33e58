"""Mesh choice for cars without a model id: the typical mesh, the silhouette shortlist on rendered cars
of each kind (hatchback, sedan, SUV, van) under the detector's errors, and the pick by final loss."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from nmrlight.camera import Camera
from nmrlight.io.dataset import DataFolder
from nmrlight.procedural import car_for_model, write_models
from nmrlight.refine.meshchoice import pick, screen, shortlist, typical_model
from nmrlight.refine.prepare import mesh_tensors
from nmrlight.refine.window import Box
from nmrlight.render import render
from nmrlight.rotations import kaggle_to_matrix
from nmrlight.scene import MeshObject, Scene

MODELS = [2, 17, 50, 61]   # hatchback, sedan, SUV, van (nmrlight.procedural.kind_for_model)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("meshes")
    write_models(root, MODELS)
    return DataFolder(root)


def test_typical_mesh_is_the_one_nearest_the_median_size(data):
    sizes = {m: np.ptp(car_for_model(m).mesh.object_vertices(), axis=0) for m in MODELS}
    median = np.median(np.array(list(sizes.values())), axis=0)
    expected = min(MODELS, key=lambda m: float(np.abs(np.log(sizes[m] / median)).sum()))
    assert data.model_ids() == MODELS
    assert typical_model(data, MODELS) == expected


def test_pick_takes_the_lowest_final_loss_and_reports_runner_up_and_margin():
    choice = pick({17: 0.25, 2: 0.2, 50: 0.4}, [(17, 0.9), (2, 0.8), (50, 0.7)])
    assert (choice.chosen, choice.runner_up) == (2, 17) and choice.margin == pytest.approx(0.05)
    d = choice.to_dict()
    assert d["losses"] == {"17": 0.25, "2": 0.2, "50": 0.4} and d["shortlist"][0] == [17, 0.9]
    alone = pick({17: 0.3}, [(17, 0.9)])
    assert alone.runner_up is None and alone.margin is None


def test_screen_keeps_the_lowest_coarse_losses_and_skips_short_lists():
    losses = {2: 0.4, 17: 0.1, 50: 0.3, 61: 0.2}
    asked = []

    def coarse(model):
        asked.append(model)
        return losses[model]

    kept, seen = screen([2, 17, 50, 61], coarse, keep=2)
    assert kept == [17, 61] and seen == losses and sorted(asked) == sorted(losses)
    asked.clear()
    kept, seen = screen([50, 2], coarse, keep=2)        # nothing to screen: order kept, nothing rendered
    assert kept == [50, 2] and seen == {} and asked == []
    assert pick({17: 0.2, 61: 0.3}, [(2, 0.9)], seen).to_dict()["screened"] == {}


@pytest.mark.parametrize("truth", MODELS)
@pytest.mark.parametrize("depth, heading_deg", [(1.0, 0.0), (1.06, 4.0), (0.95, -3.0), (0.88, 2.0), (1.13, -2.0)])
def test_shortlist_puts_the_true_kind_first(data, truth, depth, heading_deg):
    camera = Camera.kaggle().scaled(0.25)
    rotation = torch.as_tensor(kaggle_to_matrix(np.array([0.15, 0.7, math.pi])), dtype=torch.float32)
    translation = torch.tensor([-2.0, 1.6, 15.0])
    vertices, faces = mesh_tensors(data, truth)
    with torch.no_grad():
        ids = render(Scene([MeshObject(vertices, faces, rotation, translation)]), camera, None, edges="none",
                     outputs=set()).object_id.numpy()
    mask = ids == 0
    rows, cols = np.nonzero(mask)
    window = Box(int(cols.min()) - 20, int(rows.min()) - 20, int(cols.max()) + 21, int(rows.max()) + 21)
    crop = mask[window.y0:window.y1, window.x0:window.x1]
    start = torch.as_tensor(kaggle_to_matrix(np.array([0.15, 0.7 + math.radians(heading_deg), math.pi])),
                            dtype=torch.float32)
    best = shortlist(lambda m: mesh_tensors(data, m), MODELS, start, translation * depth, camera, window, crop,
                     None, [], size=64, keep=3)
    assert len(best) == 3 and best[0][0] == truth, best
    assert best[0][1] > best[1][1] >= best[2][1]
