"""The shading ablation of docs/ablation.md on several synthetic folders pooled: refine every picture under each
setting of `nmrlight.refine.ablation.SHADING_SETTINGS` (or any of SETTINGS / GLOBAL_SETTINGS) and print
per-band statistics over all folders' cars together, with CPU seconds a refined car (time.process_time of
the whole photograph's refinement, lighting included, shared among its refined cars; one torch thread).

`nmrlight ablation --data DIR --parts shading` does the same for one folder; pooling folders is why this
script exists (a kaggle-preset picture holds ~5 detected cars, so >= 60 cars take two seeds). Each
(setting, folder) is saved to OUT as it finishes, so a stopped run keeps what it did and `--table` alone
prints what is there:

    python benchmarks/shading_ablation.py OUT k23 k35 --setting "silhouette + edges (default), global stage"
    python benchmarks/shading_ablation.py OUT k23 k35 --table
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

os.environ.setdefault("NUMBA_NUM_THREADS", "1")
os.environ.setdefault("OMP_NUM_THREADS", "1")

import torch  # noqa: E402

from nmrlight.io.dataset import DataFolder  # noqa: E402
from nmrlight.io.poses import CarPose, read_poses  # noqa: E402
from nmrlight.refine.ablation import (  # noqa: E402
    GLOBAL_SETTINGS,
    SETTINGS,
    SHADING_SETTINGS,
    group_stats,
    markdown_table,
    read_pairing,
)
from nmrlight.refine.config import RefineConfig  # noqa: E402
from nmrlight.refine.image import refine_image  # noqa: E402

TABLE = {**SETTINGS, **GLOBAL_SETTINGS, **SHADING_SETTINGS}


def _file(out: Path, setting: str, folder: Path) -> Path:
    slug = "".join(c if c.isalnum() else "_" for c in setting).strip("_")
    return out / f"{slug}__{folder.name}.json"


def run(out: Path, folder: Path, setting: str) -> None:
    """Refine every picture of `folder` under `setting`; write poses and CPU shares to OUT."""
    from dataclasses import replace

    config = replace(RefineConfig(threads=1), **TABLE[setting])
    data = DataFolder(folder)
    predictions = read_poses(folder / "predictions.csv")
    rows = {}
    for image_id, cars in predictions.items():
        start = time.process_time()
        result = refine_image(data, image_id, cars, config)
        cpu = time.process_time() - start
        refined = [c.seconds > 0 for c in result.cars]
        share = cpu / max(1, sum(refined))
        rows[image_id] = {"poses": [[p.model_type, list(p.rotation), list(p.translation), p.confidence]
                                    for p in result.refined_poses()],
                          "seconds": [share if r else 0.0 for r in refined]}
        print(f"{setting} | {folder.name} {image_id}: {sum(refined)} cars, {cpu:.1f} CPU-s", flush=True)
    _file(out, setting, folder).write_text(json.dumps(rows))


def table(out: Path, folders: list[Path], near: float) -> str:
    """Pooled statistics of every setting with a result for every folder."""
    stats = []
    for setting in TABLE:
        files = [_file(out, setting, f) for f in folders]
        if not all(f.is_file() for f in files):
            continue
        truth, before, after, seconds, pairing = {}, {}, {}, {}, {}
        for folder, path in zip(folders, files, strict=True):
            saved = json.loads(path.read_text())
            pair = read_pairing(folder)
            folder_truth = read_poses(folder / "train.csv")
            for image_id, cars in read_poses(folder / "predictions.csv").items():
                key = f"{folder.name}/{image_id}"
                truth[key] = folder_truth.get(image_id, [])
                before[key] = cars
                after[key] = [CarPose(int(m), tuple(r), tuple(t), c) for m, r, t, c in saved[image_id]["poses"]]
                seconds[key] = saved[image_id]["seconds"]
                pairing[key] = pair[image_id] if pair is not None else list(range(len(cars)))
        stats.extend(group_stats(setting, truth, before, after, seconds, near, pairing))
    return markdown_table(stats)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("folders", type=Path, nargs="+")
    parser.add_argument("--setting", action="append", default=[], choices=list(TABLE))
    parser.add_argument("--table", action="store_true", help="only print the pooled table of what OUT holds")
    parser.add_argument("--near", type=float, default=40.0)
    args = parser.parse_args()
    torch.set_num_threads(1)
    args.out.mkdir(parents=True, exist_ok=True)
    if not args.table:
        for setting in args.setting or list(SHADING_SETTINGS):
            for folder in args.folders:
                if not _file(args.out, setting, folder).is_file():
                    run(args.out, folder, setting)
    print(table(args.out, args.folders, args.near))


if __name__ == "__main__":
    main()
