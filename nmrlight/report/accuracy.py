"""Accuracy of a run against ground truth (`--gt GT.csv`): errors before/after by distance band, mAP.

Each prediction is paired with a ground-truth car once, on the input (detector) poses, by the
official metric's greedy matching (`nmrlight.metric.evaluate`); the same pair then gives the error
before and after refinement (`nmrlight.refine.ablation.car_errors`), so "before" and "after" compare
the same cars. Bands split by the true depth (< 40 m, >= 40 m, as the ablation does); the mAP of a
band scores the ground truth and the predictions of that band. A car ends "closer" when
rotation / 1 deg + translation / 0.5 % went down (the ablation's combined error).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from nmrlight.errors import NmrlightError
from nmrlight.io.poses import CarPose
from nmrlight.metric import evaluate
from nmrlight.refine.ablation import car_errors, ended_closer
from nmrlight.refine.result import ImageResult

NEAR_M = 40.0


def _band_of(depth: float, near: float) -> str:
    return f"< {near:g} m" if depth < near else f">= {near:g} m"


def _split(poses: Mapping[str, Sequence[CarPose]], keep) -> dict[str, list[CarPose]]:
    return {i: [c for c in cars if keep(c)] for i, cars in poses.items()}


def per_car_errors(results: Sequence[ImageResult], truth: Mapping[str, Sequence[CarPose]], near: float = NEAR_M
                   ) -> list[dict]:
    """One dict per paired car: image_id, index, gt_index, band, errors before and after."""
    scored = [r for r in results if r.image_id in truth]
    initial = {r.image_id: [c.initial for c in r.cars] for r in scored}
    gt = {i: list(truth[i]) for i in initial}
    pairs = evaluate(gt, initial).per_car
    cars = {r.image_id: r.cars for r in scored}
    out = []
    for pair in sorted(pairs, key=lambda p: (p.image_id, p.pred_index)):
        car = cars[pair.image_id][pair.pred_index]
        g = gt[pair.image_id][pair.gt_index]
        rot0, tr0 = car_errors(car.initial, g)
        rot1, tr1 = car_errors(car.refined, g)
        out.append({"image_id": pair.image_id, "index": pair.pred_index, "gt_index": pair.gt_index,
                    "gt_depth_m": float(g.translation[2]), "band": _band_of(float(g.translation[2]), near),
                    "rotation_deg_before": rot0, "rotation_deg_after": rot1,
                    "translation_rel_before": tr0, "translation_rel_after": tr1})
    return out


def _median(values: list[float]) -> float | None:
    return float(np.median(values)) if values else None


def accuracy_of(results: Sequence[ImageResult], truth: Mapping[str, Sequence[CarPose]], gt_path: str | Path,
                near: float = NEAR_M) -> dict:
    """The accuracy section of report.json: bands (all, near, far) and the per-car errors."""
    scored = [r for r in results if r.image_id in truth]
    if results and not scored:
        raise NmrlightError(f"ground truth {gt_path}: none of the run's {len(results)} images is in it "
                            f"(first image of the run: {results[0].image_id})")
    errors = per_car_errors(scored, truth, near)
    gt = {r.image_id: list(truth[r.image_id]) for r in scored}
    before = {r.image_id: [c.initial for c in r.cars] for r in scored}
    after = {r.image_id: [c.refined for c in r.cars] for r in scored}
    bands = []
    for name, keep in (("all", lambda c: True), (f"< {near:g} m", lambda c: c.translation[2] < near),
                       (f">= {near:g} m", lambda c: c.translation[2] >= near)):
        rows = [e for e in errors if name == "all" or e["band"] == name]
        closer = [bool(ended_closer(e["rotation_deg_before"], e["translation_rel_before"], e["rotation_deg_after"],
                                    e["translation_rel_after"])) for e in rows]
        gt_band = _split(gt, keep)
        bands.append({
            "band": name, "gt_cars": sum(len(c) for c in gt_band.values()), "paired_cars": len(rows),
            "rotation_deg_before": _median([e["rotation_deg_before"] for e in rows]),
            "rotation_deg_after": _median([e["rotation_deg_after"] for e in rows]),
            "translation_rel_before": _median([e["translation_rel_before"] for e in rows]),
            "translation_rel_after": _median([e["translation_rel_after"] for e in rows]),
            "map_before": evaluate(gt_band, _split(before, keep)).map,
            "map_after": evaluate(gt_band, _split(after, keep)).map,
            "closer_fraction": float(np.mean(closer)) if closer else None,
        })
    return {"gt": str(gt_path), "near_m": near, "images_scored": len(scored),
            "images_without_gt": len(results) - len(scored), "bands": bands, "per_car": errors}
