"""The issue targets' measurement: Wilson and median intervals, the counted cars, each bar's verdict."""

from __future__ import annotations

import json
import math
from dataclasses import replace

import numpy as np
import pytest

from nmrlight.errors import NmrlightError
from nmrlight.io.poses import CarPose, write_poses
from nmrlight.refine.result import CarResult, ImageResult
from nmrlight.refine.targets import (
    CarRow,
    SetMaps,
    evaluate_targets,
    main,
    median_interval,
    rows_and_maps,
    wilson_interval,
)


def test_wilson_interval_matches_worked_values() -> None:
    # Wilson (1927) score interval, z = 1.96: 5 of 10 -> 0.2366-0.7634; 0 of 10 -> 0-0.2775
    assert wilson_interval(5, 10) == pytest.approx((0.2366, 0.7634), abs=1e-4)
    lo, hi = wilson_interval(0, 10)
    assert lo == 0.0 and hi == pytest.approx(0.2775, abs=1e-4)
    lo, hi = wilson_interval(10, 10)
    assert lo == pytest.approx(0.7225, abs=1e-4) and hi == pytest.approx(1.0)
    # 5 of 312 (1.6 %): the interval reaches past 2 %, so such a sample cannot show "< 2 %"
    assert wilson_interval(5, 312)[1] > 0.02
    with pytest.raises(NmrlightError, match="k=3, n=2"):
        wilson_interval(3, 2)


def test_median_interval_uses_the_order_statistics_and_covers_the_median() -> None:
    m, lo, hi = median_interval(range(1, 101))      # ranks 50 -+ 9.8 -> the 41st and 61st values
    assert (m, lo, hi) == (50.5, 41.0, 61.0)
    rng = np.random.default_rng(7)
    covered = 0
    for _ in range(400):                             # exponential: true median ln 2
        _, lo, hi = median_interval(rng.exponential(1.0, 120))
        covered += lo <= math.log(2.0) <= hi
    assert 0.91 <= covered / 400 <= 0.99
    with pytest.raises(NmrlightError):
        median_interval([])


def _row(rot_before: float, trans_before: float, rot_after: float, trans_after: float, depth: float = 20.0,
         visible: float | None = 0.5) -> CarRow:
    return CarRow("set", depth, visible, rot_before, trans_before, rot_after, trans_after)


def test_crowded_targets_read_each_bar_as_the_issue_states_it() -> None:
    good = _row(4.0, 0.05, 0.5, 0.004)                          # closer
    rows = [good] * 97 + [_row(1.0, 0.01, 1.0, 0.035)] * 2 + [_row(2.0, 0.02, 5.5, 0.02)]   # 3 worse
    maps = [SetMaps("a", 0.1, 0.38, 0.36, 0.5), SetMaps("b", 0.1, 0.45, 0.40, 0.5)]
    t = {x.name: x for x in evaluate_targets("crowded", rows, maps)}
    assert t["closer"].met and t["closer"].value.startswith("97.0 % (97 / 100)")
    assert not t["worse by > 2 % or 3 deg"].met                 # 3 % is not below 3 %
    assert t["median rotation"].met and t["median translation"].met
    assert t["mAP / ceiling"].met and not t["mAP / ceiling"].sure   # 83 % pooled; "a" alone 76 %
    assert "worst a: 76.0 %; 1 of 2" in t["mAP / ceiling"].interval
    two = {x.name: x for x in evaluate_targets("crowded", rows[:-1] + [good], maps)}
    assert two["worse by > 2 % or 3 deg"].met and not two["worse by > 2 % or 3 deg"].sure   # 2 of 100


def test_kaggle_targets_split_medians_by_depth_and_count_flips() -> None:
    near = [_row(4.0, 0.05, 0.3, 0.002, depth=15.0)] * 60
    far = [_row(5.0, 0.06, 2.0, 0.012, depth=60.0)] * 30                     # far medians miss their bars
    flips = [_row(178.0, 0.05, 1.0, 0.004)] * 4 + [_row(178.0, 0.05, 179.0, 0.01)]   # 4 of 5 fixed
    broken = [_row(3.0, 0.03, 177.0, 0.01)]                                  # 1 correct heading flipped
    rows = near + far + flips + broken
    maps = [SetMaps("a", 0.2, 0.70, 0.72, 0.75)]                             # the run's confidences lose
    t = {x.name: x for x in evaluate_targets("kaggle", rows, maps, near=40.0)}
    assert t["median rotation < 40 m"].met and t["median translation < 40 m"].met
    assert not t["median rotation >= 40 m"].met and not t["median translation >= 40 m"].met
    assert t["flipped headings fixed"].met and t["flipped headings fixed"].value.startswith("80.0 % (4 / 5)")
    assert t["correct headings flipped"].value.startswith("1.1 % (1 / 91)")
    assert t["mAP / ceiling"].met                                            # 93 %
    assert not t["run's confidences beat the detector's (same poses)"].met
    with pytest.raises(NmrlightError, match="preset"):
        evaluate_targets("street", rows, maps)


