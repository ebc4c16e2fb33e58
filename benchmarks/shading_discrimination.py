"""Does a loss setting tell the true pose from a wrong one? (issue 12 item 4, docs/lighting.md)

For every detected car of a synthetic data folder that pairs with a true car (kaggle preset:
coco/truth.json), the car is posed at the TRUTH, with the detector's mask, the photo, and the other
cars at their true poses; the last refinement stage's loss (prior off) is evaluated at the truth and
at wrong poses: heading turned 180 deg (a front/back flip), heading +-10 deg, pitch +-5 deg (turns
about the car's own vertical and lateral axes). A setting "decides" a pair when the truth scores
lower. No optimisation runs: this isolates what each term knows, at ~1 s a car, where the
ablation (`nmrlight ablation --parts losses`) also mixes in the optimiser's basin.

    PYTHONPATH=. python benchmarks/shading_discrimination.py DATA [--images N] [--json OUT]
"""

from __future__ import annotations

import argparse
import json
import math
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from nmrlight.io.dataset import DataFolder
from nmrlight.io.poses import CarPose, read_poses
from nmrlight.refine.ablation import SETTINGS, read_pairing
from nmrlight.refine.car_view import evaluate as _evaluate
from nmrlight.refine.config import RefineConfig
from nmrlight.refine.image import _fit_lighting, _fixed
from nmrlight.refine.occluders import neighbours
from nmrlight.refine.pose import CarProblem, Neighbour, PoseParams, car_stages
from nmrlight.refine.prepare import attach_masks, image_masks, pose_cars
from nmrlight.refine.window import crop, make_view, signed_distance

COMPARED = {  # the ablation's settings, and the shading terms alone (no silhouette, no edges)
    "silhouette + edges": SETTINGS["silhouette + edges"],
    "both + edges, learned lighting": SETTINGS["both + edges, learned lighting"],
    "both + edges, materials, learned lighting": SETTINGS["both + edges, materials, learned lighting"],
    "shading alone, one albedo (learned light)": {"losses": "grayscale", "lighting": "learn", "weight_edges": 0.0},
    "shading alone, materials (learned light)": {"losses": "grayscale", "lighting": "learn", "weight_edges": 0.0,
                                                  "shading_materials": True},
}
WRONG = {"flip 180": (math.pi, 0.0), "heading +10": (math.radians(10), 0.0), "heading -10": (-math.radians(10), 0.0),
         "pitch +5": (0.0, math.radians(5)), "pitch -5": (0.0, -math.radians(5))}


def _turn(rotation: torch.Tensor, heading: float, pitch: float) -> torch.Tensor:
    """The car turned about its own vertical (object y) and lateral (object x) axes."""
    ch, sh, cp, sp = math.cos(heading), math.sin(heading), math.cos(pitch), math.sin(pitch)
    ry = torch.tensor([[ch, 0.0, sh], [0.0, 1.0, 0.0], [-sh, 0.0, ch]])
    rx = torch.tensor([[1.0, 0.0, 0.0], [0.0, cp, -sp], [0.0, sp, cp]])
    return rotation @ ry @ rx


def _loss(rotation: torch.Tensor, translation: torch.Tensor, problem: CarProblem, stage: tuple, light,
          setting: RefineConfig) -> float:
    """The last stage's loss of the car at this pose (no optimisation)."""
    view, edges, sigma = stage
    params = PoseParams(rotation, translation, problem.camera)
    with torch.no_grad():
        return float(_evaluate(params, problem, view, light, setting, edges, sigma)[0])


