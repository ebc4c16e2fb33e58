"""Write a whole synthetic data folder: pictures, masks, meshes, truth, predictions, lighting."""

from __future__ import annotations

import csv
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from nmrlight.errors import NmrlightError
from nmrlight.io.camera_file import write_intrinsics
from nmrlight.io.cars import car_name
from nmrlight.io.dataset import DataFolder
from nmrlight.io.images import write_image
from nmrlight.io.masks import write_label_mask
from nmrlight.io.poses import CarPose, write_poses
from nmrlight.procedural import write_models
from nmrlight.synth.coco import SegmenterFiles
from nmrlight.synth.config import SynthConfig
from nmrlight.synth.detector import ErrorModel
from nmrlight.synth.picture import _Models, synthesize_image
from nmrlight.synth.segmenter import SegmenterModel, segment


@dataclass
class SynthSummary:
    """What `synthesize` wrote."""

    out_dir: Path
    image_ids: list[str] = field(default_factory=list)
    cars: int = 0
    visible_cars: int = 0
    unannotated_cars: int = 0
    model_types: list[int] = field(default_factory=list)
    seconds: float = 0.0


def synthesize(out_dir: str | Path, images: int, seed: int, config: SynthConfig | None = None,
               errors: ErrorModel | None = None, progress: Callable[[int], None] | None = None,
               segmenter: SegmenterModel | None = None) -> SynthSummary:
    """Write a synthetic data folder of `images` pictures to `out_dir`; deterministic for `seed`.

    Besides the label masks and predictions.csv, writes what a detector and an instance segmenter
    would (`segmenter`, see nmrlight.synth.coco). `progress` is called with 1 after each picture.
    """
    if images < 1:
        raise NmrlightError(f"synth: number of images must be at least 1, got {images}")
    config = config or SynthConfig()
    errors = errors or ErrorModel()
    if not config.model_types:
        raise NmrlightError("synth: model_types is empty")
    for m in config.model_types:
        car_name(m)  # validates the id
    if not config.scale > 0:
        raise NmrlightError(f"synth: scale must be positive, got {config.scale}")
    start = time.perf_counter()
    folder = DataFolder.create(out_dir)
    root = folder.root
    camera = config.camera()
    write_intrinsics(camera, root / "camera" / "camera_intrinsic.txt")
    models = _Models()
    truth: dict[str, list[CarPose]] = {}
    preds: dict[str, list[CarPose]] = {}
    summary = SynthSummary(out_dir=root)
    used: set[int] = set()
    lights = []
    segmented = SegmenterFiles(root, seed)
    visibility: list[list] = []
    for index in range(images):
        item = synthesize_image(index, seed, config, models)
        err_rng = np.random.default_rng([int(seed), int(index), 1])
        pred, source = errors.perturb(item.cars, err_rng)
        # mask labels follow the prediction rows: k-th prediction <- its true car's region; a car the
        # detector missed gets a value beyond the row (a segmenter finds it; refinement: don't-care)
        label_of = np.zeros(len(item.cars), dtype=np.int64)
        for k, src in enumerate(source):
            if src >= 0:
                label_of[src] = k + 1
        missed = np.flatnonzero(label_of == 0)
        label_of[missed] = len(pred) + 1 + np.arange(len(missed))
        labels = item.labels
        if label_of.tolist() != list(range(1, len(item.cars) + 1)):
            remap = np.concatenate([[0], label_of])
            labels = remap[labels]
        suffix = ".jpg" if config.jpeg else ".png"
        write_image(root / "images" / f"{item.image_id}{suffix}", item.image)
        seg_rng = np.random.default_rng([int(seed), int(index), 2])
        n = len(item.cars)
        masks = segment(item.object_id, [s for s in source if s >= 0], n, seg_rng, segmenter,
                        unannotated=list(range(n, n + len(item.unannotated))))
        segmented.add(item.image_id, f"{item.image_id}{suffix}", *item.object_id.shape, masks, pred, source,
                      seg_rng)
        write_label_mask(root / "masks" / f"{item.image_id}.png", labels)
        if item.ignore is not None:
            ignore_mask = (item.ignore * 255).astype(np.uint8)
            (root / "train_masks").mkdir(exist_ok=True)
            write_image(root / "train_masks" / f"{item.image_id}.jpg", ignore_mask)
        if item.visible_fraction is not None:
            for k, car in enumerate(item.cars):
                visibility.append([item.image_id, k, int(item.visible_pixels[k]), int(item.full_pixels[k]),
                                   f"{item.visible_fraction[k]:.4f}", f"{car.translation[2]:.3f}"])
        truth[item.image_id] = item.cars
        preds[item.image_id] = pred
        lights.append((item.image_id, *item.lighting, item.materials))
        used.update(c.model_type for c in item.cars)
        summary.image_ids.append(item.image_id)
        summary.cars += len(item.cars)
        summary.visible_cars += len(np.unique(item.object_id[(item.object_id >= 0) & (item.object_id < n)]))
        summary.unannotated_cars += len(item.unannotated)
        if progress is not None:
            progress(1)
    write_models(root, sorted(used | set(config.model_types)))
    write_poses(root / "train.csv", truth, confidence=False)
    write_poses(root / "predictions.csv", preds, confidence=True)
    segmented.write()
    with (root / "lighting.csv").open("w", newline="") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(["ImageId", "ambient", "directional", "dx", "dy", "dz", "materials"])
        for row in lights:
            writer.writerow([row[0], *(repr(float(x)) for x in row[1:-1]), row[-1]])
    if visibility:
        with (root / "visibility.csv").open("w", newline="") as handle:
            writer = csv.writer(handle, lineterminator="\n")
            writer.writerow(["ImageId", "car_index", "visible_pixels", "unoccluded_pixels", "visible_fraction",
                             "depth"])
            writer.writerows(visibility)
    summary.model_types = sorted(used)
    summary.seconds = time.perf_counter() - start
    return summary