def test_rows_and_maps_count_refined_detections_of_true_cars_only() -> None:
    truth = {"img": [CarPose(5, (0.15, 0.3, math.pi), (-4.0, 1.5, 20.0)),
                     CarPose(5, (0.15, -1.0, math.pi), (3.0, 1.6, 30.0))]}
    off = CarPose(5, (0.15, 0.3, math.pi), (-4.4, 1.65, 22.0), 0.9)       # 10 % too far
    fixed = CarPose(5, (0.15, 0.3, math.pi), (-4.0, 1.5, 20.0), 0.3)      # the truth, a lower confidence
    phantom = CarPose(5, (0.15, 0.0, math.pi), (8.0, 1.7, 40.0), 0.8)     # a false positive
    unmasked = CarPose(5, (0.15, -1.0, math.pi), (3.0, 1.6, 31.0), 0.7)
    predictions = {"img": [off, phantom, unmasked]}
    cars = [CarResult(0, off, fixed, "refined"), CarResult(1, phantom, phantom, "refined"),
            CarResult(2, unmasked, unmasked, "no mask")]
    rows, maps = rows_and_maps("set", truth, predictions, {"img": ImageResult("img", cars)}, {"img": [0, -1, 1]},
                               {"img": [0.8, 0.1]})
    assert len(rows) == 1 and rows[0].visible == 0.8 and rows[0].depth == 20.0
    assert rows[0].trans_before == pytest.approx(0.1) and rows[0].trans_after == pytest.approx(0.0, abs=1e-12)
    assert rows[0].closer and not rows[0].worse
    # the refined poses rank by the run's confidence (0.3, below the phantom's 0.8) or the detector's (0.9)
    assert maps.detector_confidence > maps.after
    assert maps.ceiling >= maps.detector_confidence > maps.before
    # a run given the submission file holds the cars in another order: each is found by its initial pose
    shuffled = ImageResult("img", [cars[2], cars[0], cars[1]])
    rows2, maps2 = rows_and_maps("set", truth, predictions, {"img": shuffled}, {"img": [0, -1, 1]},
                                 {"img": [0.8, 0.1]})
    assert rows2 == rows and maps2 == maps
    stranger = CarResult(0, replace(off, translation=(-4.4, 1.65, 23.0)), fixed, "refined")
    with pytest.raises(NmrlightError, match=r"image img: car 0 \(initial translation \(-4.4, 1.65, 23.0\)\) is no row"):
        rows_and_maps("set", truth, predictions, {"img": ImageResult("img", [stranger])}, {"img": [0, -1, 1]}, None)


def test_the_command_names_a_folder_that_is_not_a_run(tmp_path, capsys) -> None:
    with pytest.raises(SystemExit, match="no images"):
        main(["--preset", "crowded", str(tmp_path), str(tmp_path / "out")])


def test_the_command_measures_a_refine_output_folder(tmp_path, capsys) -> None:
    # a data folder with rows aligned (no coco/truth.json) and an output folder of one photograph: car 0
    # refined from 10 % too far to the truth, car 1 left at the detector's pose for want of a mask
    truth = [CarPose(5, (0.15, 0.3, math.pi), (-4.0, 1.5, 20.0)), CarPose(5, (0.15, -1.0, math.pi), (3.0, 1.6, 30.0))]
    before = [CarPose(5, (0.15, 0.3, math.pi), (-4.4, 1.65, 22.0), 0.9), replace(truth[1], confidence=0.7)]
    data, out = tmp_path / "data", tmp_path / "out"
    (out / "images").mkdir(parents=True)
    data.mkdir()
    write_poses(data / "train.csv", {"img": truth}, confidence=False)
    write_poses(data / "predictions.csv", {"img": before})
    cars = [CarResult(0, before[0], replace(truth[0], confidence=0.9), "refined"),
            CarResult(1, before[1], before[1], "no mask")]
    (out / "images" / "img.json").write_text(json.dumps(ImageResult("img", cars).to_dict()))
    main(["--preset", "crowded", str(data), str(out)])
    table = capsys.readouterr().out
    assert "| closer | >= 80 % | 100.0 % (1 / 1) |" in table
    assert "| mAP / ceiling | >= 80 % | 100.0 % of the summed ceilings (1 data sets) |" in table
    assert "visible" not in table                       # no visibility.csv: no band table
