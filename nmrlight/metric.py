"""The competition's mean average precision, computed as shared/CONVENTIONS.md states, plus per-car errors.

For each of ten threshold pairs independently (translation [0.1 .. 0.01] relative, rotation
[50 .. 5] degrees): per image, predictions in descending confidence (ties keep file order) each take
the nearest not-yet-used ground-truth car by relative translation distance |t_pred - t_gt| / |t_gt|
(ties: the first in file order). It is a true positive when that car is strictly within both thresholds;
the car is then used up. Otherwise it is a false positive and the car stays available.
AP_i = sklearn average_precision_score(flags, confidences) * TP_i / N_gt (0 without a TP);
mAP = mean AP_i.

Per-car errors pair predictions with ground truth the same greedy way, with no thresholds.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field

import numpy as np

from nmrlight.errors import NmrlightError
from nmrlight.io.poses import CarPose
from nmrlight.rotations import geodesic_angle_deg, kaggle_to_matrix, metric_rotation_error_deg

TRANSLATION_THRESHOLDS: tuple[float, ...] = (0.1, 0.09, 0.08, 0.07, 0.06, 0.05, 0.04, 0.03, 0.02, 0.01)
ROTATION_THRESHOLDS_DEG: tuple[float, ...] = (50, 45, 40, 35, 30, 25, 20, 15, 10, 5)


@dataclass
class CarError:
    """Errors of one prediction paired with its ground-truth car."""

    image_id: str
    pred_index: int
    gt_index: int
    pred_model_type: int
    gt_model_type: int
    confidence: float
    translation_rel: float
    translation_m: float
    rotation_deg: float
    geodesic_deg: float


@dataclass
class EvaluationResult:
    """mAP, AP per threshold pair, counts, per-car errors and their medians (NaN without pairs)."""

    map: float
    ap: list[float]
    tp: list[int]
    n_gt: int
    n_pred: int
    n_images: int
    per_car: list[CarError] = field(default_factory=list)
    median_translation_rel: float = float("nan")
    median_translation_m: float = float("nan")
    median_rotation_deg: float = float("nan")
    median_geodesic_deg: float = float("nan")
    translation_thresholds: list[float] = field(default_factory=lambda: list(TRANSLATION_THRESHOLDS))
    rotation_thresholds_deg: list[float] = field(default_factory=lambda: list(ROTATION_THRESHOLDS_DEG))

    @property
    def n_matched(self) -> int:
        return len(self.per_car)

    def to_dict(self) -> dict:
        """JSON-ready dict; NaN medians become None."""
        data = asdict(self)
        data["n_matched"] = self.n_matched
        for key, value in data.items():
            if isinstance(value, float) and not np.isfinite(value):
                data[key] = None
        return data


def _arrays(cars: Sequence[CarPose]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rot = np.array([c.rotation for c in cars], dtype=np.float64).reshape(-1, 3)
    trans = np.array([c.translation for c in cars], dtype=np.float64).reshape(-1, 3)
    conf = np.array([c.confidence for c in cars], dtype=np.float64).reshape(-1)
    return rot, trans, conf


def _pair_errors(p_rot: np.ndarray, p_tr: np.ndarray, g_rot: np.ndarray, g_tr: np.ndarray
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(n_pred, n_gt) translation distance in metres, relative to the gt's distance, and the metric's
    rotation error in degrees."""
    dist_m = np.linalg.norm(p_tr[:, None, :] - g_tr[None, :, :], axis=-1)
    norm = np.linalg.norm(g_tr, axis=-1)[None, :]
    with np.errstate(divide="ignore", invalid="ignore"):
        # a gt car at the camera centre: distance 0 if hit exactly, else infinite
        dist = np.where(norm > 0, dist_m / np.where(norm > 0, norm, 1.0), np.where(dist_m == 0, 0.0, np.inf))
    rot = metric_rotation_error_deg(np.broadcast_to(p_rot[:, None, :], (len(p_rot), len(g_rot), 3)),
                                    np.broadcast_to(g_rot[None, :, :], (len(p_rot), len(g_rot), 3)))
    return dist_m, dist, rot


def threshold_hits(gt_cars: Sequence[CarPose], pred_cars: Sequence[CarPose]) -> np.ndarray:
    """(n_pred, 10) 0/1: whether each prediction of one image is a true positive at each threshold pair,
    matched as the metric matches (its confidence order, the nearest car not yet used): the labels to
    fit a confidence to when the pairing of predictions and cars is not known (real data)."""
    hits = np.zeros((len(pred_cars), len(TRANSLATION_THRESHOLDS)), dtype=int)
    if not pred_cars or not gt_cars:
        return hits
    p_rot, p_tr, p_conf = _arrays(pred_cars)
    g_rot, g_tr, _ = _arrays(gt_cars)
    _, dist, rot = _pair_errors(p_rot, p_tr, g_rot, g_tr)
    order = np.argsort(-p_conf, kind="stable")
    for i, thresholds in enumerate(zip(TRANSLATION_THRESHOLDS, ROTATION_THRESHOLDS_DEG, strict=True)):
        hits[order, i] = _greedy(order, dist, rot, *thresholds)[0]
    return hits


