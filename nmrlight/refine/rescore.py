"""Confidence re-scoring: rank refined cars by the detector's and the fit's evidence.

The mAP ranks predictions by confidence, so a car that fits its mask and photo well should rank
above one that does not, and a false positive (no mask, or a poor fit) should sink. The confidence
is a logistic model of a few features of one refined car:

- the detector's confidence (as a logit),
- the final overlap with the mask (IoU; 0 for a car without a mask),
- whether the car had a mask at all,
- how far the refinement moved it (rotation in degrees / 10 plus relative translation / 5 %),
- the final loss (silhouette + shading + edges: lower is a better fit),
- the visible fraction at the final pose (mask area over rendered area, at most 1; 0 without a mask):
  a mostly hidden car's fit rests on a sliver of outline and is more often off at the tight thresholds.

The coefficients were fitted with scikit-learn's LogisticRegression (each car stacked once per
metric threshold, labelled by whether it is within that threshold of its true car; false positives
are 0 at every threshold) on the two tuning seeds of the kaggle preset, 54 and 55, refined at full
resolution with the global stage (40 pictures, 230 detections; `python -m nmrlight.refine.rescore
DATA RUN [DATA RUN ...]`: DATA a `nmrlight synth --preset kaggle` folder, or any folder whose
train.csv holds the true poses of the images refined (a real validation set), RUN its refinement, an
output folder's per-image results or a `benchmarks/accuracy_kaggle.py refine` pickle; see
docs/accuracy.md), and are stored below.
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import numpy as np

from nmrlight.refine.result import CarResult
from nmrlight.rotations import geodesic_angle_deg, kaggle_to_matrix

FEATURES = ("detector_logit", "iou", "has_mask", "moved", "loss", "visible")
# fitted on kaggle tuning seeds 54 + 55 (docs/accuracy.md, twenty-sixth session), their detector confidences
# made anew after the synthetic detector stopped marking its flips with the floor confidence (until then:
# (1.7331, 3.3162, -0.0049, 0.1601, -2.2491, 3.8502), -4.1827): the detector's confidence, the overlap, a
# low final loss and a visible car up; how far the car moved and whether it had a mask hardly matter
# once the acceptance rules have turned the large moves that fit poorly down
COEFFICIENTS = (1.2726, 4.0739, 0.0233, -0.0185, -3.8700, 3.4162)
INTERCEPT = -3.7010


def _logit(p: float) -> float:
    p = min(max(float(p), 1e-4), 1 - 1e-4)
    return math.log(p / (1 - p))


def moved(car: CarResult) -> float:
    """How far the refinement moved the car: degrees / 10 + relative translation / 5 %."""
    rot = float(geodesic_angle_deg(kaggle_to_matrix(np.asarray(car.initial.rotation, dtype=float)),
                                   kaggle_to_matrix(np.asarray(car.refined.rotation, dtype=float))))
    t0, t1 = np.asarray(car.initial.translation), np.asarray(car.refined.translation)
    return rot / 10.0 + float(np.linalg.norm(t1 - t0) / max(np.linalg.norm(t0), 1e-6)) / 0.05


def features(car: CarResult) -> np.ndarray:
    """The re-scoring features of one car, in the order of FEATURES."""
    has_mask = car.iou_after is not None or car.iou_before is not None
    iou = car.iou_after if car.iou_after is not None else (car.iou_before or 0.0)
    loss = car.loss_after if car.loss_after is not None else (car.loss_before if car.loss_before is not None else 2.0)
    visible = car.extra.get("visible_fraction") if has_mask else None
    visible = min(max(float(visible), 0.0), 1.0) if visible is not None else 0.0
    return np.array([_logit(car.initial.confidence), float(iou), float(has_mask), moved(car), min(float(loss), 2.0),
                     visible])


def rescored(car: CarResult) -> float:
    """The re-scored confidence of one refined car, in (0, 1)."""
    z = INTERCEPT + float(np.dot(COEFFICIENTS, features(car)))
    return 1.0 / (1.0 + math.exp(-z))


def fit(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, float]:
    """Logistic regression coefficients and intercept (scikit-learn, L2, C = 1)."""
    from sklearn.linear_model import LogisticRegression

    model = LogisticRegression(C=1.0, max_iter=1000).fit(x, y)
    return model.coef_[0], float(model.intercept_[0])


def _results(run: Path) -> list:
    """The per-image results of a refinement: an output folder's JSON files, or the pickle that
    `benchmarks/accuracy_kaggle.py refine` writes ({"results": {image: (ImageResult, cpu seconds)}})."""
    from nmrlight.refine.result import ImageResult

    if run.suffix == ".pkl":
        import pickle

        with open(run, "rb") as f:
            return [result for result, _ in pickle.load(f)["results"].values()]
    paths = sorted(run.glob("images/*.json")) or sorted(run.glob("*.json"))
    return [ImageResult.from_dict(json.loads(path.read_text())) for path in paths]


def _training_set(data: Path, run: Path) -> tuple[np.ndarray, np.ndarray]:
    """Each car's features once per metric threshold, labelled by whether it lies within it.

    A synthetic folder pairs each prediction with its true car (coco/truth.json), found for each refined
    car by its initial pose (`ablation.prediction_positions`: a run given the submission file holds its
    cars in that file's order); without that (real data: DATA holds the truth as train.csv), the labels
    are the metric's own true positives, the predictions matched to the true cars as the metric matches
    them (`threshold_hits`, in the order of the detector's confidences)."""
    from dataclasses import replace

    from nmrlight.errors import NmrlightError
    from nmrlight.io.poses import read_poses
    from nmrlight.metric import ROTATION_THRESHOLDS_DEG, TRANSLATION_THRESHOLDS, threshold_hits
    from nmrlight.refine.ablation import car_errors, prediction_positions, read_pairing

    truth = read_poses(data / "train.csv")
    pairing = read_pairing(data)
    predictions = read_poses(data / "predictions.csv") if pairing is not None else None
    results = _results(run)
    if not results:
        raise NmrlightError(f"{run}: no refinement results (images/*.json, or a benchmark pickle .pkl)")
    xs, ys = [], []
    thresholds = list(zip(TRANSLATION_THRESHOLDS, ROTATION_THRESHOLDS_DEG, strict=True))
    for result in results:
        if result.image_id not in truth:
            raise NmrlightError(f"{run}: image {result.image_id} is not in {data / 'train.csv'}")
        if pairing is None:
            hits = threshold_hits(truth[result.image_id], [replace(car.refined, confidence=car.initial.confidence)
                                                           for car in result.cars])
        else:
            rows = prediction_positions(result.image_id, result, predictions.get(result.image_id, []))
        for k, car in enumerate(result.cars):
            if pairing is None:
                labels = [int(h) for h in hits[k]]
            else:
                t = pairing[result.image_id][rows[k]]
                rot, tr = car_errors(car.refined, truth[result.image_id][t]) if t >= 0 else (math.inf, math.inf)
                labels = [int(tr < max_tr and rot < max_rot) for max_tr, max_rot in thresholds]
            for label in labels:
                xs.append(features(car))
                ys.append(label)
    return np.asarray(xs), np.asarray(ys)


def main(argv: list[str] | None = None) -> None:
    """Fit the coefficients on synthetic data sets' refinements (DATA RUN pairs) and print them."""
    args = sys.argv[1:] if argv is None else argv
    if not args or len(args) % 2:
        raise SystemExit("usage: python -m nmrlight.refine.rescore DATA RUN [DATA RUN ...]")
    from nmrlight.errors import NmrlightError

    try:
        sets = [_training_set(Path(data), Path(run)) for data, run in zip(args[::2], args[1::2], strict=True)]
    except NmrlightError as error:
        raise SystemExit(f"error: {error}") from None
    x, y = np.concatenate([s[0] for s in sets]), np.concatenate([s[1] for s in sets])
    coefficients, intercept = fit(x, y)
    print(f"cars x thresholds: {len(y)}, positives {int(y.sum())}")
    print("COEFFICIENTS = (" + ", ".join(f"{c:.4f}" for c in coefficients) + ")")
    print(f"INTERCEPT = {intercept:.4f}")


if __name__ == "__main__":
    main()
