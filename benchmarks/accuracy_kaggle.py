"""Issue 11's accuracy table on the kaggle preset: each refinement run once, the post-refinement parts
(ground plane, re-scoring) applied to its results, so that one run gives several rows.

    # refine (makes the data folder when missing), pickling every ImageResult and its CPU time
    # (--scale 1.0, the default, is the preset's and the real data's 3384 x 2710 frame; the older tables of
    # docs/accuracy.md ran --scale 0.5, where far cars are half as many pixels wide)
    python benchmarks/accuracy_kaggle.py refine DIR RUN.pkl --images 22 --seed 31 [--scale 1.0] [--set key=value ...]
    # the table: for each run, as refined, + ground plane, + re-scoring, + both (`nmrlight.refine.ablation`'s
    # statistics by band, against every annotated car, with the mAP's ceiling)
    python benchmarks/accuracy_kaggle.py table DIR NAME=RUN.pkl ... [--near 40]
    # a copy of DIR whose detections all have their heading flipped (turned 180 deg about the car's own
    # vertical axis; everything else linked to DIR's files): how often the global stage finds a flip
    python benchmarks/accuracy_kaggle.py flip DIR FLIPPED_DIR
    # the issue's targets on the pooled cars of reviewed runs, with 95 % intervals (`nmrlight.refine.targets`;
    # --preset crowded: issue 14's; the crowded preset's folders work as well)
    python benchmarks/accuracy_kaggle.py targets --preset kaggle DIR=RUN.reviewed.pkl ... [--near 40]
    # seeds' runs re-scored and their flip ties judged together (`refine/appearance.py`: more cars teach
    # each mesh's layout), as one run over all their photographs would; writes RUN.reviewed.pkl each
    # (the review's appearance_* settings: today's defaults, or --set key=value)
    python benchmarks/accuracy_kaggle.py review DIR=RUN.pkl DIR=RUN.pkl ... [--set key=value ...]

The ground plane and re-scoring run after every car of a photograph is refined (refine_image calls the
same `ground_results` and `_rescore`), so applying them afterwards gives the rows `nmrlight ablation
--parts global` would. CPU seconds (time.process_time, one torch thread) per refined car: the
photograph's refinement time divided by its refined cars.
"""

from __future__ import annotations

import argparse
import ast
import copy
import os
import pickle
import time
from dataclasses import fields, replace
from pathlib import Path

os.environ.setdefault("NUMBA_NUM_THREADS", "1")
os.environ.setdefault("OMP_NUM_THREADS", "1")

import torch  # noqa: E402

from nmrlight.io.dataset import DataFolder  # noqa: E402
from nmrlight.io.poses import read_poses  # noqa: E402
from nmrlight.refine.ablation import group_stats, markdown_table, read_pairing  # noqa: E402
from nmrlight.refine.appearance import review_flip_ties  # noqa: E402
from nmrlight.refine.config import RefineConfig  # noqa: E402
from nmrlight.refine.ground import ground_results  # noqa: E402
from nmrlight.refine.image import _rescore, refine_image  # noqa: E402


def _value(text: str):
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            pass
    if text in ("True", "False", "None"):
        return {"True": True, "False": False, "None": None}[text]
    if text.startswith("("):  # a tuple: of numbers, or of stages ((size, 'edges', sigma, iterations), ...)
        return ast.literal_eval(text)
    return text


def refine(args: argparse.Namespace) -> None:
    folder = Path(args.data)
    if not (folder / "predictions.csv").is_file():
        from nmrlight.synth import synthesize
        from nmrlight.synth.presets import preset

        config, errors = preset("kaggle", scale=args.scale)
        synthesize(folder, args.images, args.seed, config, errors)
    overrides = dict(kv.split("=", 1) for kv in args.overrides)
    config = RefineConfig(threads=1, **{k: _value(v) for k, v in overrides.items()})
    torch.set_num_threads(1)
    data = DataFolder(folder)
    out = {}
    predictions = read_poses(folder / "predictions.csv")
    chosen = list(predictions)[:args.only]
    if args.pick:
        chosen = [i for i in chosen if any(i.endswith(p) for p in args.pick.split(","))]
    for image_id in chosen:
        cars = predictions[image_id]
        began = time.process_time()
        result = refine_image(data, image_id, cars, config)
        out[image_id] = (result, time.process_time() - began)
        print(image_id, len(cars), f"{out[image_id][1]:.1f} s", flush=True)
        with open(args.out, "wb") as f:
            pickle.dump({"config": config, "results": out}, f)


