"""Ablation on synthetic scenes: which loss terms, lighting modes and global parts bring the cars closer
to the truth.

For each setting the same images are refined; each prediction is paired with the true car it was
made from (rows aligned for the default preset; through `coco/truth.json`'s `prediction_truth` for
the kaggle preset, whose detector misses cars and adds false positives, which pair with none), and
errors are split by true depth (nearer than `near` metres, farther). A car ends "closer" when its
combined error rot/1 deg + translation/0.5 % (the targets' units) went down. Only cars that were
refined count (cars without a mask pixel keep their pose and are left out of the medians). mAP is the official
metric on each depth group (ground truth and predictions split by their depth), against every
annotated car, false positives included. Flips: cars that started more than 90 deg off and ended
within 90 deg ("fixed"), and cars that started within 90 deg and ended beyond ("broken"). "Worse":
cars that ended more than 3 deg or 2 % (translation) farther than they started. The mAP's ceiling:
the same detections at their true poses with the detector's confidences (false positives as they are).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace

import numpy as np

from nmrlight.errors import NmrlightError
from nmrlight.io.dataset import DataFolder
from nmrlight.io.poses import CarPose
from nmrlight.metric import evaluate
from nmrlight.refine.config import RefineConfig
from nmrlight.refine.image import refine_image
from nmrlight.rotations import metric_rotation_error_deg

# the default (silhouette + photo edges; the light learned for the report only, which moves no pose)
# first, then the four settings of the original question (silhouette vs grayscale, fixed vs learned lighting),
# then the photo-edge term (lighting-free) alone with the silhouette and with everything; all of them
# the local refinement alone (no global stage, acceptance rule or re-scoring)
_LOCAL = {"global_stage": False, "accept_iou_drop": None, "rescore": False}  # the defaults, spelled out
SETTINGS: dict[str, dict] = {
    "silhouette + edges, learned lighting reported (default)": {"losses": "silhouette", "lighting": "learn",
                                                                **_LOCAL},
    "silhouette only": {"losses": "silhouette", "lighting": "fixed", "weight_edges": 0.0, **_LOCAL},
    "grayscale only": {"losses": "grayscale", "lighting": "learn", "weight_edges": 0.0, **_LOCAL},
    "both, fixed lighting": {"losses": "both", "lighting": "fixed", "weight_edges": 0.0, **_LOCAL},
    "both, learned lighting": {"losses": "both", "lighting": "learn", "weight_edges": 0.0, **_LOCAL},
    "silhouette + edges": {"losses": "silhouette", "lighting": "fixed", **_LOCAL},
    "both + edges, learned lighting": {"losses": "both", "lighting": "learn", **_LOCAL},
    # issue 12 item 5: fixed vs learned light under the photo edges, and the per-material shading term
    "both + edges, fixed lighting": {"losses": "both", "lighting": "fixed", **_LOCAL},
    "both + edges, materials, learned lighting": {"losses": "both", "lighting": "learn", "shading_materials": True,
                                                   **_LOCAL},
}
# the parts of issue 11 (docs/accuracy.md), off by default: each switched on alone, then all, then all
# but one
_ALL = {"global_stage": True, "accept_iou_drop": 0.02, "rescore": True, "ground_plane": True}
GLOBAL_SETTINGS: dict[str, dict] = {
    "silhouette + edges, learned lighting reported (default)": {"losses": "silhouette", "lighting": "learn",
                                                                **_LOCAL},
    "local refinement (default)": {},
    "+ global stage": {"global_stage": True},
    "+ global stage without the heading recheck": {"global_stage": True, "global_recheck": False},
    "+ global stage, the recheck without the flip's mirror": {"global_stage": True, "global_recheck_mirror": False},
    "+ global stage without the prior-free second start": {"global_stage": True, "global_prior_free": False},
    "+ global stage, tied flips not freed": {"global_stage": True, "global_flip_tie": False},
    "+ global stage, partly hidden cars' flips at the plain margin": {"global_stage": True,
                                                                       "global_switch_margin_partial": None},
    "+ global stage without the prior-free polish": {"global_stage": True, "global_free_polish": None},
    "+ global stage without the small turns after a flip": {"global_stage": True, "global_stall_turns_deg": ()},
    "+ global stage without the depth search of poor fits": {"global_stage": True, "global_depth_search": ()},
    "+ global stage without the flip review": {"global_stage": True, "appearance_review": False},
    "+ global stage, contradicted neighbours still rendered": {"global_stage": True, "occluder_contradiction": None},
    "+ global stage, rejected refinements ignored": {"global_stage": True, "accept_partial_share": 0.0},
    "+ acceptance rule": {"accept_iou_drop": 0.02},
    "+ re-scoring": {"rescore": True},
    "+ ground plane": {"ground_plane": True},
    "all four": _ALL,
    "all but the global stage": {**_ALL, "global_stage": False},
    "all but the acceptance rule": {**_ALL, "accept_iou_drop": None},
    "all but re-scoring": {**_ALL, "rescore": False},
    "all but the ground plane": {**_ALL, "ground_plane": False},
}

# issue 12: what the shading term buys with the current light, the global stage on in every row (flips are
# decided there); `nmrlight ablation --parts shading` (docs/ablation.md)
_GLOBAL = {"global_stage": True, "accept_iou_drop": None, "rescore": False}
SHADING_SETTINGS: dict[str, dict] = {
    "silhouette + edges (default), global stage": {"losses": "silhouette", "lighting": "learn", **_GLOBAL},
    "+ one-albedo shading, learned light, global stage": {"losses": "both", "lighting": "learn", **_GLOBAL},
    "+ per-material shading, learned light, global stage": {"losses": "both", "lighting": "learn",
                                                            "shading_materials": True, **_GLOBAL},
    "+ per-material shading, fixed light, global stage": {"losses": "both", "lighting": "fixed",
                                                          "shading_materials": True, **_GLOBAL},
}


@dataclass
class GroupStats:
    setting: str
    group: str
    cars: int
    rot_before: float
    rot_after: float
    trans_before: float
    trans_after: float
    map_before: float
    map_after: float
    closer: float
    seconds_per_car: float
    flips_fixed: int = 0
    flips: int = 0
    flips_broken: int = 0
    map_ceiling: float = float("nan")   # mAP of the same detections at their true poses, detector's confidences
    worse: float = float("nan")         # share of cars that ended > 3 deg or > 2 % (translation) farther

    def to_dict(self) -> dict:
        return dict(self.__dict__)


# "closer": the combined error rotation / 1 deg + translation / 0.5 % went down; "worse": the translation
# error rose by more than 2 % (relative) or the rotation error by more than 3 deg (the accuracy issues' terms)
COUNTED_STATUSES = ("refined", "partly moved", "kept initial")  # cars refined against their mask: the ones measured
CLOSER_ROTATION_DEG = 1.0
CLOSER_TRANSLATION = 0.005
WORSE_TRANSLATION = 0.02
WORSE_ROTATION_DEG = 3.0


def ended_closer(rot_before, trans_before, rot_after, trans_after):
    """Whether the combined error went down (floats, or NumPy arrays elementwise)."""
    return (rot_after / CLOSER_ROTATION_DEG + trans_after / CLOSER_TRANSLATION
            < rot_before / CLOSER_ROTATION_DEG + trans_before / CLOSER_TRANSLATION)


def ended_worse(rot_before, trans_before, rot_after, trans_after):
    """Whether a car ended more than 2 % (translation) or 3 deg farther than it started (floats or arrays)."""
    return (trans_after - trans_before > WORSE_TRANSLATION) | (rot_after - rot_before > WORSE_ROTATION_DEG)


def car_errors(pred: CarPose, gt: CarPose) -> tuple[float, float]:
    """(metric rotation error in degrees, relative translation error)."""
    rot = float(metric_rotation_error_deg(np.asarray(pred.rotation), np.asarray(gt.rotation)))
    t, g = np.asarray(pred.translation), np.asarray(gt.translation)
    return rot, float(np.linalg.norm(t - g) / np.linalg.norm(g))


def paired_truth(truth: dict[str, list[CarPose]], pairing: dict[str, list[int]] | None, image_id: str,
                 k: int) -> CarPose | None:
    """The true car prediction k of `image_id` was made from (`pairing[image][k]` its truth row, -1 a
    false positive; None: rows aligned), or None when it was made from none."""
    gts = truth.get(image_id, [])
    t = pairing[image_id][k] if pairing is not None else k
    return gts[t] if 0 <= t < len(gts) else None


def _split(poses: dict[str, list[CarPose]], near: float, keep_near: bool | None) -> dict[str, list[CarPose]]:
    """The cars nearer than `near` (keep_near True), the others (False), or all of them (None)."""
    if keep_near is None:
        return poses
    return {i: [c for c in cars if (c.translation[2] < near) == keep_near] for i, cars in poses.items()}


def group_stats(setting: str, truth: dict[str, list[CarPose]], before: dict[str, list[CarPose]],
                after: dict[str, list[CarPose]], seconds: dict[str, list[float]], near: float,
                pairing: dict[str, list[int]] | None = None, overall: bool = False) -> list[GroupStats]:
    """Per depth group, and over all cars when `overall` (the issue's mAP target is on every annotated
    car); `pairing[image][k]` is the truth row of prediction k (-1: a false positive; None: rows aligned)."""
    out = []
    groups: list[tuple[str, bool | None]] = [(f"< {near:g} m", True), (f">= {near:g} m", False)]
    for group, keep in groups + ([("all", None)] if overall else []):
        rows, secs = [], []
        for image_id, preds in before.items():
            for k in range(len(preds)):
                g = paired_truth(truth, pairing, image_id, k)
                if g is None:
                    continue
                if keep is not None and (g.translation[2] < near) != keep:
                    continue
                if seconds[image_id][k] <= 0:  # not refined (no mask, not visible): left out
                    continue
                rows.append((*car_errors(preds[k], g), *car_errors(after[image_id][k], g)))
                secs.append(seconds[image_id][k])
        if not rows:
            continue
        r = np.asarray(rows)
        gt_g = _split(truth, near, keep)
        m_before = evaluate(gt_g, _split(before, near, keep)).map
        m_after = evaluate(gt_g, _split(after, near, keep)).map
        m_ceiling = evaluate(gt_g, _split(ceiling_poses(truth, before, pairing), near, keep)).map
        out.append(GroupStats(setting, group, len(r), float(np.median(r[:, 0])), float(np.median(r[:, 2])),
                              float(np.median(r[:, 1])), float(np.median(r[:, 3])), m_before, m_after,
                              float(np.mean(ended_closer(*r.T))),
                              float(np.mean(secs)), int(np.sum((r[:, 0] > 90) & (r[:, 2] < 90))),
                              int(np.sum(r[:, 0] > 90)), int(np.sum((r[:, 0] <= 90) & (r[:, 2] > 90))),
                              m_ceiling, float(np.mean(ended_worse(*r.T)))))
    return out


def prediction_positions(image_id: str, result, predictions: list[CarPose]) -> list[int]:
    """For each car of `result` (an ImageResult), the row of the data set's predictions it was made from,
    found by its initial translation: a run given the submission file has the cars in that file's order,
    which is not predictions.csv's (a real submission is in no particular order)."""
    used: set[int] = set()
    out = []
    for k, car in enumerate(result.cars):
        t = np.asarray(car.initial.translation, float)
        match = [j for j, p in enumerate(predictions) if j not in used
                 and np.max(np.abs(np.asarray(p.translation, float) - t)) <= 1e-5 * max(1.0, float(np.abs(t).max()))]
        if not match:
            shown = tuple(round(float(x), 3) for x in t)
            raise NmrlightError(f"image {image_id}: car {k} (initial translation {shown}) is no row of the data "
                                "set's predictions: was the run made from this data folder?")
        used.add(match[0])
        out.append(match[0])
    return out


