"""The official mAP: hand-computed cases and a literal re-implementation of the public kernel's loop."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.spatial.transform import Rotation
from sklearn.metrics import average_precision_score

from nmrlight.errors import NmrlightError
from nmrlight.io.poses import CarPose
from nmrlight.metric import ROTATION_THRESHOLDS_DEG, TRANSLATION_THRESHOLDS, evaluate, threshold_hits


def car(t, rot=(0.15, 0.5, -3.1), conf=1.0, model=0):
    return CarPose(model, tuple(float(v) for v in rot), tuple(float(v) for v in t), conf)


GT = {
    "A": [car((-3, 6, 12)), car((5, 7, 40), rot=(0.2, -2.0, 3.0), model=17)],
    "B": [car((0, 5, 20), rot=(0.1, 1.0, 3.1))],
}


def test_perfect_predictions():
    result = evaluate(GT, GT)
    assert result.map == 1.0 and result.ap == [1.0] * 10 and result.tp == [3] * 10
    assert result.n_gt == 3 and result.n_pred == 3 and result.n_matched == 3
    assert result.median_translation_m == 0 and result.median_rotation_deg == pytest.approx(0, abs=1e-6)


def test_translation_off_by_4_5_percent_passes_only_looser_thresholds():
    t = np.array([3.0, 4.0, 12.0])  # |t| = 13
    pred = {"A": [car(t + np.array([0, 0, 0.045 * 13]))]}
    result = evaluate({"A": [car(t)]}, pred)
    assert result.tp == [1, 1, 1, 1, 1, 1, 0, 0, 0, 0]  # 0.1 .. 0.05 pass, 0.04 .. 0.01 fail
    assert result.map == pytest.approx(0.6)
    assert result.per_car[0].translation_rel == pytest.approx(0.045)
    assert result.per_car[0].translation_m == pytest.approx(0.585)


def test_thresholds_are_strict():
    t = np.array([0.0, 0.0, 10.0])
    result = evaluate({"A": [car(t)]}, {"A": [car(t * 1.0625)]})  # exactly 0.0625
    assert result.tp == [1, 1, 1, 1, 0, 0, 0, 0, 0, 0]
    rot = (0.0, 0.0, 0.0)
    result = evaluate({"A": [car(t, rot=rot)]}, {"A": [car(t, rot=(0.0, 0.0, math.radians(12)))]})
    assert result.tp == [1, 1, 1, 1, 1, 1, 1, 1, 0, 0]  # 12 deg: under 50 .. 15, not under 10 or 5
    assert result.per_car[0].rotation_deg == pytest.approx(12.0)
    assert result.per_car[0].geodesic_deg == pytest.approx(12.0)
    assert result.map == pytest.approx(0.8)


def test_two_pi_wrap_is_a_small_error():
    gt = {"A": [car((1, 2, 30), rot=(0.15, math.pi - 0.01, 3.1))]}
    pred = {"A": [car((1, 2, 30), rot=(0.15, -math.pi + 0.01, 3.1))]}
    result = evaluate(gt, pred)
    assert result.per_car[0].rotation_deg == pytest.approx(1.1459, abs=1e-3)
    assert result.map == 1.0


def test_false_positive_lowers_precision():
    gt = {"A": [car((0, 5, 20))]}
    # the higher-scored prediction is far off: FP first, then the TP
    pred = {"A": [car((10, 5, 20), conf=0.9), car((0, 5, 20), conf=0.5)]}
    result = evaluate(gt, pred)
    assert result.tp == [1] * 10
    assert result.ap == pytest.approx([0.5] * 10)  # precision 1/2 at recall 1
    # scored the other way the FP comes after every TP: AP 1
    pred = {"A": [car((10, 5, 20), conf=0.1), car((0, 5, 20), conf=0.5)]}
    assert evaluate(gt, pred).map == 1.0


def test_missed_cars_lower_recall_and_missing_images_count():
    result = evaluate(GT, {"A": [GT["A"][0]]})
    assert result.map == pytest.approx(1 / 3)
    assert result.n_matched == 1


def test_nearest_gt_is_taken_even_when_it_fails_and_stays_available():
    gt = {"A": [car((0, 5, 20), rot=(0, 0, 0)), car((0.5, 5, 20), rot=(0, 1.0, 0))]}
    # the first prediction is nearest gt 0 but rotated like gt 1: FP, gt 0 stays free
    pred = {"A": [car((0.1, 5, 20), rot=(0, 1.0, 0), conf=0.9), car((0, 5, 20), rot=(0, 0, 0), conf=0.8)]}
    result = evaluate(gt, pred)
    assert result.tp == [1] * 10
    assert result.ap == pytest.approx([0.5 * 0.5] * 10)  # AP 0.5, recall 1/2


def test_ties_keep_file_order():
    gt = {"A": [car((0, 5, 20))]}
    pred = {"A": [car((5, 5, 20), conf=0.7), car((0, 5, 20), conf=0.7)]}
    flags_first_bad = evaluate(gt, pred)
    pred = {"A": [car((0, 5, 20), conf=0.7), car((5, 5, 20), conf=0.7)]}
    flags_first_good = evaluate(gt, pred)
    # sklearn treats tied scores as one threshold: both orders give AP 0.5 and one TP
    assert flags_first_bad.tp == flags_first_good.tp == [1] * 10
    assert flags_first_bad.map == pytest.approx(0.5)
    # the per-car pairing follows file order among ties: the first prediction takes the gt car
    assert flags_first_bad.per_car[0].pred_index == 0 and flags_first_bad.per_car[0].translation_m == 5


def test_multiple_cars_one_to_one():
    gt = {"A": [car((0, 5, 20)), car((0.3, 5, 20))]}
    pred = {"A": [car((0.3, 5, 20), conf=0.9), car((0.29, 5, 20), conf=0.8)]}
    result = evaluate(gt, pred)
    # the second prediction cannot reuse gt 1; gt 0 is 0.29 m / 20.6 m = 1.4 % away: TP down to 0.02
    assert result.tp == [2] * 9 + [1]
    assert result.ap == pytest.approx([1.0] * 9 + [0.5])
    assert sorted(e.gt_index for e in result.per_car) == [0, 1]


def test_errors_on_unknown_images():
    with pytest.raises(NmrlightError, match="missing from the ground truth: Z"):
        evaluate(GT, {"Z": [car((0, 5, 20))]})


def _kernel_reference(gt, pred):
    """A literal version of the public kernel's check_match loop (pop the used gt car, strict <)."""
    n_gt = sum(len(v) for v in gt.values())
    aps = []
    for tr_max, rot_max in zip(TRANSLATION_THRESHOLDS, ROTATION_THRESHOLDS_DEG, strict=True):
        remaining = {k: list(v) for k, v in gt.items()}
        flags, scores = [], []
        for image_id, cars in pred.items():
            for p in sorted(cars, key=lambda c: -c.confidence):
                best, best_rot, best_idx = 1e10, None, -1
                for idx, g in enumerate(remaining[image_id]):
                    d = math.dist(p.translation, g.translation) / math.hypot(*g.translation)
                    if d < best:
                        q = Rotation.from_euler("xyz", p.rotation).inv() * \
                            Rotation.from_euler("xyz", g.rotation)
                        w = math.degrees(2 * math.acos(np.clip(q.as_quat()[3], -1, 1)))
                        best, best_rot, best_idx = d, (360 - w if w > 180 else w), idx
                if best < tr_max and best_rot is not None and best_rot < rot_max:
                    remaining[image_id].pop(best_idx)
                    flags.append(1)
                else:
                    flags.append(0)
                scores.append(p.confidence)
        aps.append(average_precision_score(flags, scores) * sum(flags) / n_gt if sum(flags) else 0.0)
    return float(np.mean(aps)), aps


