"""Measure refinement runs on synthetic detector output against the truth (docs/inputs.md).

    python -m nmrlight.refine.inputs_eval DATA train:OUT_A submission:OUT_B ... [--near 40]

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


def _rows(data: Path, fmt: str, out: Path, near: float) -> list[dict]:
    truth = read_poses(data / "train.csv")
    info = json.loads((data / "coco" / "truth.json").read_text())
    masks_of = {}  # (ImageId, predictions position) -> annotation id
    for ann_id, a in info["annotations"].items():
        if a["prediction_index"] >= 0:
            masks_of[(a["image"], a["prediction_index"])] = ann_id
    rows = []
    for path in sorted((out / "images").glob("*.json")):
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
            got = None if assoc in (None, "no mask") else str(assoc.get("id"))
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


def summarise(data: Path, fmt: str, out: Path, near: float = 40.0) -> list[dict]:
    """One dict per distance band (and all cars) of one run."""
    rows = _rows(data, fmt, out, near)
    truth = read_poses(data / "train.csv")
    refined = read_poses(out / "refined.csv")
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


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data", type=Path)
    parser.add_argument("runs", nargs="+", help="FORMAT:OUT, FORMAT train or submission")
    parser.add_argument("--near", type=float, default=40.0)
    args = parser.parse_args(argv)
    print("| run | format | cars | n | median rot (deg) before -> after | median transl. (%) before -> after "
          "| mAP (all cars) before -> after | association | exact model | s / car |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for spec in args.runs:
        fmt, _, out = spec.partition(":")
        for r in summarise(args.data, fmt, Path(out), args.near):
            assoc = "-" if r["association"] is None else f"{100 * r['association']:.1f} % of {r['cars_with_mask']}"
            exact = "-" if r["exact_model"] is None else f"{100 * r['exact_model']:.0f} % of {r['cars_chosen']}"
            print(f"| {Path(out).name} | {fmt} | {r['band']} | {r['cars']} | {r['rot_before']:.2f} -> "
                  f"{r['rot_after']:.2f} | {100 * r['trans_before']:.2f} -> {100 * r['trans_after']:.2f} | "
                  f"{r['map_before_all']:.3f} -> {r['map_after_all']:.3f} | {assoc} | {exact} | "
                  f"{r['seconds_per_car']:.2f} |")


if __name__ == "__main__":
    main()