def _greedy(order: np.ndarray, tr: np.ndarray, rot: np.ndarray, tr_max: float, rot_max: float
            ) -> tuple[list[int], list[int]]:
    """For predictions in `order`: flag (1/0) and index of the gt taken (-1 when none)."""
    available = np.ones(tr.shape[1], dtype=bool)
    flags, taken = [], []
    for p in order:
        d = np.where(available, tr[p], np.inf)
        j = int(np.argmin(d)) if d.size else -1
        if j >= 0 and np.isfinite(d[j]) and d[j] < tr_max and rot[p, j] < rot_max:
            available[j] = False
            flags.append(1)
            taken.append(j)
        else:
            flags.append(0)
            taken.append(-1)
    return flags, taken


def evaluate(gt: Mapping[str, Sequence[CarPose]], pred: Mapping[str, Sequence[CarPose]]) -> EvaluationResult:
    """Score predictions against ground truth ({ImageId: cars} each).

    Images only in gt count as images without predictions; images only in pred are an error.
    """
    extra = [image_id for image_id in pred if image_id not in gt]
    if extra:
        shown = ", ".join(extra[:5]) + (f" (and {len(extra) - 5} more)" if len(extra) > 5 else "")
        raise NmrlightError(f"predictions for {len(extra)} image(s) missing from the ground truth: {shown}")
    n_gt = sum(len(cars) for cars in gt.values())
    n_pred = sum(len(cars) for cars in pred.values())
    flags: list[list[int]] = [[] for _ in TRANSLATION_THRESHOLDS]
    scores: list[float] = []
    per_car: list[CarError] = []
    for image_id, pcars in pred.items():
        if not pcars:
            continue
        gcars = gt[image_id]
        p_rot, p_tr, p_conf = _arrays(pcars)
        g_rot, g_tr, _ = _arrays(gcars)
        order = np.argsort(-p_conf, kind="stable")
        scores.extend(p_conf[order].tolist())
        if len(gcars) == 0:
            for f in flags:
                f.extend([0] * len(pcars))
            continue
        dist_m, dist, rot = _pair_errors(p_rot, p_tr, g_rot, g_tr)
        for i, thresholds in enumerate(zip(TRANSLATION_THRESHOLDS, ROTATION_THRESHOLDS_DEG, strict=True)):
            flags[i].extend(_greedy(order, dist, rot, *thresholds)[0])
        _, taken = _greedy(order, dist, rot, np.inf, np.inf)
        pairs = [(int(p), j) for p, j in zip(order, taken, strict=True) if j >= 0]
        if pairs:
            pi = np.array([p for p, _ in pairs])
            gi = np.array([j for _, j in pairs])
            geo = geodesic_angle_deg(kaggle_to_matrix(p_rot[pi]), kaggle_to_matrix(g_rot[gi]))
            for k, (p, j) in enumerate(pairs):
                per_car.append(CarError(
                    image_id=image_id, pred_index=p, gt_index=j,
                    pred_model_type=int(pcars[p].model_type), gt_model_type=int(gcars[j].model_type),
                    confidence=float(p_conf[p]), translation_rel=float(dist[p, j]),
                    translation_m=float(dist_m[p, j]), rotation_deg=float(rot[p, j]),
                    geodesic_deg=float(geo[k])))
    ap, tp = [], []
    for f in flags:
        n_tp = int(sum(f))
        tp.append(n_tp)
        ap.append(_average_precision(f, scores) * n_tp / n_gt if n_tp > 0 and n_gt > 0 else 0.0)

    def median(name: str) -> float:
        values = [getattr(e, name) for e in per_car]
        return float(np.median(values)) if values else float("nan")

    return EvaluationResult(
        map=float(np.mean(ap)), ap=ap, tp=tp, n_gt=n_gt, n_pred=n_pred, n_images=len(gt), per_car=per_car,
        median_translation_rel=median("translation_rel"), median_translation_m=median("translation_m"),
        median_rotation_deg=median("rotation_deg"), median_geodesic_deg=median("geodesic_deg"))


def _average_precision(flags: Sequence[int], scores: Sequence[float]) -> float:
    from sklearn.metrics import average_precision_score

    return float(average_precision_score(np.asarray(flags), np.asarray(scores)))
