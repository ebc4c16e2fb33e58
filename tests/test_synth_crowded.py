"""The crowded preset: 20-44 cars in rows and queues, and each car's visible fraction (visibility.csv)."""

from __future__ import annotations

import numpy as np
import pytest

from nmrlight.errors import NmrlightError
from nmrlight.io.poses import read_poses
from nmrlight.synth import _Models, synthesize, synthesize_image
from nmrlight.synth.config import KAGGLE_MODELS
from nmrlight.synth.presets import preset
from nmrlight.synth.street import crowded_cars, sample_road
from nmrlight.synth.visibility import band, read_visibility

CONFIG, ERRORS = preset("crowded", scale=0.15)


def test_crowded_layouts_have_20_to_44_cars_in_rows() -> None:
    models = _Models()
    sizes = models.sizes(KAGGLE_MODELS)
    rng = np.random.default_rng(3)
    camera = CONFIG.camera()
    counts, neighbours = [], []
    for _ in range(20):
        road = sample_road(rng, CONFIG.pitch, CONFIG.roll, CONFIG.camera_height)
        cars = crowded_cars(rng, camera, road, sizes, KAGGLE_MODELS)
        counts.append(len(cars))
        world = np.array([road.rotation.T @ np.array(c.translation) for c in cars])
        # rows and queues: most cars have a neighbour nose to tail (same x within 1 m, 3.5-9 m along z)
        dx = np.abs(world[:, None, 0] - world[None, :, 0])
        dz = np.abs(world[:, None, 2] - world[None, :, 2])
        neighbours.append(((dx < 1.0) & (dz > 3.5) & (dz < 9.0)).any(1).mean())
    assert min(counts) >= 20 and max(counts) <= 44 and np.mean(counts) > 25
    assert np.mean(neighbours) > 0.5


def test_crowded_folder_records_visible_fractions(tmp_path) -> None:
    summary = synthesize(tmp_path, 1, 4, CONFIG, ERRORS)
    truth = read_poses(tmp_path / "train.csv")
    fractions = read_visibility(tmp_path / "visibility.csv")
    (image_id,) = summary.image_ids
    assert len(fractions[image_id]) == len(truth[image_id]) >= 20
    item = synthesize_image(0, 4, CONFIG)
    np.testing.assert_allclose(fractions[image_id], item.visible_fraction, atol=1e-4)
    # visible pixels are the car's pixels in the picture, never more than it has alone
    for k in range(len(item.cars)):
        assert item.visible_pixels[k] == (item.object_id == k).sum() <= item.full_pixels[k]
    bands = {band(f) for f in fractions[image_id]}
    assert bands == {"<30%", "30-70%", ">70%"}
    # the nearest car is in front of all others: it is seen whole (unless cut by the image border)
    nearest = int(np.argmin([c.translation[2] for c in item.cars]))
    assert item.visible_fraction[nearest] == pytest.approx(1.0)


def test_visibility_bands_and_bad_files(tmp_path) -> None:
    assert [band(f) for f in (0.0, 0.29, 0.3, 0.69, 0.7, 1.0)] == ["<30%", "<30%", "30-70%", "30-70%", ">70%", ">70%"]
    with pytest.raises(NmrlightError, match="must lie in"):
        band(1.5)
    bad = tmp_path / "visibility.csv"
    bad.write_text("ImageId,car_index,visible_fraction\nA,0,0.5\nA,2,0.1\n")
    with pytest.raises(NmrlightError, match="car_index 2 out of order"):
        read_visibility(bad)
    bad.write_text("ImageId,car_index\nA,0\n")
    with pytest.raises(NmrlightError, match="missing columns"):
        read_visibility(bad)
    with pytest.raises(NmrlightError, match="file not found"):
        read_visibility(tmp_path / "none.csv")
