"""Pose files: the Kaggle train format and the submission format.

Train format (what nmrlight reads and writes): header `ImageId,PredictionString[,Confidence]`, one row
an image; PredictionString holds seven numbers a car, `model_type v1 v2 v3 x y z`; the optional
Confidence column holds one score a car (space separated, same order), 1.0 each without it. An empty
PredictionString is an image with no cars.

Submission format (what most competition detectors write; read with `submission=True`): header
`ImageId,PredictionString`, seven numbers a car `v1 v2 v3 x y z confidence`, no model_type (read back
as -1). A row alone cannot tell the two apart: `detect_format` decides from the whole file.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from nmrlight.errors import NmrlightError
from nmrlight.io.cars import CAR_NAMES

NUMBERS_PER_CAR = 7
FORMATS = ("train", "submission", "auto")


@dataclass
class CarPose:
    """One car: model id (-1 when unknown), Kaggle angles (v1, v2, v3) in radians, centre in metres."""

    model_type: int
    rotation: tuple[float, float, float]
    translation: tuple[float, float, float]
    confidence: float = 1.0


class _RowError(Exception):
    pass


def _floats(text: str, what: str) -> list[float]:
    values = []
    for token in text.split():
        try:
            value = float(token)
        except ValueError:
            raise _RowError(f"{what}: {token!r} is not a number") from None
        if not math.isfinite(value):
            raise _RowError(f"{what}: {token!r} is not finite")
        values.append(value)
    return values


def _parse_row(prediction: str, confidence: str | None, submission: bool) -> list[CarPose]:
    values = _floats(prediction, "PredictionString")
    if len(values) % NUMBERS_PER_CAR:
        raise _RowError(f"PredictionString holds {len(values)} numbers, not a multiple of {NUMBERS_PER_CAR}")
    n = len(values) // NUMBERS_PER_CAR
    cars = [values[i * NUMBERS_PER_CAR:(i + 1) * NUMBERS_PER_CAR] for i in range(n)]
    if submission:
        return [CarPose(-1, tuple(c[0:3]), tuple(c[3:6]), c[6]) for c in cars]
    scores = [1.0] * n
    if confidence is not None:
        scores = _floats(confidence, "Confidence")
        if len(scores) != n:
            raise _RowError(f"Confidence holds {len(scores)} scores for {n} cars")
    poses = []
    for k, (c, score) in enumerate(zip(cars, scores, strict=True), start=1):
        if not c[0].is_integer() or not 0 <= c[0] < len(CAR_NAMES):
            raise _RowError(f"car {k}: model_type {c[0]:g} is not an integer in 0..{len(CAR_NAMES) - 1}")
        poses.append(CarPose(int(c[0]), tuple(c[1:4]), tuple(c[4:7]), score))
    return poses


def _read(path: str | Path, submission: bool, lenient: bool
          ) -> tuple[dict[str, list[CarPose]], dict[str, str]]:
    path = Path(path)
    try:
        handle = path.open(newline="")
    except FileNotFoundError:
        raise NmrlightError(f"pose file {path}: file not found") from None
    except OSError as exc:
        raise NmrlightError(f"pose file {path}: cannot read ({exc})") from None
    poses: dict[str, list[CarPose]] = {}
    errors: dict[str, str] = {}
    first_line: dict[str, int] = {}
    with handle:
        reader = csv.reader(handle)
        try:
            header = next(reader, None)
            if header is None:
                raise NmrlightError(f"pose file {path}: empty file (expected the header "
                                    "ImageId,PredictionString)")
            header = [h.strip().lstrip("\ufeff") for h in header]
            if "ImageId" not in header or "PredictionString" not in header:
                raise NmrlightError(f"pose file {path}: header must name ImageId and PredictionString, "
                                    f"got {','.join(header)!r}")
            i_id, i_pred = header.index("ImageId"), header.index("PredictionString")
            i_conf = header.index("Confidence") if "Confidence" in header and not submission else None
            for row in reader:
                if not row or all(not cell.strip() for cell in row):
                    continue
                line = reader.line_num
                image_id = row[i_id].strip() if i_id < len(row) else ""
                try:
                    if not image_id:
                        raise _RowError("empty ImageId")
                    if image_id in first_line:
                        raise _RowError(f"duplicate ImageId (first on line {first_line[image_id]})")
                    prediction = row[i_pred] if i_pred < len(row) else ""
                    confidence = row[i_conf] if i_conf is not None and i_conf < len(row) else None
                    cars = _parse_row(prediction, confidence, submission)
                except _RowError as exc:
                    message = f"pose file {path}, line {line}, ImageId {image_id or '?'}: {exc}"
                    if not lenient:
                        raise NmrlightError(message) from None
                    errors.setdefault(image_id or f"<line {line}>", message)
                    continue
                first_line[image_id] = line
                poses[image_id] = cars
        except csv.Error as exc:
            raise NmrlightError(f"pose file {path}, line {reader.line_num}: malformed CSV ({exc})") from None
        except UnicodeDecodeError:
            raise NmrlightError(f"pose file {path}: not a text file") from None
    return poses, errors


def read_poses(path: str | Path, submission: bool = False) -> dict[str, list[CarPose]]:
    """Read a pose file (train format, or the submission format with `submission=True`).

    Returns {ImageId: cars} in file order. Any malformed row raises NmrlightError naming file, line
    and ImageId.
    """
    return _read(path, submission, lenient=False)[0]


def read_poses_lenient(path: str | Path, submission: bool = False
                       ) -> tuple[dict[str, list[CarPose]], dict[str, str]]:
    """Like `read_poses`, but skips malformed rows and returns them as {ImageId: error message}.

    For batch runs. A duplicate ImageId keeps its first row. A broken header still raises.
    """
    return _read(path, submission, lenient=True)


def _num(value: float) -> str:
    """Shortest text that reads back as the same float64 (repr)."""
    value = float(value)
    if not math.isfinite(value):
        raise NmrlightError(f"cannot write non-finite pose value {value}")
    return repr(value)


def _car_numbers(car: CarPose) -> list[float]:
    if len(car.rotation) != 3 or len(car.translation) != 3:
        raise NmrlightError(f"car pose needs 3 rotation and 3 translation values, got {car}")
    return [*car.rotation, *car.translation]


def write_poses(path: str | Path, poses: Mapping[str, Sequence[CarPose]], confidence: bool = True) -> None:
    """Write poses in the train format, with a Confidence column (one score a car) unless told not to."""
    with Path(path).open("w", newline="") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(["ImageId", "PredictionString"] + (["Confidence"] if confidence else []))
        for image_id, cars in poses.items():
            parts = []
            for car in cars:
                if not 0 <= int(car.model_type) < len(CAR_NAMES):
                    raise NmrlightError(f"image {image_id}: car model_type {car.model_type} is not in "
                                        f"0..{len(CAR_NAMES) - 1}; write_submission writes poses without it")
                parts.append(" ".join([str(int(car.model_type))] + [_num(v) for v in _car_numbers(car)]))
            row = [image_id, " ".join(parts)]
            if confidence:
                row.append(" ".join(_num(car.confidence) for car in cars))
            writer.writerow(row)


def write_submission(path: str | Path, poses: Mapping[str, Sequence[CarPose]]) -> None:
    """Write the Kaggle submission format: `v1 v2 v3 x y z confidence` a car, no model_type."""
    with Path(path).open("w", newline="") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(["ImageId", "PredictionString"])
        for image_id, cars in poses.items():
            text = " ".join(" ".join(_num(v) for v in [*_car_numbers(car), car.confidence]) for car in cars)
            writer.writerow([image_id, text])


def detect_format(path: str | Path) -> tuple[str, str]:
    """Decide whether a pose file is in the train or the submission format, from all its rows.

    Returns (format, reason). Train: every car's first number is a model id (an integer in 0..78)
    and its last, the depth, is not always in [0, 1]. Submission: every car's last number is a
    confidence in [0, 1] and its first, the pitch, is not always a model id. A `Confidence` column
    means train. Rows that do not parse are left out of the vote. Raises NmrlightError when both or
    neither fit, asking for --format.
    """
    path = Path(path)
    try:
        with path.open(newline="") as handle:
            reader = csv.reader(handle)
            header = [h.strip().lstrip("\ufeff") for h in (next(reader, None) or [])]
            if "ImageId" not in header or "PredictionString" not in header:
                raise NmrlightError(f"pose file {path}: header must name ImageId and PredictionString, "
                                    f"got {','.join(header)!r}")
            if "Confidence" in header:
                return "train", "it has a Confidence column (the submission format has none)"
            i_pred = header.index("PredictionString")
            cars = ids = confidences = 0
            for row in reader:
                if i_pred >= len(row):
                    continue
                try:
                    values = _floats(row[i_pred], "PredictionString")
                except _RowError:
                    continue
                if not values or len(values) % NUMBERS_PER_CAR:
                    continue
                for k in range(0, len(values), NUMBERS_PER_CAR):
                    first, last = values[k], values[k + NUMBERS_PER_CAR - 1]
                    cars += 1
                    ids += first.is_integer() and 0 <= first < len(CAR_NAMES)
                    confidences += 0.0 <= last <= 1.0
    except FileNotFoundError:
        raise NmrlightError(f"pose file {path}: file not found") from None
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise NmrlightError(f"pose file {path}: cannot read ({exc})") from None
    if cars == 0:
        return "train", "no cars in the file (both formats read it alike)"
    train, submission = ids == cars, confidences == cars
    if train and not submission:
        return "train", f"all {cars} cars start with a model id (0..78)"
    if submission and not train:
        return "submission", (f"all {cars} cars end with a confidence in [0, 1] and {cars - ids} do not "
                              "start with a model id")
    if train and submission:
        raise NmrlightError(f"pose file {path}: the format is ambiguous (every car starts with a model id and "
                            "ends with a number in [0, 1]); give --format train or --format submission")
    raise NmrlightError(f"pose file {path}: neither format fits ({cars - ids} of {cars} cars do not start with "
                        f"a model id, {cars - confidences} do not end with a confidence in [0, 1]); give "
                        "--format train or --format submission")


def resolve_format(path: str | Path, fmt: str) -> tuple[str, str]:
    """(format, reason) for `--format fmt`: fmt itself, or what `detect_format` decides for auto."""
    if fmt not in FORMATS:
        raise NmrlightError(f"--format must be one of {', '.join(FORMATS)}, got {fmt!r}")
    if fmt != "auto":
        return fmt, "given"
    return detect_format(path)
