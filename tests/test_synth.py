"""Synthetic data sets: files, masks against the render, truth round trip, error model, CLI."""

from __future__ import annotations

import csv

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from nmrlight.camera import KAGGLE_FX, Camera
from nmrlight.cli import app
from nmrlight.io.camera_file import read_intrinsics
from nmrlight.io.cars import car_name
from nmrlight.io.images import read_image
from nmrlight.io.masks import read_label_mask
from nmrlight.io.poses import CarPose, read_poses
from nmrlight.synth import (
    ErrorModel,
    SynthConfig,
    _footprint,
    _Models,
    _overlap,
    place_cars,
    synthesize,
    synthesize_image,
)

SMALL = SynthConfig(scale=0.25)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    out = tmp_path_factory.mktemp("synth")
    summary = synthesize(out, 2, seed=5, config=SMALL)
    return out, summary


def test_writes_a_complete_folder(dataset) -> None:
    out, summary = dataset
    assert summary.image_ids == ["ID_synth_000001", "ID_synth_000002"]
    truth = read_poses(out / "train.csv")
    preds = read_poses(out / "predictions.csv")
    assert list(truth) == summary.image_ids == list(preds)
    for image_id in summary.image_ids:
        image = read_image(out / "images" / f"{image_id}.jpg")
        assert image.shape == (678, 846)
        labels = read_label_mask(out / "masks" / f"{image_id}.png", image.shape)
        assert labels.max() <= len(truth[image_id])
        assert len(preds[image_id]) == len(truth[image_id])
        assert all(0.3 < c.confidence < 1 for c in preds[image_id])
    for model in summary.model_types:
        assert (out / "car_models_json" / f"{car_name(model)}.json").is_file()
    camera = read_intrinsics(out / "camera" / "camera_intrinsic.txt", 846, 678)
    assert camera.fx == pytest.approx(0.25 * KAGGLE_FX, rel=1e-6)
    with (out / "lighting.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    assert [r["ImageId"] for r in rows] == summary.image_ids
    for r in rows:
        assert 0.3 <= float(r["ambient"]) <= 0.6 and 0.3 <= float(r["directional"]) <= 0.7
        d = np.array([float(r[k]) for k in ("dx", "dy", "dz")])
        assert np.linalg.norm(d) == pytest.approx(1.0) and d[1] < 0


def test_truth_and_masks_match_the_render(dataset) -> None:
    """Regenerating a picture gives the written truth, and the mask labels exactly the visible cars."""
    out, summary = dataset
    truth = read_poses(out / "train.csv")
    models = _Models()
    for index, image_id in enumerate(summary.image_ids):
        item = synthesize_image(index, 5, SMALL, models)
        assert len(item.cars) == len(truth[image_id]) >= 1
        for a, b in zip(item.cars, truth[image_id], strict=True):
            assert a.model_type == b.model_type
            np.testing.assert_allclose(a.rotation, b.rotation, rtol=0, atol=1e-12)
            np.testing.assert_allclose(a.translation, b.translation, rtol=0, atol=1e-12)
        written = read_label_mask(out / "masks" / f"{image_id}.png")
        np.testing.assert_array_equal(written, item.labels)
        visible = np.unique(item.object_id[item.object_id >= 0]) + 1
        present = np.unique(written[written > 0])
        assert set(present) <= set(visible)
        ious = []
        for k in visible:
            region = item.object_id == k - 1
            label = written == k
            ious.append((region & label).sum() / (region | label).sum())
            if region.sum() >= 400:
                assert ious[-1] > 0.6, (image_id, k, ious[-1])
        assert np.mean(ious) > 0.6
        exact = synthesize_image(index, 5, SynthConfig(scale=0.25, mask_errors=False), models)
        expected = np.where(exact.object_id >= 0, exact.object_id + 1, 0)
        np.testing.assert_array_equal(exact.labels, expected)


def test_deterministic_rgb() -> None:
    config = SynthConfig(scale=0.125, rgb=True)
    a = synthesize_image(3, 9, config)
    b = synthesize_image(3, 9, config)
    assert a.image.shape == (339, 423, 3)
    np.testing.assert_array_equal(a.image, b.image)
    assert a.image.std() > 0.05


def test_placement_is_plausible() -> None:
    models = _Models()
    config = SynthConfig(scale=0.25)
    camera = config.camera()
    sizes = models.sizes(config.model_types)
    rng = np.random.default_rng(0)
    count = 0
    for _ in range(30):
        cars = place_cars(rng, camera, config, sizes, pitch=0.15, cam_h=1.55, ego=0.0)
        assert 1 <= len(cars) <= 20
        count += len(cars)
        rx = np.array([[1, 0, 0], [0, np.cos(0.15), -np.sin(0.15)], [0, np.sin(0.15), np.cos(0.15)]])
        prints = []
        for car in cars:
            t = np.array(car.translation)
            uv, ok = camera.project(torch.tensor(t[None]))
            assert bool(ok[0]) and 0 <= uv[0, 0] < camera.width and 0 <= uv[0, 1] < camera.height
            assert 0.1 < car.rotation[0] < 0.3 and abs(abs(car.rotation[2]) - np.pi) < 0.1
            world = rx @ t                            # back to the level frame
            length, width, height = sizes[car.model_type]
            assert world[1] + height / 2 == pytest.approx(1.55, abs=1e-9)     # wheels on the road
            prints.append(_footprint(world[0], world[2], car.rotation[1], length, width))
        for i in range(len(prints)):
            for j in range(i):
                assert not _overlap(prints[i], prints[j])
    assert 6 < count / 30 < 14


def _fake_cars(n: int, rng: np.random.Generator) -> list[CarPose]:
    return [CarPose(17, (0.15, rng.uniform(-3, 3), 3.1), (rng.uniform(-10, 10), rng.uniform(1, 8),
                                                         rng.uniform(8, 100))) for _ in range(n)]


def test_error_model_statistics() -> None:
    rng = np.random.default_rng(1)
    cars = _fake_cars(6000, rng)
    model = ErrorModel(outlier_rate=0.0)
    preds, source = model.perturb(cars, np.random.default_rng(2))
    assert source == list(range(6000))
    t = np.array([c.translation for c in cars])
    p = np.array([c.translation for c in preds])
    dist = np.linalg.norm(t, axis=1)
    ray = t / dist[:, None]
    along = (p * ray).sum(1) / dist - 1
    across = np.linalg.norm(p - (p * ray).sum(1)[:, None] * ray, axis=1) / dist
    assert along.std() == pytest.approx(0.04, rel=0.1)
    assert np.sqrt((across ** 2).mean() / 2) == pytest.approx(0.01 * 1.04, rel=0.1)
    da = np.degrees(np.array([c.rotation for c in preds]) - np.array([c.rotation for c in cars]))
    da = (da + 180) % 360 - 180
    assert da[:, 1].std() == pytest.approx(4.0, rel=0.1)
    assert da[:, 0].std() == pytest.approx(1.5, rel=0.1)
    assert da[:, 2].std() == pytest.approx(1.5, rel=0.1)
    conf = np.array([c.confidence for c in preds])
    assert conf.min() > 0.3 and conf.max() < 1
    ranks = lambda x: np.argsort(np.argsort(x))  # noqa: E731
    assert np.corrcoef(ranks(conf), ranks(np.abs(along)))[0, 1] < -0.2
    # misses drop cars (order kept), false positives come last with source -1
    preds, source = ErrorModel(miss_rate=0.25, false_positives=2.0).perturb(cars[:2000], np.random.default_rng(3))
    kept = [s for s in source if s >= 0]
    assert 0.7 < len(kept) / 2000 < 0.8
    assert kept == sorted(kept) and 0 < source.count(-1) <= 10


def test_a_flip_does_not_show_in_the_detectors_confidence() -> None:
    """The confidence drops with the pose's spread and the distance, not with whether the heading was
    mirrored: flipped and correct headings' confidences overlap (a real detector does not say which
    cars it flipped), while a larger depth error still lowers it."""
    cars = _fake_cars(4000, np.random.default_rng(6))
    preds, _ = ErrorModel(flip_rate=0.3, outlier_rate=0.0).perturb(cars, np.random.default_rng(7))
    turn = np.abs(np.array([p.rotation[1] - c.rotation[1] for p, c in zip(preds, cars, strict=True)]))
    flipped = np.abs((turn + np.pi) % (2 * np.pi) - np.pi) > np.pi / 2
    conf = np.array([p.confidence for p in preds])
    assert 0.25 < flipped.mean() < 0.35
    # the chance that a flipped car outranks a correct one (the AUC) is about one half
    ranks = np.argsort(np.argsort(conf)) + 1
    auc = (ranks[flipped].sum() - flipped.sum() * (flipped.sum() + 1) / 2) / (flipped.sum() * (~flipped).sum())
    assert 0.45 < auc < 0.55
    assert (conf[flipped] < 0.31).mean() < 0.05
    t = np.array([c.translation for c in cars])
    p = np.array([c.translation for c in preds])
    depth_error = np.abs(np.linalg.norm(p, axis=1) / np.linalg.norm(t, axis=1) - 1)
    rank = lambda x: np.argsort(np.argsort(x))  # noqa: E731
    assert np.corrcoef(rank(conf), rank(depth_error))[0, 1] < -0.2


def test_depth_error_keeps_the_projection() -> None:
    cars = _fake_cars(500, np.random.default_rng(4))
    model = ErrorModel(lateral_sigma=0.0, pixel_sigma=0.0, heading_sigma_deg=0, pitch_sigma_deg=0,
                       roll_sigma_deg=0)
    preds, _ = model.perturb(cars, np.random.default_rng(5))
    camera = Camera.kaggle()
    a, _ = camera.project(torch.tensor([c.translation for c in cars], dtype=torch.float64))
    b, _ = camera.project(torch.tensor([c.translation for c in preds], dtype=torch.float64))
    assert float((a - b).abs().max()) < 1e-3


def test_cli_synth_and_render(tmp_path) -> None:
    runner = CliRunner()
    out = tmp_path / "data"
    result = runner.invoke(app, ["synth", str(out), "--images", "1", "--seed", "2", "--scale", "0.2",
                                 "--models", "17,50", "--rgb"])
    assert result.exit_code == 0, result.output
    assert len(list((out / "images").glob("*.jpg"))) == 1
    for name in ("predictions_submission.csv", "coco/instances.json", "coco/results.json", "coco/truth.json"):
        assert (out / name).is_file()
    assert read_image(next((out / "images").glob("*.jpg")), "rgb").shape == (542, 677, 3)
    truth = read_poses(out / "train.csv")
    (image_id, cars), = truth.items()
    good = " ".join(f"{c.model_type} {' '.join(map(str, c.rotation))} {' '.join(map(str, c.translation))}"
                    for c in cars)
    poses = tmp_path / "poses.csv"
    poses.write_text("ImageId,PredictionString\n"
                     f"{image_id},{good}\n"
                     "ID_broken,17 0.1 0.2\n"
                     "ID_missing_mesh,0 0.15 0 3.14 0 2 20\n")
    rendered = tmp_path / "rendered"
    result = runner.invoke(app, ["render", str(out), "--poses", str(poses), "--out", str(rendered)])
    assert result.exit_code == 1
    assert "ID_broken" in result.output and "ID_missing_mesh" in result.output
    image = read_image(rendered / f"{image_id}.png")
    labels = read_label_mask(rendered / f"{image_id}_mask.png")
    assert image.shape == labels.shape == (542, 677)           # the data folder's image size
    assert labels.max() >= 1 and image[labels > 0].mean() > image[labels == 0].mean()
    assert not (rendered / "ID_broken.png").exists()
    # the synthetic exact object ids agree with the independent render command
    item = synthesize_image(0, 2, SynthConfig(scale=0.2, rgb=True, model_types=(17, 50), mask_errors=False))
    agree = (item.labels == labels).mean()
    assert agree > 0.995
