"""Paired CPU time of `refine_pose` on captured car problems (same cars, same inputs, one thread).

`capture` runs the pipeline on a data folder and saves every car problem that reaches `refine_pose`
(mesh, initial pose, window, crops, neighbours, lighting); `time` refines saved problems with the
current code and a RefineConfig override, printing CPU seconds, renders, final loss and pose per
car, so two versions (or settings) can be compared car by car. Usage:

    python benchmarks/refine_problems.py capture DATA OUT.pt [--images N]
    python benchmarks/refine_problems.py time OUT.pt [--json RESULT] [--limit N] [key=value ...]
"""

from __future__ import annotations

import argparse
import json
import os
import time
from dataclasses import replace
from pathlib import Path

os.environ.setdefault("NUMBA_NUM_THREADS", "1")
os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402

import nmrlight.refine.image as image_module  # noqa: E402
from nmrlight.io.dataset import DataFolder  # noqa: E402
from nmrlight.io.poses import read_poses  # noqa: E402
from nmrlight.refine.ablation import run_setting  # noqa: E402
from nmrlight.refine.config import RefineConfig  # noqa: E402


def _overrides(items: list[str]) -> dict:
    out = {}
    for item in items:
        key, _, text = item.partition("=")
        try:
            value = json.loads(text)
        except json.JSONDecodeError:
            value = text
        if isinstance(value, list):
            value = tuple(tuple(v) if isinstance(v, list) else v for v in value)
        out[key] = value
    return out


def capture(data: Path, out: Path, images: int | None) -> None:
    problems = []
    original = image_module.refine_pose

    def record(problem, lighting, config, frame=None):
        problems.append((problem, lighting))
        return original(problem, lighting, config, frame=frame)

    image_module.refine_pose = record
    try:
        predictions = read_poses(data / "predictions.csv")
        if images:
            predictions = dict(list(predictions.items())[:images])
        run_setting(DataFolder(data), predictions, RefineConfig(threads=1))
    finally:
        image_module.refine_pose = original
    torch.save(problems, out)
    print(f"captured {len(problems)} car problems -> {out}")


def time_problems(path: Path, overrides: dict, limit: int | None, result: Path | None) -> None:
    problems = torch.load(path, weights_only=False)[:limit]
    config = RefineConfig(threads=1, **overrides)
    # compile the kernels first (numba caches to disk, but loading still costs the first car)
    image_module.refine_pose(problems[0][0], problems[0][1], replace(config, stages=((32, "analytic", 1.0, 2),),
                                                                     large_stage=None))
    rows = []
    for k, (problem, lighting) in enumerate(problems):
        t0 = time.process_time()
        outcome = image_module.refine_pose(problem, lighting, config)
        cpu = time.process_time() - t0
        rows.append({"car": k, "cpu": cpu, "renders": outcome.iterations, "loss": outcome.loss_after,
                     "iou": outcome.iou_after, "z": float(problem.translation[2]),
                     "rotation": outcome.rotation.double().flatten().tolist(),
                     "translation": outcome.translation.double().tolist()})
        print(f"car {k:3d} z {rows[-1]['z']:6.1f} m  cpu {cpu:6.3f} s  renders {outcome.iterations:4d}  "
              f"loss {outcome.loss_after:.6f}", flush=True)
    cpu = np.array([r["cpu"] for r in rows])
    print(f"{len(rows)} cars: CPU s/car median {np.median(cpu):.3f} mean {cpu.mean():.3f}; "
          f"renders/car median {np.median([r['renders'] for r in rows]):.1f}")
    if result:
        result.write_text(json.dumps({"overrides": overrides, "rows": rows}, indent=1))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    cap = sub.add_parser("capture")
    cap.add_argument("data", type=Path)
    cap.add_argument("out", type=Path)
    cap.add_argument("--images", type=int, default=None)
    tim = sub.add_parser("time")
    tim.add_argument("problems", type=Path)
    tim.add_argument("--json", type=Path, default=None)
    tim.add_argument("--limit", type=int, default=None)
    tim.add_argument("overrides", nargs="*")
    args = parser.parse_args()
    torch.set_num_threads(1)
    if args.command == "capture":
        capture(args.data, args.out, args.images)
    else:
        time_problems(args.problems, _overrides(args.overrides), args.limit, args.json)


if __name__ == "__main__":
    main()
