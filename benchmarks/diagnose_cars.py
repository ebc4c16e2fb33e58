"""Why did a car end where it did? Its objective or its optimiser.

For each named car of one photograph of an `accuracy_kaggle.py refine` run, with every other car at the
pose the run gave it (and its mesh), the car is refined four times: from its true pose and from the run's,
each with the prior (centred on the detector's pose, as in the run) and without it. Printed per refinement:
the loss and IoU at the start and the end, and the end's rotation / translation error and depth ratio.

- From the truth, the car stays near it with a lower loss than the run's: the run stopped in a wrong basin
  (an optimiser's or a start's problem: the global stage, more hypotheses).
- From the truth, it walks to where the run ended: the photograph's terms (or the prior) prefer that pose
  (an objective's problem: evidence, masks, the prior's weight).
- With and without the prior: how much the prior, rather than the pixels, holds the car.

    python benchmarks/diagnose_cars.py DATA RUN.pkl IMAGE_ID CAR [CAR ...]

IMAGE_ID may be a suffix (0002); CAR is the detection's index in the photograph's row of predictions.csv.
The mask association, windows and lighting are rebuilt as the run built them; a car keeps its window from
the detector's pose.
"""

from __future__ import annotations

import argparse
import os
import pickle
from dataclasses import replace
from pathlib import Path

os.environ.setdefault("NUMBA_NUM_THREADS", "1")
os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402

from nmrlight.io.dataset import DataFolder  # noqa: E402
from nmrlight.io.poses import CarPose, read_poses  # noqa: E402
from nmrlight.refine.ablation import car_errors, read_pairing  # noqa: E402
from nmrlight.refine.image import _car_problem, _fixed  # noqa: E402
from nmrlight.refine.pose import refine_pose  # noqa: E402
from nmrlight.refine.prepare import attach_masks, image_masks, pose_cars  # noqa: E402
from nmrlight.rotations import kaggle_to_matrix, matrix_to_kaggle  # noqa: E402


def _matrix(pose: CarPose) -> tuple[torch.Tensor, torch.Tensor]:
    return (torch.as_tensor(kaggle_to_matrix(np.asarray(pose.rotation, np.float64)), dtype=torch.float32),
            torch.as_tensor(pose.translation, dtype=torch.float32))


def _errors(rotation: torch.Tensor, translation: torch.Tensor, truth: CarPose) -> str:
    angles = matrix_to_kaggle(rotation.double().numpy())
    pose = CarPose(truth.model_type, tuple(map(float, angles)), tuple(map(float, translation)), 1.0)
    rot, trans = car_errors(pose, truth)
    ratio = float(translation[2]) / truth.translation[2]
    return f"rot {rot:5.1f} deg, transl. {trans * 100:5.2f} %, depth x {ratio:.3f}"


def diagnose(folder: Path, run_path: Path, image: str, cars: list[int]) -> None:
    with open(run_path, "rb") as f:
        run = pickle.load(f)
    config = run["config"]
    data = DataFolder(folder)
    truth, pairing = read_poses(folder / "train.csv"), read_pairing(folder)
    predictions = read_poses(folder / "predictions.csv")
    image_id = next((i for i in run["results"] if i.endswith(image)), None)
    if image_id is None:
        raise SystemExit(f"diagnose_cars: no photograph ending in {image!r} in {run_path}")
    result, _ = run["results"][image_id]
    photo = data.read_image(image_id, "gray")
    camera = data.camera(photo.shape[1], photo.shape[0])
    state = pose_cars(data, predictions[image_id], camera, config)
    masks = image_masks(data, image_id, state, camera, photo.shape, config)
    attach_masks(state, masks, camera, config)
    lighting = _fixed(config)   # silhouette losses need none; a shading run gets the fixed light here
    for car, refined in zip(state, result.cars, strict=True):
        if refined.refined.model_type != car.model:
            car.use_mesh(data, refined.refined.model_type)
        car.rotation, car.translation = _matrix(refined.refined)
    without_prior = replace(config, prior_weight=0.0)
    for k in cars:
        match = pairing[image_id][k]
        if match is None or match < 0 or state[k].mask is None:
            print(f"car {k}: no true car or no mask; skipped")
            continue
        car, refined, true = state[k], result.cars[k], truth[image_id][match]
        detector = _matrix(refined.initial)
        print(f"car {k} ({refined.status}, {refined.extra.get('visible_fraction')} visible): "
              f"detector {_errors(*detector, true)}; run {_errors(car.rotation, car.translation, true)}")
        for start_name, start in (("truth", true), ("run", refined.refined)):
            for prior_name, settings in (("prior", config), ("no prior", without_prior)):
                car.rotation, car.translation = _matrix(start)
                problem = _car_problem(car, state, camera, photo, masks.labels, settings, prior=detector)
                out = refine_pose(problem, lighting, settings)
                print(f"  from the {start_name:5s}, {prior_name:8s}: loss {out.loss_before:.4f} -> "
                      f"{out.loss_after:.4f}, IoU {out.iou_before:.3f} -> {out.iou_after:.3f}; ends at "
                      f"{_errors(out.rotation, out.translation, true)}")
        car.rotation, car.translation = _matrix(refined.refined)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data", type=Path)
    parser.add_argument("run", type=Path)
    parser.add_argument("image")
    parser.add_argument("cars", type=int, nargs="+")
    args = parser.parse_args()
    torch.set_num_threads(1)
    diagnose(args.data, args.run, args.image, args.cars)


if __name__ == "__main__":
    main()
