"""Measure refinement runs by how much of each car the picture shows (crowded photographs, docs/crowded.md).

    python -m nmrlight.refine.visibility_eval DATA OUT [OUT ...] [--markdown]
    python -m nmrlight.refine.visibility_eval --pool DATA OUT [DATA OUT ...] [--markdown]

DATA is a folder written by `nmrlight synth` with a visibility.csv (the kaggle and crowded presets);
each OUT a `nmrlight refine DATA -p DATA/predictions.csv` output folder (refined.csv and images/*.json,
or the finished images of a run still going). Every detection of a true car that was refined (it had
mask pixels) counts, banded by the true car's visible fraction (< 30 %, 30-70 %, > 70 %) and in all:
median rotation and translation error before and after, the share that ended closer (combined error
rot / 1 deg + translation / 0.5 % went down) and the share that ended worse by more than 2 %
(translation) or 3 deg (rotation). mAP (official metric, every annotated car, false positives included)
of the detector's poses, the refined ones (as the run wrote them, and re-scored: the confidences
`--rescore` writes, whether or not the run used it, and ranked as well as any confidence could rank
them: `ranked_poses`), and the ceiling: the same detections with their true poses and the detector's
confidences (false positives kept where they were). `--pool` measures the runs of several data sets
(seeds) as one: a hundred cars a seed is too few to tell a rule from noise.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from nmrlight.errors import NmrlightError
from nmrlight.io.poses import CarPose, read_poses
from nmrlight.metric import evaluate
from nmrlight.refine.ablation import (
    car_errors,
    ended_closer,
    ended_worse,
    paired_truth,
    prediction_positions,
    read_pairing,
)
from nmrlight.refine.outdir import load_results
from nmrlight.refine.result import ImageResult
from nmrlight.refine.targets import rows_and_maps
from nmrlight.synth.visibility import BANDS, band, read_visibility


def _results_in_prediction_order(out: Path, predictions: dict[str, list[CarPose]]) -> dict[str, ImageResult]:
    """The finished images of `out`, each one's cars put in the order of `predictions` (a run given the
    submission file holds its cars in that file's order: `prediction_positions`)."""
    results, bad = load_results(out)
    if bad:
        raise NmrlightError(f"{out}: unreadable image results ({'; '.join(bad[:3])})")
    for result in results:
        if result.image_id not in predictions or len(result.cars) != len(predictions[result.image_id]):
            raise NmrlightError(f"{out}: the cars of {result.image_id} are not the rows of the data set's "
                                "predictions")
        order = prediction_positions(result.image_id, result, predictions[result.image_id])
        result.cars = [car for _, car in sorted(zip(order, result.cars, strict=True), key=lambda x: x[0])]
    return {result.image_id: result for result in results}


def ranked_poses(truth: dict[str, list[CarPose]], refined: dict[str, list[CarPose]],
                 pairing: dict[str, list[int]] | None) -> dict[str, list[CarPose]]:
    """The refined poses ranked as well as any confidence could rank them: by how many of the metric's
    threshold pairs each meets against its true car (ties by the given confidence), false positives last.

    The pairs are nested (each looser in rotation and translation than the next), so this order puts
    every threshold's true positives before its false ones at once: its mAP bounds what re-scoring the
    same poses can reach, and the rest of the gap to the ceiling is in the poses."""
    from dataclasses import replace

    from nmrlight.metric import ROTATION_THRESHOLDS_DEG, TRANSLATION_THRESHOLDS

    pairs = list(zip(TRANSLATION_THRESHOLDS, ROTATION_THRESHOLDS_DEG, strict=True))
    out = {}
    for image_id, cars in refined.items():
        rows = []
        for k, car in enumerate(cars):
            true_car = paired_truth(truth, pairing, image_id, k)
            met = 0
            if true_car is not None:
                rot, trans = car_errors(car, true_car)
                met = sum(trans < max_t and rot < max_r for max_t, max_r in pairs)
            tie = min(max(float(car.confidence), 0.0), 1.0)
            rows.append(replace(car, confidence=(met + 0.5 * tie) / (len(pairs) + 1)))
        out[image_id] = rows
    return out


