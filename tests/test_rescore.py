"""Confidence re-scoring: a well-fitted car ranks above a badly fitted one, and the mAP is the official one."""

from __future__ import annotations

import math

import numpy as np

from nmrlight.io.poses import CarPose
from nmrlight.metric import evaluate
from nmrlight.refine.rescore import FEATURES, features, fit, moved, rescored
from nmrlight.refine.result import CarResult

TRUTH = CarPose(16, (0.15, 0.4, math.pi), (2.0, 3.0, 30.0))


def _car(confidence: float, iou: float | None, loss: float | None, shift: float = 0.0, index: int = 0,
         visible: float | None = 0.9) -> CarResult:
    initial = CarPose(16, TRUTH.rotation, TRUTH.translation, confidence)
    refined = CarPose(16, TRUTH.rotation, (2.0, 3.0, 30.0 * (1 + shift)), confidence)
    extra = {} if visible is None or iou is None else {"visible_fraction": visible}
    return CarResult(index, initial, refined, iou_before=iou, iou_after=iou, loss_before=loss, loss_after=loss,
                     extra=extra)


def test_features_follow_the_fit() -> None:
    f = features(_car(0.5, 0.9, 0.3, shift=0.05))
    assert len(f) == len(FEATURES)
    assert f[0] == 0.0 and f[1] == 0.9 and f[2] == 1.0 and f[4] == 0.3
    assert np.isclose(f[3], 1.5 / np.linalg.norm(TRUTH.translation) / 0.05)  # translation / 5 %, no rotation
    assert f[5] == 0.9
    assert features(_car(0.5, None, None))[2] == 0.0
    assert features(_car(0.5, None, None))[5] == 0.0


def test_the_visible_fraction_is_read_from_the_result_and_capped_at_one() -> None:
    # a mask larger than the rendered car (a wrong association, a merged blob) says nothing more
    assert features(_car(0.5, 0.9, 0.3, visible=1.7))[5] == 1.0
    assert features(_car(0.5, 0.9, 0.3, visible=None))[5] == 0.0   # an old result without it


def test_a_mostly_hidden_car_ranks_below_the_same_fit_of_a_visible_one() -> None:
    # a sliver of outline pins a pose less: the same overlap and loss count for less
    assert rescored(_car(0.6, 0.9, 0.25, visible=0.2)) < rescored(_car(0.6, 0.9, 0.25, visible=0.9))


def test_moved_counts_rotation_in_tens_of_degrees() -> None:
    car = _car(0.5, 0.9, 0.3)
    car.refined = CarPose(16, (0.15, 0.4 + math.radians(20.0), math.pi), TRUTH.translation, 0.5)
    assert np.isclose(moved(car), 2.0, atol=1e-6)


def test_a_well_fitted_car_ranks_above_a_badly_fitted_one() -> None:
    good, bad = _car(0.6, 0.92, 0.25), _car(0.6, 0.55, 0.9, shift=0.15)
    assert rescored(good) > rescored(bad)
    # ... even when the detector was more confident of the bad one
    assert rescored(good) > rescored(_car(0.8, 0.55, 0.9, shift=0.15))
    # a car without a mask ranks below the same detection with a good fit
    assert rescored(_car(0.6, None, None)) < rescored(good)


def test_rescored_map_beats_the_detectors_ranking_with_the_official_metric() -> None:
    """Two images: a well-fitted true car and a badly placed one (8 % off) that the detector scored
    higher (0.75 against 0.5: the fitted model weighs the detector's confidence strongly, 1.7 a unit of
    logit, so a 0.9 detection with this poor fit would still come first). Ranked by the detector, the
    bad one comes first at the loose thresholds; re-scored, the good one does, and the official
    metric's mAP goes up."""
    gt = {"a": [TRUTH], "b": [TRUTH]}
    good, bad = _car(0.5, 0.93, 0.2, index=0), _car(0.75, 0.5, 1.0, shift=0.08, index=0)
    detector = {"a": [good.refined], "b": [bad.refined]}
    rescored_poses = {"a": [CarPose(16, good.refined.rotation, good.refined.translation, rescored(good))],
                      "b": [CarPose(16, bad.refined.rotation, bad.refined.translation, rescored(bad))]}
    assert evaluate(gt, rescored_poses).map > evaluate(gt, detector).map


def test_fit_recovers_the_sign_of_the_evidence() -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(400, 2))
    y = (x[:, 0] - 0.5 * x[:, 1] + 0.3 * rng.normal(size=400) > 0).astype(int)
    coefficients, _ = fit(x, y)
    assert coefficients[0] > 0 > coefficients[1]