def test_matches_kernel_loop_on_random_scenes():
    rng = np.random.default_rng(0)
    gt, pred = {}, {}
    for i in range(25):
        n = int(rng.integers(1, 8))
        t = np.stack([rng.uniform(-20, 20, n), rng.uniform(1, 10, n), rng.uniform(5, 80, n)], -1)
        r = np.stack([rng.normal(0.15, 0.05, n), rng.uniform(-np.pi, np.pi, n),
                      rng.uniform(-np.pi, np.pi, n)], -1)
        gt[f"I{i}"] = [car(t[k], r[k], model=int(rng.integers(0, 79))) for k in range(n)]
        cars = []
        for k in range(n):
            if rng.random() < 0.8:
                tt = t[k] * (1 + rng.normal(0, 0.03, 3))
                rr = r[k] + rng.normal(0, 0.15, 3)
                cars.append(car(tt, rr, conf=float(rng.random())))
        for _ in range(int(rng.integers(0, 3))):  # false positives
            cars.append(car([rng.uniform(-20, 20), rng.uniform(1, 10), rng.uniform(5, 80)],
                            conf=float(rng.random())))
        if i != 3:  # image I3 gets no predictions at all
            pred[f"I{i}"] = cars
    expected_map, expected_ap = _kernel_reference(gt, pred)
    result = evaluate(gt, pred)
    assert result.ap == pytest.approx(expected_ap, abs=1e-12)
    assert result.map == pytest.approx(expected_map, abs=1e-12)
    assert 0.05 < result.map < 0.95  # a non-trivial case


def test_threshold_hits_are_the_metrics_true_positives_car_by_car() -> None:
    """A car 4.5 % off in translation passes the six loosest pairs (10 % .. 5 %) and no tighter one; of two
    predictions of one car the more confident takes it (the other is a false positive at every pair, as
    is a prediction far from any car); the column sums are the metric's true-positive counts."""
    car = CarPose(5, (0.1, 0.3, -3.0), (1.0, 2.0, 20.0))
    norm = float(np.linalg.norm(car.translation))
    near = CarPose(5, car.rotation, (1.0 + 0.045 * norm, 2.0, 20.0), 0.6)
    rival = CarPose(5, car.rotation, (1.0, 2.0, 20.0 + 0.001), 0.5)
    stray = CarPose(5, car.rotation, (30.0, 2.0, 60.0), 0.9)
    hits = threshold_hits([car], [near, rival, stray])
    assert hits[0].tolist() == [1] * 6 + [0] * 4
    assert hits[1].tolist() == [0] * 6 + [1] * 4   # free once the more confident one failed the pair
    assert hits[2].tolist() == [0] * 10
    result = evaluate({"a": [car]}, {"a": [near, rival, stray]})
    assert hits.sum(axis=0).tolist() == result.tp
    assert threshold_hits([], [near]).tolist() == [[0] * 10]
