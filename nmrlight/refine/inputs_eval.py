"""Measure refinement runs on synthetic detector output against the truth (docs/inputs.md).

    python -m nmrlight.refine.inputs_eval DATA train:OUT_A submission:OUT_B ... [--near 40]
    python -m nmrlight.refine.inputs_eval DATA --associate train|submission   (association alone, fast)

DATA is a folder written by `nmrlight synth` (train.csv, predictions.csv, coco/truth.json); each run
is `FORMAT:OUT`, the predictions format the run was given (train: the rows of predictions.csv,
submission: those of predictions_submission.csv) and its output folder. Per run and distance band:
cars, median rotation and translation error before and after, mAP of the refined file, and for runs
with COCO masks the share of cars with a mask that got their own, and for runs that chose meshes the
share whose mesh is the true one. Every detected car of a true car counts (cars left unrefined keep
the detector's pose), so two runs are compared on the same cars. s / car: the images' refinement time
(all steps) over their cars.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from nmrlight.io.poses import read_poses
from nmrlight.metric import evaluate
from nmrlight.refine.ablation import car_errors


def _rows(data: Path, fmt: str, out: Path, near: float, only: set[str] | None) -> list[dict]:
    truth = read_poses(data / "train.csv")
    info = json.loads((data / "coco" / "truth.json").read_text())
    masks_of = {}  # (ImageId, predictions position) -> annotation id
    for ann_id, a in info["annotations"].items():
        if a["prediction_index"] >= 0:
            masks_of[(a["image"], a["prediction_index"])] = ann_id
    # a results-format file has no annotation ids: its entries are instances.json's annotations in order
    instances = json.loads((data / "coco" / "instances.json").read_text())["annotations"]
    rows = []
    for path in sorted((out / "images").glob("*.json")):
        if only is not None and path.stem not in only:
            continue
        result = json.loads(path.read_text())
        image_id = result["image_id"]
        per_car = result["seconds"] / max(1, len(result["cars"]))
        meta = info["images"][image_id]
        for car in result["cars"]:
            k = car["index"]
            position = meta["submission_order"][k] if fmt == "submission" else k
            t = meta["prediction_truth"][position]
            if t < 0:
                continue  # a false positive: no truth to measure against
            gt = truth[image_id][t]
            before = _pose(car["initial"])
            after = _pose(car["refined"])
            assoc = car.get("extra", {}).get("association")
            own = masks_of.get((image_id, position))
            got = None
            if assoc not in (None, "no mask"):
                got = str(assoc["id"] if assoc.get("id") is not None else instances[assoc["entry"]]["id"])
            rows.append({
                "near": gt.translation[2] < near, "before": car_errors(before, gt), "after": car_errors(after, gt),
                "has_mask": own is not None, "assoc_known": assoc is not None, "assoc_ok": got == own,
                "model_ok": after.model_type == gt.model_type, "seconds": per_car,
                "chose": "losses" in car.get("extra", {}).get("mesh_choice", {}),
            })
    return rows


def _pose(d: dict):
    from nmrlight.refine.result import _pose_from_dict

    return _pose_from_dict(d)


def summarise(data: Path, fmt: str, out: Path, near: float = 40.0, only: set[str] | None = None) -> list[dict]:
    """One dict per distance band (and all cars) of one run, on the images `only` (default all)."""
    rows = _rows(data, fmt, out, near, only)
    truth = read_poses(data / "train.csv")
    if (out / "refined.csv").is_file():
        refined = read_poses(out / "refined.csv")
    else:  # a run still going: its finished images
        from nmrlight.refine.result import ImageResult

        refined = {p.stem: ImageResult.from_dict(json.loads(p.read_text())).refined_poses()
                   for p in (out / "images").glob("*.json")}
    if only is not None:
        refined = {i: c for i, c in refined.items() if i in only}
    given = read_poses(data / "predictions_submission.csv", submission=True) if fmt == "submission" else \
        read_poses(data / "predictions.csv")
    m = evaluate({i: truth[i] for i in refined}, refined).map
    m0 = evaluate({i: truth[i] for i in refined}, {i: given[i] for i in refined}).map
    table = []
    for band, keep in ((f"< {near:g} m", lambda r: r["near"]), (f">= {near:g} m", lambda r: not r["near"]),
                       ("all", lambda r: True)):
        rs = [r for r in rows if keep(r)]
        if not rs:
            continue
        b, a = np.array([r["before"] for r in rs]), np.array([r["after"] for r in rs])
        masked = [r for r in rs if r["has_mask"] and r["assoc_known"]]
        chose = [r for r in rs if r["chose"]]
        table.append({
            "run": str(out), "format": fmt, "band": band, "cars": len(rs),
            "rot_before": float(np.median(b[:, 0])), "rot_after": float(np.median(a[:, 0])),
            "trans_before": float(np.median(b[:, 1])), "trans_after": float(np.median(a[:, 1])),
            "map_before_all": m0, "map_after_all": m,
            "association": (sum(r["assoc_ok"] for r in masked) / len(masked)) if masked else None,
            "cars_with_mask": len(masked),
            "exact_model": (sum(r["model_ok"] for r in chose) / len(chose)) if chose else None,
            "cars_chosen": len(chose),
            "seconds_per_car": float(np.mean([r["seconds"] for r in rs])),
        })
    return table


def association_only(data: Path, fmt: str, near: float = 40.0) -> dict:
    """Associate DATA/coco/instances.json with the predictions (train: predictions.csv, submission:
    predictions_submission.csv) at the initial poses, without refining: share of the cars with a mask
    that got their own, near and far."""
    from nmrlight.io.dataset import DataFolder
    from nmrlight.refine.config import RefineConfig
    from nmrlight.refine.prepare import image_masks, pose_cars

    folder = DataFolder(data)
    info = json.loads((data / "coco" / "truth.json").read_text())
    truth = read_poses(data / "train.csv")
    own = {(a["image"], a["prediction_index"]): ann for ann, a in info["annotations"].items()
           if a["prediction_index"] >= 0}
    predictions = read_poses(data / "predictions_submission.csv", submission=True) if fmt == "submission" \
        else read_poses(data / "predictions.csv")
    config = RefineConfig(masks_file=str(data / "coco" / "instances.json"))  # its annotations carry ids
    counts = {"near": [0, 0], "far": [0, 0]}
    for image_id, cars in predictions.items():
        height, width = folder.read_image(image_id).shape
        camera = folder.camera(width, height)
        state = pose_cars(folder, cars, camera, config)
        image_masks(folder, image_id, state, camera, (height, width), config)
        meta = info["images"][image_id]
        for car in state:
            position = meta["submission_order"][car.index] if fmt == "submission" else car.index
            mask = own.get((image_id, position))
            if mask is None:
                continue
            found = car.extra["association"]
            band = "near" if truth[image_id][meta["prediction_truth"][position]].translation[2] < near else "far"
            counts[band][0] += found != "no mask" and str(found["id"]) == mask
            counts[band][1] += 1
    return counts


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data", type=Path)
    parser.add_argument("runs", nargs="*", help="FORMAT:OUT, FORMAT train or submission")
    parser.add_argument("--near", type=float, default=40.0)
    parser.add_argument("--associate", choices=("train", "submission"), help="association alone, no runs")
    args = parser.parse_args(argv)
    if args.associate:
        counts = association_only(args.data, args.associate, args.near)
        for band, (ok, total) in counts.items():
            print(f"association ({args.associate}, {band}): {ok} of {total} cars with a mask got their own")
        ok, total = (sum(v) for v in zip(*counts.values(), strict=True))
        print(f"association ({args.associate}, all): {ok} of {total} = {100 * ok / max(total, 1):.1f} %")
        return
    runs = [(spec.partition(":")[0], Path(spec.partition(":")[2])) for spec in args.runs]
    done = [{p.stem for p in (out / "images").glob("*.json")} for _, out in runs]
    only = set.intersection(*done) if done else set()
    print(f"{len(only)} images done by every run")
    print("| run | format | cars | n | median rot (deg) before -> after | median transl. (%) before -> after "
          "| mAP (all cars) before -> after | association | exact model | s / car |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for fmt, out in runs:
        for r in summarise(args.data, fmt, out, args.near, only):
            assoc = "-" if r["association"] is None else f"{100 * r['association']:.1f} % of {r['cars_with_mask']}"
            exact = "-" if r["exact_model"] is None else f"{100 * r['exact_model']:.0f} % of {r['cars_chosen']}"
            print(f"| {Path(out).name} | {fmt} | {r['band']} | {r['cars']} | {r['rot_before']:.2f} -> "
                  f"{r['rot_after']:.2f} | {100 * r['trans_before']:.2f} -> {100 * r['trans_after']:.2f} | "
                  f"{r['map_before_all']:.3f} -> {r['map_after_all']:.3f} | {assoc} | {exact} | "
                  f"{r['seconds_per_car']:.2f} |")


if __name__ == "__main__":
    main()
