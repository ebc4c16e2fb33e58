"""Merging a run's per-image results into one pose file, in the input's order."""

from __future__ import annotations

import csv
from collections.abc import Iterable
from pathlib import Path

from nmrlight.io.poses import CarPose
from nmrlight.refine.outdir import write_atomic
from nmrlight.refine.result import ImageResult


def _num(value: float) -> str:
    return repr(float(value))


def _format_cars(cars: Iterable[CarPose], fallback_model: int | None = None) -> tuple[str, str]:
    cars = [CarPose(fallback_model, c.rotation, c.translation, c.confidence)
            if c.model_type < 0 and fallback_model is not None else c for c in cars]
    prediction = " ".join(" ".join([str(int(c.model_type))] + [_num(v) for v in (*c.rotation, *c.translation)])
                          for c in cars)
    return prediction, " ".join(_num(c.confidence) for c in cars)


def write_refined(path: Path, order: list[str], results: dict[str, ImageResult],
                  raw: dict[str, tuple[str, str | None]], fallback_model: int | None = None) -> None:
    """refined.csv in the train format: one row per input image in input order; rows that could not be
    read are copied as written. Cars without a model id (an image of a submission file that failed)
    get `fallback_model`."""
    import io

    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["ImageId", "PredictionString", "Confidence"])
    for image_id in order:
        if image_id in results:
            writer.writerow([image_id, *_format_cars(results[image_id].refined_poses(), fallback_model)])
        else:
            prediction, confidence = raw[image_id]
            writer.writerow([image_id, prediction, confidence or ""])
    write_atomic(Path(path), buffer.getvalue())