def test_the_fit_reads_an_output_folder_and_a_benchmark_pickle_alike(tmp_path) -> None:
    import json
    import pickle

    from nmrlight.refine.rescore import _results
    from nmrlight.refine.result import ImageResult

    result = ImageResult("ID_1", [_car(0.6, 0.9, 0.25, visible=0.4)])
    (tmp_path / "out" / "images").mkdir(parents=True)
    (tmp_path / "out" / "images" / "ID_1.json").write_text(json.dumps(result.to_dict()))
    with open(tmp_path / "run.pkl", "wb") as f:
        pickle.dump({"config": None, "results": {"ID_1": (result, 1.0)}}, f)
    for run in (tmp_path / "out", tmp_path / "run.pkl"):
        (read,) = _results(run)
        assert read.image_id == "ID_1" and features(read.cars[0])[5] == 0.4
        assert rescored(read.cars[0]) == rescored(result.cars[0])


def test_without_a_pairing_the_labels_are_the_metrics_true_positives(tmp_path) -> None:
    """Real data: DATA holds only train.csv. A car refined onto the truth is a positive at every
    threshold; a second, less confident prediction of the same car (4.5 % off) is a false positive at
    every one (the metric's matching: the car is taken); a prediction where there is no car at none."""
    import json

    import pytest

    from nmrlight.io.poses import write_poses
    from nmrlight.refine.rescore import _training_set, main
    from nmrlight.refine.result import ImageResult

    (tmp_path / "data").mkdir()
    write_poses(tmp_path / "data" / "train.csv", {"ID_1": [TRUTH]}, confidence=False)
    exact = _car(0.6, 0.9, 0.25)
    exact.refined = CarPose(16, TRUTH.rotation, TRUTH.translation, 0.6)
    off = _car(0.5, 0.9, 0.25)
    off.refined = CarPose(16, TRUTH.rotation, (2.0 + 0.045 * float(np.linalg.norm(TRUTH.translation)), 3.0, 30.0), 0.5)
    stray = _car(0.4, None, None)
    stray.refined = CarPose(16, TRUTH.rotation, (-20.0, 3.0, 60.0), 0.4)
    (tmp_path / "out" / "images").mkdir(parents=True)
    (tmp_path / "out" / "images" / "ID_1.json").write_text(
        json.dumps(ImageResult("ID_1", [exact, off, stray]).to_dict()))
    x, y = _training_set(tmp_path / "data", tmp_path / "out")
    assert x.shape == (30, len(FEATURES))
    assert y[:10].tolist() == [1] * 10          # the more confident takes the car
    assert y[10:20].tolist() == [0] * 10        # ... so the other is a false positive everywhere
    assert y[20:].tolist() == [0] * 10
    # an image the truth does not have is named, not a traceback
    write_poses(tmp_path / "data" / "train.csv", {"ID_2": [TRUTH]}, confidence=False)
    with pytest.raises(SystemExit, match="ID_1"):
        main([str(tmp_path / "data"), str(tmp_path / "out")])
    with pytest.raises(SystemExit, match="no refinement results"):
        main([str(tmp_path / "data"), str(tmp_path / "data")])


def test_the_training_set_pairs_a_submission_ordered_run_by_each_cars_initial_pose(tmp_path) -> None:
    """A run made from the submission file holds its cars in that file's order, not predictions.csv's: the
    labels come from the true car of the prediction each car started from, not from its row number."""
    import json

    from nmrlight.io.poses import write_poses
    from nmrlight.refine.rescore import _training_set
    from nmrlight.refine.result import ImageResult

    far = CarPose(16, TRUTH.rotation, (-6.0, 3.0, 40.0))
    data = tmp_path / "data"
    (data / "coco").mkdir(parents=True)
    write_poses(data / "train.csv", {"ID_1": [TRUTH, far]}, confidence=False)
    near_start = CarPose(16, TRUTH.rotation, (2.0, 3.0, 31.0), 0.6)
    far_start = CarPose(16, far.rotation, (-6.0, 3.0, 43.0), 0.5)
    write_poses(data / "predictions.csv", {"ID_1": [near_start, far_start]})
    (data / "coco" / "truth.json").write_text(json.dumps({"images": {"ID_1": {"prediction_truth": [0, 1]}}}))
    # the run's order is the other way round; each car refined onto its own true pose
    cars = [CarResult(0, far_start, CarPose(16, far.rotation, far.translation, 0.5), iou_after=0.9, loss_after=0.2),
            CarResult(1, near_start, CarPose(16, TRUTH.rotation, TRUTH.translation, 0.6), iou_after=0.9,
                      loss_after=0.2)]
    (tmp_path / "out" / "images").mkdir(parents=True)
    (tmp_path / "out" / "images" / "ID_1.json").write_text(json.dumps(ImageResult("ID_1", cars).to_dict()))
    x, y = _training_set(data, tmp_path / "out")
    assert x.shape == (20, len(FEATURES)) and y.tolist() == [1] * 20   # row by row, both would be far off