def ceiling_poses(truth: dict[str, list[CarPose]], predictions: dict[str, list[CarPose]],
                  pairing: dict[str, list[int]] | None) -> dict[str, list[CarPose]]:
    """The mAP's ceiling: each detection at the pose of the true car it was made from, with the
    detector's confidence; false positives (paired with none) stay as they are."""
    out = {}
    for image_id, preds in predictions.items():
        rows = []
        for k, p in enumerate(preds):
            g = paired_truth(truth, pairing, image_id, k)
            rows.append(p if g is None else CarPose(p.model_type, g.rotation, g.translation, p.confidence))
        out[image_id] = rows
    return out


def run_setting(data: DataFolder, predictions: dict[str, list[CarPose]], config: RefineConfig,
                progress: Callable[[], None] | None = None
                ) -> tuple[dict[str, list[CarPose]], dict[str, list[float]]]:
    """Every photograph refined with `config`, then (as `run_refine` does) the flip ties judged."""
    from nmrlight.refine.appearance import review_flip_ties

    results, seconds = {}, {}
    for image_id, cars in predictions.items():
        results[image_id] = refine_image(data, image_id, cars, config)
        seconds[image_id] = [c.seconds for c in results[image_id].cars]
        if progress is not None:
            progress()
    if config.appearance_review:
        review_flip_ties([(data, r) for r in results.values()], config)
    return {i: r.refined_poses() for i, r in results.items()}, seconds


