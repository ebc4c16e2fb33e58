"""Near cars only: how a run's masks and settings change the refined poses of the cars nearer than NEAR m.

    NEAR=40 python benchmarks/inputs_near.py DATA T|A IMAGE_NUMBERS '{"mask_quality": "fine"}' OUT.json

DATA: a folder of `nmrlight synth` (coco/truth.json needed). A: train format + the label masks of
masks/; T: train format + the segmenter's unordered coco/instances.json (associated). Cars at NEAR m
or more keep the detector's pose (refined in no run, so they are the same neighbours in every run),
which makes a comparison of mask handling on near cars about twice as cheap as a whole run. The JSON
holds RefineConfig overrides. Prints median errors per band and writes one row a car to OUT.json
(compare two runs car by car on the cars both refined). Two worker processes, one thread each.
"""

from __future__ import annotations

import json
import os
import sys
import time
from dataclasses import replace
from multiprocessing import Pool
from pathlib import Path

import numpy as np

NEAR = float(os.environ.get("NEAR", "1e9"))


def _work(args: tuple[str, str, str, dict]) -> tuple[list[dict], float]:
    data_dir, mode, image_id, overrides = args
    import torch

    import nmrlight.refine.image as image
    from nmrlight.io.dataset import DataFolder
    from nmrlight.io.poses import read_poses
    from nmrlight.refine.ablation import car_errors
    from nmrlight.refine.config import RefineConfig
    from nmrlight.refine.pose import PoseOutcome, refine_pose

    torch.set_num_threads(1)

    def near_only(problem, lighting, config, frame=None):
        if float(problem.translation[2]) >= NEAR:
            return PoseOutcome(problem.rotation, problem.translation, 0.0, 0.0, 0.0, 0.0, 0, False, 0.0)
        return refine_pose(problem, lighting, config, frame)

    image.refine_pose = near_only
    root = Path(data_dir)
    config = RefineConfig(threads=1, **overrides)
    if mode == "T":
        config = replace(config, masks_file=str(root / "coco" / "instances.json"))
    truth = read_poses(root / "train.csv")
    info = json.loads((root / "coco" / "truth.json").read_text())["images"][image_id]
    start = time.process_time()
    result = image.refine_image(DataFolder(root), image_id, read_poses(root / "predictions.csv")[image_id], config)
    rows = []
    for car in result.cars:
        t = info["prediction_truth"][car.index]
        if t < 0:
            continue
        gt = truth[image_id][t]
        rows.append({"image": image_id, "truth": t, "z": float(gt.translation[2]), "status": car.status,
                     "before": car_errors(car.initial, gt), "after": car_errors(car.refined, gt),
                     "offset": car.extra.get("mask_offset_px")})
    return rows, time.process_time() - start


def main() -> None:
    data_dir, mode, numbers, overrides, out = sys.argv[1:6]
    ids = [f"ID_synth_{int(i):06d}" for i in numbers.split(",")]
    with Pool(2) as pool:
        done = pool.map(_work, [(data_dir, mode, i, json.loads(overrides)) for i in ids], chunksize=1)
    rows = [r for part, _ in done for r in part]
    Path(out).write_text(json.dumps(rows))
    for band, keep in (("near", lambda r: r["z"] < NEAR), ("all", lambda r: True)):
        sel = [r for r in rows if keep(r)]
        print(f"{mode} {overrides} {band}: {len(sel)} cars, median rotation "
              f"{np.median([r['after'][0] for r in sel]):.2f} deg, translation "
              f"{100 * np.median([r['after'][1] for r in sel]):.2f} %")
    print(f"cpu {sum(c for _, c in done):.1f} s")


if __name__ == "__main__":
    main()
