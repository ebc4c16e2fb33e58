"""Detector- and segmenter-style files of a synthetic data folder, and the truth behind them.

- `predictions_submission.csv`: the cars of predictions.csv in the Kaggle submission format
  (`v1 v2 v3 x y z confidence`, no model id), in a random order per image.
- `coco/instances.json`: COCO dataset format, `images` (id, file_name, width, height),
  `categories`, `annotations` (id, image_id, category_id, segmentation as a compressed run-length
  dict, area, bbox [x, y, w, h], score, iscrowd 0), shuffled over the whole file, no `car_index`.
- `coco/results.json`: the same annotations in COCO results format (a bare list of image_id,
  category_id, segmentation, score, bbox), image_id resolved through instances.json's images.
- `coco/truth.json`, for evaluation only: for each annotation id its ImageId, `truth_index` (0-based
  position of its car in the train.csv row, -1: not an annotated car) and `prediction_index` (0-based
  position in the predictions.csv row, -1: the detector missed it); for each image
  `submission_order` (the predictions.csv position of each submission car) and `prediction_truth`
  (the train.csv position of each predictions.csv car, -1: a false positive).
"""

from __future__ import annotations

import json
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from nmrlight.io.poses import CarPose, write_submission
from nmrlight.synth.segmenter import SegmentedMask

CAR_CATEGORY = {"id": 3, "name": "car", "supercategory": "vehicle"}   # COCO's own id for cars


def encode_mask(mask: np.ndarray) -> tuple[dict, int, list[float]]:
    """A bool mask (H, W) as a COCO run-length dict with a string `counts`, its area and bbox."""
    from pycocotools import mask as mask_utils

    with warnings.catch_warnings():   # pycocotools' numpy-2 copy= deprecation, harmless
        warnings.simplefilter("ignore", DeprecationWarning)
        rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
        area = int(mask_utils.area(rle))
        bbox = [float(v) for v in mask_utils.toBbox(rle)]
    return {"size": [int(mask.shape[0]), int(mask.shape[1])], "counts": rle["counts"].decode("ascii")}, area, bbox


@dataclass
class SegmenterFiles:
    """Collects each picture's masks and predictions, then writes the files of the module docstring."""

    root: Path
    seed: int
    images: list[dict] = field(default_factory=list)
    annotations: list[dict] = field(default_factory=list)
    hidden: list[dict] = field(default_factory=list)     # truth of each annotation, same order
    submission: dict[str, list[CarPose]] = field(default_factory=dict)
    per_image: dict[str, dict] = field(default_factory=dict)

    def add(self, image_id: str, file_name: str, height: int, width: int, masks: list[SegmentedMask],
            predictions: list[CarPose], source: list[int], rng: np.random.Generator) -> None:
        """Add one picture: its segmenter `masks`, its predictions.csv row and each row's true car."""
        number = len(self.images) + 1
        self.images.append({"id": number, "file_name": file_name, "width": int(width), "height": int(height)})
        prediction_of = {int(s): k for k, s in enumerate(source) if s >= 0}
        for m in masks:
            segmentation, area, bbox = encode_mask(m.mask)
            self.annotations.append({"image_id": number, "category_id": CAR_CATEGORY["id"],
                                     "segmentation": segmentation, "area": area, "bbox": bbox,
                                     "score": round(float(m.score), 4), "iscrowd": 0})
            self.hidden.append({"image": image_id, "truth_index": int(m.truth_index),
                                "prediction_index": prediction_of.get(int(m.truth_index), -1)
                                if m.truth_index >= 0 else -1})
        order = [int(k) for k in rng.permutation(len(predictions))]
        self.submission[image_id] = [predictions[k] for k in order]
        self.per_image[image_id] = {"submission_order": order, "prediction_truth": [int(s) for s in source]}

    def write(self) -> None:
        """Write predictions_submission.csv and coco/{instances,results,truth}.json (annotations shuffled)."""
        write_submission(self.root / "predictions_submission.csv", self.submission)
        order = np.random.default_rng([int(self.seed), 7]).permutation(len(self.annotations))
        annotations, truth = [], {}
        for new_id, k in enumerate(order, start=1):
            annotations.append({"id": new_id, **self.annotations[k]})
            truth[str(new_id)] = self.hidden[k]
        folder = self.root / "coco"
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "instances.json").write_text(json.dumps(
            {"images": self.images, "categories": [CAR_CATEGORY], "annotations": annotations}))
        results = [{key: a[key] for key in ("image_id", "category_id", "segmentation", "score", "bbox")}
                   for a in annotations]
        (folder / "results.json").write_text(json.dumps(results))
        (folder / "truth.json").write_text(json.dumps(
            {"indexing": "0-based positions in the rows of train.csv / predictions.csv; -1: none",
             "annotations": truth, "images": self.per_image}, indent=1))