def run_ablation(data: DataFolder, truth: dict[str, list[CarPose]], predictions: dict[str, list[CarPose]],
                 base: RefineConfig, settings: dict[str, dict] | None = None, near: float = 40.0,
                 progress: Callable[[], None] | None = None, pairing: dict[str, list[int]] | None = None
                 ) -> list[GroupStats]:
    rows = []
    for name, overrides in (settings or SETTINGS).items():
        refined, seconds = run_setting(data, predictions, replace(base, **overrides), progress)
        rows.extend(group_stats(name, truth, predictions, refined, seconds, near, pairing, overall=True))
    return rows


def read_pairing(folder) -> dict[str, list[int]] | None:
    """`prediction_truth` of a synthetic folder's coco/truth.json (None when it has none)."""
    import json
    from pathlib import Path

    path = Path(folder) / "coco" / "truth.json"
    if not path.is_file():
        return None
    return {k: [int(t) for t in v["prediction_truth"]] for k, v in json.loads(path.read_text())["images"].items()}


def markdown_table(rows: list[GroupStats]) -> str:
    lines = ["| setting | cars | n | median rot (deg) before -> after | median transl. (%) before -> after "
             "| mAP before -> after (ceiling) | closer | worse | flips fixed | correct flipped | s / car |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r.setting} | {r.group} | {r.cars} | {r.rot_before:.2f} -> {r.rot_after:.2f} | "
                     f"{100 * r.trans_before:.2f} -> {100 * r.trans_after:.2f} | {r.map_before:.3f} -> "
                     f"{r.map_after:.3f} ({r.map_ceiling:.3f}) | {100 * r.closer:.0f} % | {100 * r.worse:.0f} % | "
                     f"{r.flips_fixed}/{r.flips} | {r.flips_broken} | {r.seconds_per_car:.2f} |")
    return "\n".join(lines)