def _cars_and_maps(data: Path, out: Path) -> tuple[list[tuple], dict[str, float], int, float]:
    """The run in `out` on its finished images: one row per refined detection of a true car (band,
    errors before and after, renders: `targets.rows_and_maps`'s cars), the mAPs, the number of images and
    the seconds a car."""
    from dataclasses import replace

    from nmrlight.refine.rescore import rescored

    truth = read_poses(data / "train.csv")
    predictions = read_poses(data / "predictions.csv")
    pairing = read_pairing(data)
    results = _results_in_prediction_order(out, predictions)
    counted, set_maps = rows_and_maps(str(data), truth, predictions, results, pairing,
                                      read_visibility(data / "visibility.csv"))
    rows = [(band(r.visible), r.rot_before, r.trans_before, r.rot_after, r.trans_after, r.renders) for r in counted]
    images = list(results)
    gt = {i: truth.get(i, []) for i in images}
    refined = {i: results[i].refined_poses() for i in images}
    rescored_poses = {i: [replace(c.refined, confidence=rescored(c)) for c in results[i].cars] for i in images}
    maps = {"map_before": set_maps.before, "map_after": set_maps.after,
            "map_rescored": evaluate(gt, rescored_poses).map,
            "map_ranked": evaluate(gt, ranked_poses(truth, refined, pairing)).map,
            "map_ceiling": set_maps.ceiling}
    cars = sum(len(r.cars) for r in results.values())
    return rows, maps, len(images), sum(r.seconds for r in results.values()) / max(cars, 1)


def band_table(run: str, rows: list[tuple], maps: dict[str, float], images: int, seconds: float) -> list[dict]:
    """One dict per visible-fraction band (and all) of the per-car `rows` (`_cars_and_maps`)."""
    table = []
    for name in [b for _, _, b in BANDS] + ["all"]:
        rs = [r[1:] for r in rows if name in ("all", r[0])]
        if not rs:
            continue
        r = np.asarray(rs)
        closer = ended_closer(r[:, 0], r[:, 1], r[:, 2], r[:, 3])
        worse = ended_worse(r[:, 0], r[:, 1], r[:, 2], r[:, 3])
        table.append({"run": run, "band": name, "cars": len(r),
                      "rot_before": float(np.median(r[:, 0])), "rot_after": float(np.median(r[:, 2])),
                      "trans_before": float(np.median(r[:, 1])), "trans_after": float(np.median(r[:, 3])),
                      "closer": float(closer.mean()), "worse": float(worse.mean()),
                      "renders_per_car": float(r[:, 4].mean()),
                      "images": images, "seconds_per_car": seconds, **maps})
    return table


def summarise(data: Path, out: Path) -> list[dict]:
    """One dict per visible-fraction band (and all) of the run in `out`, on its finished images."""
    return band_table(str(out), *_cars_and_maps(data, out))


def pooled(pairs: list[tuple[Path, Path]]) -> list[dict]:
    """The runs of several data sets (DATA, OUT) as one: the car statistics over all their cars, each
    mAP (and its ceiling) the mean of the data sets' (an mAP ranks within one data set's pictures)."""
    measured = [_cars_and_maps(data, out) for data, out in pairs]
    rows = [row for m in measured for row in m[0]]
    maps = {key: float(np.mean([m[1][key] for m in measured])) for key in measured[0][1]}
    cars = [max(len(m[0]), 1) for m in measured]
    seconds = float(np.average([m[3] for m in measured], weights=cars))
    name = f"pooled ({', '.join(out.name for _, out in pairs)})"
    return band_table(name, rows, maps, sum(m[2] for m in measured), seconds)


def markdown(rows: list[dict]) -> str:
    lines = ["| run | visible | cars | median rot (deg) before -> after | median transl. (%) before -> after "
             "| closer | worse by > 2 % or 3 deg | mAP before -> after, re-scored, best ranking (ceiling) "
             "| renders / car | s / car |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {Path(r['run']).name} | {r['band']} | {r['cars']} | {r['rot_before']:.2f} -> "
                     f"{r['rot_after']:.2f} | {100 * r['trans_before']:.2f} -> {100 * r['trans_after']:.2f} | "
                     f"{100 * r['closer']:.0f} % | {100 * r['worse']:.1f} % | {r['map_before']:.3f} -> "
                     f"{r['map_after']:.3f}, {r['map_rescored']:.3f}, {r['map_ranked']:.3f} ({r['map_ceiling']:.3f}) | "
                     f"{r['renders_per_car']:.0f} | "
                     f"{r['seconds_per_car']:.2f} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("data", type=Path)
    parser.add_argument("runs", type=Path, nargs="+")
    parser.add_argument("--markdown", action="store_true")
    parser.add_argument("--pool", action="store_true",
                        help="the arguments are DATA OUT pairs of several data sets, measured as one")
    args = parser.parse_args(argv)
    try:
        if args.pool:
            paths = [args.data, *args.runs]
            if len(paths) % 2:
                parser.error("--pool takes DATA OUT pairs")
            rows = pooled(list(zip(paths[::2], paths[1::2], strict=True)))
        else:
            rows = [row for run in args.runs for row in summarise(args.data, run)]
    except NmrlightError as error:
        raise SystemExit(f"error: {error}") from None
    print(markdown(rows) if args.markdown else json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