def variants(run: dict, data: DataFolder) -> dict[str, dict]:
    """The run as refined, with the ground plane, with re-scoring, with both (deep copies)."""
    config: RefineConfig = run["config"]
    drops: dict[int, float] = {}

    def drop(model: int) -> float:
        if model not in drops:
            drops[model] = float(data.car(model).object_vertices()[:, 1].min())
        return drops[model]

    out = {}
    for ground in (False, True):
        for rescore in (False, True):
            results = {}
            for image_id, (result, cpu) in run["results"].items():
                result = copy.deepcopy(result)
                if ground:
                    ground_results(result.cars, [drop(c.refined.model_type) for c in result.cars],
                                   replace(config, ground_plane=True))
                if rescore:
                    for car in result.cars:
                        _rescore(car)
                results[image_id] = (result, cpu)
            out[(" + ground plane" if ground else "") + (" + re-scoring" if rescore else "")] = results
    fallback = {}
    for image_id, (result, cpu) in run["results"].items():
        result = copy.deepcopy(result)
        ground_results(result.cars, [drop(c.refined.model_type) for c in result.cars],
                       replace(config, ground_plane=True, ground_fallback=True))
        fallback[image_id] = (result, cpu)
    out[" + ground plane with fallback"] = fallback
    if any("global" in c.extra for r, _ in run["results"].values() for c in r.cars):
        # what run_refine does last: the flip ties of all photographs judged by the learned layouts
        reviewed = {i: (copy.deepcopy(r), cpu) for i, (r, cpu) in out[" + re-scoring"].items()}
        review = review_flip_ties([(data, r) for r, _ in reviewed.values()], _review_config(config))
        print(f"flip review: {review.judged} ties judged, {review.switched} switched; voters {review.learned}")
        out[" + re-scoring + flip review"] = reviewed
        out[", detector's start only"] = {i: (_detector_start(r), cpu) for i, (r, cpu) in run["results"].items()}
    return out


def _detector_start(result):
    """The global stage's run with each car where the refinement from the detector's own start ended
    (`extra.global.detector_start`): the local refinement alone, but for the poses of the window's
    other cars, which are those the global stage chose."""
    from nmrlight.io.poses import CarPose

    result = copy.deepcopy(result)
    for car in result.cars:
        start = car.extra.get("global", {}).get("detector_start")
        if start is None:
            continue
        p = car.initial
        car.refined = (CarPose(p.model_type, tuple(start["rotation"]), tuple(start["translation"]), p.confidence)
                       if start["improved"] else p)
    return result


def table(args: argparse.Namespace) -> None:
    folder = Path(args.data)
    data = DataFolder(folder)
    truth = read_poses(folder / "train.csv")
    pairing = read_pairing(folder)
    predictions = read_poses(folder / "predictions.csv")
    rows = []
    for item in args.runs:
        name, path = item.split("=", 1)
        with open(path, "rb") as f:
            run = pickle.load(f)
        for suffix, results in variants(run, data).items():
            after = {i: r.refined_poses() for i, (r, _) in results.items()}
            seconds = {}
            for i, (r, cpu) in results.items():
                refined = sum(1 for c in r.cars if c.seconds > 0)
                seconds[i] = [cpu / max(refined, 1) if c.seconds > 0 else 0.0 for c in r.cars]
            done = {i: predictions[i] for i in results}
            rows.extend(group_stats(f"{name}{suffix}", truth, done, after, seconds, args.near, pairing,
                                    overall=True))
    print(markdown_table(rows))


def _review_config(config: RefineConfig, overrides: list[str] = ()) -> RefineConfig:
    """A run's settings with the flip review's (appearance_*) as today's defaults, since a pickle holds
    those of the code that refined it, unless `overrides` (key=value) say otherwise."""
    today = RefineConfig()
    settings = {f.name: getattr(today, f.name) for f in fields(RefineConfig) if f.name.startswith("appearance_")}
    settings.update({k: _value(v) for k, v in (kv.split("=", 1) for kv in overrides)})
    return replace(config, **settings)