def image_rows(data: DataFolder, image_id: str, cars: list[CarPose], config: RefineConfig, near: float
               ) -> list[dict]:
    """One row a (paired, refinable) car and wrong pose: the loss at the truth and there, per setting."""
    photo = data.read_image(image_id, "gray")
    height, width = photo.shape
    camera = data.camera(width, height)
    state = pose_cars(data, cars, camera, config)
    masks = image_masks(data, image_id, state, camera, (height, width), config)
    if masks.labels is None:
        return []
    attach_masks(state, masks, camera, config)
    learned, _ = _fit_lighting(state, camera, photo, masks.labels, config, final=False)
    lights = {"learn": learned.lighting() if learned is not None else _fixed(config), "fixed": _fixed(config)}
    rows = []
    for car in state:
        if car.status != "refined" or car.pose.confidence < 0:   # negative confidence: a false positive
            continue
        others = [Neighbour(n.vertices, n.faces, n.rotation, n.translation)
                  for n in neighbours(car, state, config.max_neighbours)]
        problem = CarProblem(car.vertices, car.faces, car.rotation, car.translation, camera, car.window,
                             crop(photo, car.window), car.mask, car.ignore, others)
        size, edges, sigma, _ = car_stages(config, car.window)[-1]
        view = make_view(camera, car.window, size, problem.photo, problem.mask, problem.hidden, config.erode_pixels,
                         sigma if edges == "analytic" else 0.0, sdf=signed_distance(problem.mask))
        band = "near" if float(car.translation[2]) < near else "far"
        for name, overrides in COMPARED.items():
            setting = replace(config, **overrides, prior_weight=0.0)
            light = lights[setting.lighting]

            stage = (view, edges, sigma)
            truth = _loss(car.rotation, car.translation, problem, stage, light, setting)
            for wrong, (dh, dp) in WRONG.items():
                other = _loss(_turn(car.rotation, dh, dp), car.translation, problem, stage, light, setting)
                rows.append({"image": image_id, "car": car.index, "band": band, "setting": name, "wrong": wrong,
                             "truth": truth, "other": other})
    return rows


def truth_cars(truth: list[CarPose], predictions: list[CarPose], pairing: list[int] | None) -> list[CarPose]:
    """The prediction rows (their masks follow them) posed at their paired truth; false positives get
    confidence -1 and keep the detector's pose (they stay as neighbours)."""
    out = []
    for k, p in enumerate(predictions):
        t = pairing[k] if pairing is not None else k
        if 0 <= t < len(truth):
            out.append(replace(truth[t], confidence=1.0))
        else:
            out.append(replace(p, confidence=-1.0))
    return out


def summary(rows: list[dict]) -> str:
    lines = ["| setting | band | cars | flips decided | +-10 deg heading decided | +-5 deg pitch decided |",
             "|---|---|---|---|---|---|"]
    for name in COMPARED:
        for band in ("near", "far", "all"):
            sel = [r for r in rows if r["setting"] == name and (band == "all" or r["band"] == band)]
            if not sel:
                continue
            cars = len({(r["image"], r["car"]) for r in sel})

            def share(prefix: str, sel=sel) -> str:
                hits = [r["truth"] < r["other"] for r in sel if r["wrong"].startswith(prefix)]
                return f"{sum(hits)}/{len(hits)} ({100 * np.mean(hits):.0f} %)"

            lines.append(f"| {name} | {band} | {cars} | {share('flip')} | {share('heading')} | {share('pitch')} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data", type=Path)
    parser.add_argument("--images", type=int, default=0, help="first N images (0: all)")
    parser.add_argument("--near", type=float, default=40.0)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    torch.set_num_threads(1)
    data = DataFolder(args.data)
    truth, predictions = read_poses(args.data / "train.csv"), read_poses(args.data / "predictions.csv")
    pairing = read_pairing(args.data)
    ids = sorted(predictions)[: args.images or None]
    config = RefineConfig(threads=1)
    rows = []
    for image_id in ids:
        cars = truth_cars(truth.get(image_id, []), predictions[image_id], pairing[image_id] if pairing else None)
        rows += image_rows(data, image_id, cars, config, args.near)
        print(f"{image_id}: {len(rows)} rows", flush=True)
        if args.json:  # after each image: a long run can be read before it ends
            args.json.write_text(json.dumps(rows))
    print(summary(rows))


if __name__ == "__main__":
    main()
