"""The crowded evaluation's figures: the best ranking of a run's poses, and the band statistics."""

from __future__ import annotations

import itertools
import math
from dataclasses import replace

import numpy as np
import pytest

from nmrlight.io.poses import CarPose
from nmrlight.metric import evaluate
from nmrlight.refine.visibility_eval import band_table, ranked_poses

TRUTH = [CarPose(5, (0.15, 0.3, math.pi), (-4.0, 1.5, 20.0)), CarPose(5, (0.15, -1.0, math.pi), (3.0, 1.6, 30.0)),
         CarPose(5, (0.15, 2.0, math.pi), (0.0, 1.7, 45.0)), CarPose(5, (0.15, 0.5, math.pi), (6.0, 1.8, 60.0))]


def _off(pose: CarPose, yaw_deg: float, depth: float, confidence: float) -> CarPose:
    """`pose` turned by yaw_deg about its heading axis and moved along its ray by `depth` (relative)."""
    v1, v2, v3 = pose.rotation
    return CarPose(pose.model_type, (v1, v2 + math.radians(yaw_deg), v3),
                   tuple(c * (1.0 + depth) for c in pose.translation), confidence)


def test_the_best_ranking_is_the_best_any_confidence_gives_these_poses() -> None:
    # exact; 3 % off (meets the looser translation thresholds only); 20 deg off (the looser rotation
    # ones); 30 % off (none); a false positive where no car is. The confidences rank them badly.
    refined = [_off(TRUTH[0], 0.0, 0.0, 0.2), _off(TRUTH[1], 0.0, 0.03, 0.9), _off(TRUTH[2], 20.0, 0.0, 0.5),
               _off(TRUTH[3], 0.0, 0.3, 0.95), CarPose(5, (0.15, 0.0, math.pi), (-9.0, 2.0, 80.0), 0.99)]
    truth, pairing = {"img": TRUTH}, {"img": [0, 1, 2, 3, -1]}
    ranked = ranked_poses(truth, {"img": refined}, pairing)["img"]
    assert [p.translation for p in ranked] == [p.translation for p in refined]   # poses untouched
    order = np.argsort([-p.confidence for p in ranked])
    assert list(order[:3]) == [0, 1, 2] and set(order[3:]) == {3, 4}
    best = evaluate(truth, {"img": ranked}).map
    every = [evaluate(truth, {"img": [replace(p, confidence=c) for p, c in zip(refined, perm, strict=True)]}).map
             for perm in itertools.permutations([0.1, 0.3, 0.5, 0.7, 0.9])]
    assert best == pytest.approx(max(every), abs=1e-12)
    assert evaluate(truth, {"img": refined}).map < best - 0.05                     # the given order is worse


def test_band_statistics_count_closer_and_worse_cars_as_documented() -> None:
    # (band, rot before, transl before, rot after, transl after, renders)
    rows = [("<30%", 4.0, 0.05, 1.0, 0.01, 10),      # closer
            ("<30%", 1.0, 0.01, 1.0, 0.035, 20),     # worse: translation up 2.5 %
            ("30-70%", 2.0, 0.02, 5.5, 0.02, 30),    # worse: rotation up 3.5 deg
            (">70%", 3.0, 0.04, 0.5, 0.002, 40)]     # closer
    maps = {"map_before": 0.1, "map_after": 0.2, "map_rescored": 0.25, "map_ranked": 0.3, "map_ceiling": 0.5}
    table = {r["band"]: r for r in band_table("run", rows, maps, 2, 1.5)}
    assert set(table) == {"<30%", "30-70%", ">70%", "all"}
    assert table["all"]["cars"] == 4 and table["<30%"]["cars"] == 2
    assert table["all"]["closer"] == pytest.approx(0.5) and table["all"]["worse"] == pytest.approx(0.5)
    assert table["<30%"]["worse"] == pytest.approx(0.5) and table[">70%"]["worse"] == 0.0
    assert table["all"]["rot_after"] == pytest.approx(1.0) and table["all"]["trans_before"] == pytest.approx(0.03)
    assert table["all"]["renders_per_car"] == pytest.approx(25.0) and table["all"]["map_ranked"] == 0.3


def test_a_run_in_submission_order_is_measured_as_one_in_prediction_order(tmp_path) -> None:
    import json

    from nmrlight.io.poses import write_poses
    from nmrlight.refine.result import CarResult, ImageResult
    from nmrlight.refine.visibility_eval import main, summarise

    data = tmp_path / "data"
    data.mkdir()
    before = [_off(t, 4.0, 0.05, 0.5 + 0.1 * k) for k, t in enumerate(TRUTH)]
    after = [_off(t, 0.5, 0.005, 0.5 + 0.1 * k) for k, t in enumerate(TRUTH)]
    write_poses(data / "train.csv", {"img": TRUTH}, confidence=False)
    write_poses(data / "predictions.csv", {"img": before})
    rows = "".join(f"img,{k},10,40,{f},20\n" for k, f in enumerate((0.1, 0.5, 0.9, 1.0)))
    (data / "visibility.csv").write_text("ImageId,car_index,visible_pixels,unoccluded_pixels,visible_fraction,depth\n"
                                         + rows)
    cars = [CarResult(k, b, a, "refined", iterations=10 * (k + 1))
            for k, (b, a) in enumerate(zip(before, after, strict=True))]
    tables = []
    for name, order in (("rows", [0, 1, 2, 3]), ("shuffled", [2, 0, 3, 1])):
        out = tmp_path / name / "images"
        out.mkdir(parents=True)
        (out / "img.json").write_text(json.dumps(ImageResult("img", [cars[k] for k in order]).to_dict()))
        tables.append([{k: v for k, v in row.items() if k != "run"} for row in summarise(data, out.parent)])
    assert tables[0] == tables[1]
    assert {r["band"]: r["cars"] for r in tables[0]} == {"<30%": 1, "30-70%": 1, ">70%": 2, "all": 4}
    stranger = tmp_path / "stranger" / "images"
    stranger.mkdir(parents=True)
    moved = [replace(c, initial=_off(c.initial, 0.0, 0.2, 0.5)) for c in cars]
    (stranger / "img.json").write_text(json.dumps(ImageResult("img", moved).to_dict()))
    with pytest.raises(SystemExit, match=r"image img: car 0 \(initial translation \(-5.04, 1.89, 25.2\)\) is no row"):
        main([str(data), str(stranger.parent)])
