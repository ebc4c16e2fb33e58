"""CPU time per refined car and accuracy, one thread: the before/after measurement of docs/speed.md.

Makes (or reuses) a synthetic data folder, refines every picture with the default settings plus the
overrides given as key=value (e.g. optimizer=adam), and prints per-band accuracy (nmrlight.refine.ablation's
statistics) with the median and mean CPU seconds of `refine_pose` per car (time.process_time, one torch
thread, one numba thread). Usage:

    python benchmarks/refine_speed.py --images 4 --seed 1 [--data DIR] [key=value ...] [--json OUT]
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

os.environ.setdefault("NUMBA_NUM_THREADS", "1")
os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402

import nmrlight.refine.image as image_module  # noqa: E402
from nmrlight.io.dataset import DataFolder  # noqa: E402
from nmrlight.io.poses import read_poses  # noqa: E402
from nmrlight.refine.ablation import group_stats, markdown_table, read_pairing, run_setting  # noqa: E402
from nmrlight.refine.config import RefineConfig  # noqa: E402
from nmrlight.synth import SynthConfig, synthesize  # noqa: E402


def _value(text: str):
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=4)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--data", type=Path, default=None, help="data folder (made here when missing)")
    parser.add_argument("--near", type=float, default=40.0)
    parser.add_argument("--label", default="default")
    parser.add_argument("--json", type=Path, default=None, help="also write per-car rows here")
    parser.add_argument("overrides", nargs="*", help="RefineConfig field=value (JSON values)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    data = args.data or Path(f"/tmp/nmrlight-speed-seed{args.seed}-n{args.images}")
    if not (data / "train.csv").is_file():
        synthesize(data, args.images, args.seed, SynthConfig())
    overrides = {}
    for item in args.overrides:
        key, _, text = item.partition("=")
        value = _value(text)
        overrides[key] = tuple(tuple(v) if isinstance(v, list) else v for v in value) \
            if isinstance(value, list) else value
    config = RefineConfig(threads=1, **overrides)

    cpu: list[float] = []
    original = image_module.refine_pose

    def timed(*a, **k):
        t0 = time.process_time()
        out = original(*a, **k)
        cpu.append(time.process_time() - t0)
        out.seconds = cpu[-1]
        return out

    image_module.refine_pose = timed
    try:
        truth = read_poses(data / "train.csv")
        predictions = read_poses(data / "predictions.csv")
        refined, seconds = run_setting(DataFolder(data), predictions, config)
    finally:
        image_module.refine_pose = original
    # synthetic folders with unannotated cars or misses (the kaggle preset) say which truth row each
    # prediction is: without it the stats would pair cars by position
    rows = group_stats(args.label, truth, predictions, refined, seconds, args.near, read_pairing(data))
    print(markdown_table(rows))
    print(f"cars refined: {len(cpu)}; CPU s/car median {np.median(cpu):.3f}, mean {np.mean(cpu):.3f}")
    if args.json:
        args.json.write_text(json.dumps({"rows": [r.to_dict() for r in rows], "cpu": cpu,
                                         "overrides": args.overrides}, indent=1))


if __name__ == "__main__":
    main()
