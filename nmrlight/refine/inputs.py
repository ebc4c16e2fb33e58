"""The predictions file of a run: parsed rows, the errors of unreadable rows, each row's raw text."""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

from nmrlight.errors import NmrlightError
from nmrlight.io.poses import CarPose, read_poses_lenient


@dataclass
class RunInputs:
    order: list[str]                              # every ImageId of the file, first occurrence order
    poses: dict[str, list[CarPose]]               # readable rows
    errors: dict[str, str]                        # unreadable rows
    raw: dict[str, tuple[str, str | None]]        # ImageId -> (PredictionString, Confidence) as written


def read_inputs(path: Path, submission: bool = False) -> RunInputs:
    """The predictions file: parsed rows, the errors of bad rows, and each row's raw text (pass-through)."""
    poses, errors = read_poses_lenient(path, submission=submission)
    order: list[str] = []
    raw: dict[str, tuple[str, str | None]] = {}
    with Path(path).open(newline="") as handle:
        reader = csv.reader(handle)
        header = [h.strip().lstrip("\ufeff") for h in next(reader)]
        i_id, i_pred = header.index("ImageId"), header.index("PredictionString")
        i_conf = header.index("Confidence") if "Confidence" in header else None
        for row in reader:
            image_id = row[i_id].strip() if i_id < len(row) else ""
            if not image_id or image_id in raw:
                continue
            order.append(image_id)
            raw[image_id] = (row[i_pred] if i_pred < len(row) else "",
                             row[i_conf] if i_conf is not None and i_conf < len(row) else None)
    return RunInputs(order, poses, errors, raw)


def select_images(order: list[str], images: list[str] | None, limit: int | None) -> list[str]:
    if images is not None and limit is not None:
        raise NmrlightError("give --images or --limit, not both")
    if images is not None:
        known = set(order)
        missing = [i for i in images if i not in known]
        if missing:
            raise NmrlightError(f"--images: not in the predictions file: {', '.join(missing[:5])}"
                                f"{' ...' if len(missing) > 5 else ''}")
        wanted = set(images)
        return [i for i in order if i in wanted]
    if limit is not None:
        if limit < 1:
            raise NmrlightError(f"--limit must be at least 1, got {limit}")
        return order[:limit]
    return list(order)
