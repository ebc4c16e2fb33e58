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


def _format_cars(cars: Iterable[CarPose]) -> tuple[str, str]:
    cars = list(cars)
    prediction = " ".join(" ".join([str(int(c.model_type))] + [_num(v) for v in (*c.rotation, *c.translation)])
                          for c in cars)
    return prediction, " ".join(_num(c.confidence) for c in cars)


def write_refined(path: Path, order: list[str], results: dict[str, ImageResult],
                  raw: dict[str, tuple[str, str | None]]) -> None:
    """refined.csv in the train format: one row per input image in input order; rows that could not be
    read are copied as written."""
    import io

    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["ImageId", "PredictionString", "Confidence"])
    for image_id in order:
        if image_id in results:
            writer.writerow([image_id, *_format_cars(results[image_id].refined_poses())])
        else:
            prediction, confidence = raw[image_id]
            writer.writerow([image_id, prediction, confidence or ""])
    write_atomic(Path(path), buffer.getvalue())