def review(args: argparse.Namespace) -> None:
    """Runs on data folders that share their meshes (kaggle-preset seeds) re-scored and their flip ties
    judged together, as one run over all their photographs would: each DIR=RUN.pkl is written to
    RUN.reviewed.pkl (`table` shows it; its review finds every tie judged already)."""
    runs = []
    for item in args.runs:
        folder, path = item.split("=", 1)
        with open(path, "rb") as f:
            run = pickle.load(f)
        for result, _ in run["results"].values():
            for car in result.cars:
                _rescore(car)
        runs.append((DataFolder(Path(folder)), Path(path), run))
    config = _review_config(runs[0][2]["config"], args.overrides)
    pooled = [(data, result) for data, _, run in runs for result, _ in run["results"].values()]
    found = review_flip_ties(pooled, config, print)
    print(f"flip review: {found.judged} ties judged, {found.switched} switched; voters {found.learned}")
    for _, path, run in runs:
        with open(path.with_suffix(".reviewed.pkl"), "wb") as f:
            pickle.dump(run, f)


def targets(args: argparse.Namespace) -> None:
    """The preset's issue targets on the pooled cars of `args.runs` (DIR=RUN.pkl: a reviewed run's confidences
    are the re-scored ones), each share and median with its 95 % interval."""
    from nmrlight.refine.targets import band_rows, evaluate_targets, markdown, rows_and_maps
    from nmrlight.synth.visibility import read_visibility

    rows, maps = [], []
    for item in args.runs:
        folder, path = item.split("=", 1)
        folder = Path(folder)
        with open(path, "rb") as f:
            run = pickle.load(f)
        visibility = read_visibility(folder / "visibility.csv") if (folder / "visibility.csv").is_file() else None
        r, m = rows_and_maps(str(folder), read_poses(folder / "train.csv"), read_poses(folder / "predictions.csv"),
                             {i: result for i, (result, _) in run["results"].items()}, read_pairing(folder),
                             visibility)
        rows += r
        maps.append(m)
    print(markdown(evaluate_targets(args.preset, rows, maps, args.near), band_rows(rows)))


def flip(args: argparse.Namespace) -> None:
    """`args.out`: `args.data` with every detection's heading turned by 180 deg (train and submission
    predictions), its other files and folders linked, not copied."""
    from nmrlight.io.poses import CarPose, write_poses, write_submission
    from nmrlight.refine.hypotheses import heading_turn
    from nmrlight.rotations import kaggle_to_matrix, matrix_to_kaggle

    source, target = Path(args.data).resolve(), Path(args.out)
    target.mkdir(parents=True, exist_ok=True)
    for item in source.iterdir():
        link = target / item.name
        if not item.name.startswith("predictions") and not link.exists():
            link.symlink_to(item)

    def turned(car: CarPose) -> CarPose:
        matrix = kaggle_to_matrix(torch.tensor(car.rotation, dtype=torch.float64))
        angles = matrix_to_kaggle(matrix @ heading_turn(180.0).double())
        return CarPose(car.model_type, tuple(float(a) for a in angles), car.translation, car.confidence)

    predictions = read_poses(source / "predictions.csv")
    flipped = {image: [turned(c) for c in cars] for image, cars in predictions.items()}
    write_poses(target / "predictions.csv", flipped)
    if (source / "predictions_submission.csv").is_file():
        write_submission(target / "predictions_submission.csv", flipped)
    print(f"{target}: {sum(map(len, flipped.values()))} detections, every heading flipped")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    r = sub.add_parser("refine")
    r.add_argument("data")
    r.add_argument("out")
    r.add_argument("--images", type=int, default=22)
    r.add_argument("--seed", type=int, default=31)
    r.add_argument("--scale", type=float, default=1.0)
    r.add_argument("--only", type=int, default=None, help="refine the first ONLY pictures")
    r.add_argument("--pick", default=None, help="refine only the pictures whose ids end with these (comma list)")
    r.add_argument("--set", dest="overrides", action="append", default=[], help="RefineConfig key=value")
    t = sub.add_parser("table")
    t.add_argument("data")
    t.add_argument("runs", nargs="+", help="NAME=RUN.pkl")
    t.add_argument("--near", type=float, default=40.0)
    v = sub.add_parser("review")
    v.add_argument("runs", nargs="+", help="DIR=RUN.pkl")
    v.add_argument("--set", dest="overrides", action="append", default=[], help="RefineConfig key=value")
    g = sub.add_parser("targets")
    g.add_argument("runs", nargs="+", help="DIR=RUN.pkl")
    g.add_argument("--preset", choices=("kaggle", "crowded"), default="kaggle")
    g.add_argument("--near", type=float, default=40.0)
    f = sub.add_parser("flip")
    f.add_argument("data")
    f.add_argument("out")
    args = parser.parse_args()
    {"refine": refine, "table": table, "review": review, "targets": targets, "flip": flip}[args.command](args)


if __name__ == "__main__":
    main()
