"""The outputs of a refinement run besides refined.csv: OUT/lighting.csv, and the report
(OUT/report.json, OUT/report.html, OUT/report/; built by nmrlight.report, rebuilt by `nmrlight report`).
"""

from __future__ import annotations

import csv
import json
from collections.abc import Mapping, Sequence
from dataclasses import asdict
from pathlib import Path

from nmrlight.io.dataset import DataFolder
from nmrlight.io.poses import CarPose, write_poses
from nmrlight.refine.result import ImageResult, LightingResult

FIRST_COLUMNS = ("ambient", "directional", "dx", "dy", "dz")


def write_refined_csv(path: str | Path, results: Sequence[ImageResult]) -> None:
    """refined.csv (train format with confidences) from the results, in their order."""
    write_poses(path, {r.image_id: r.refined_poses() for r in results}, confidence=True)


def lighting_row(lighting: LightingResult) -> dict[str, str]:
    """Every field of the lighting as text: the direction as dx, dy, dz, numbers as repr, text as is, lists and
    dicts as JSON, None as empty (fields added to LightingResult later appear without code change)."""
    fields = lighting.to_dict() if hasattr(lighting, "to_dict") else asdict(lighting)
    row: dict[str, str] = {}
    for name, value in fields.items():
        if name == "direction":
            row.update({axis: repr(float(v)) for axis, v in zip(("dx", "dy", "dz"), value, strict=True)})
        elif value is None:
            row[name] = ""
        elif isinstance(value, bool):
            row[name] = str(value)
        elif isinstance(value, (int, float)):
            row[name] = repr(float(value)) if isinstance(value, float) else str(value)
        elif isinstance(value, str):
            row[name] = value
        else:
            row[name] = json.dumps(value, sort_keys=True)
    return row


def write_lighting_csv(path: str | Path, results: Sequence[ImageResult]) -> None:
    """One row per image with a lighting: ImageId, ambient, directional, dx, dy, dz, then every other
    field of LightingResult (l_a + l_d = 1 when learned)."""
    rows = [(r.image_id, lighting_row(r.lighting)) for r in results if r.lighting is not None]
    columns = list(FIRST_COLUMNS)
    for _, row in rows:
        columns += [k for k in row if k not in columns]
    with Path(path).open("w", newline="") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(["ImageId", *columns])
        for image_id, row in rows:
            writer.writerow([image_id, *(row.get(c, "") for c in columns)])


def write_reports(out_dir: str | Path, results: Sequence[ImageResult], data: DataFolder | None,
                  predictions: Mapping[str, list[CarPose]] | None = None,
                  truth: Mapping[str, list[CarPose]] | None = None, gt_path: str | Path | None = None,
                  workers: int = 1):
    """OUT/lighting.csv, OUT/report.json, OUT/report.html and OUT/report/ (refined.csv is the runner's).

    `predictions` (the input poses) is accepted for the runner's contract; the results carry them.
    Returns the report build's statistics (pages written and skipped, notes).
    """
    from nmrlight.report.build import build_report

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    results = list(results)
    write_lighting_csv(out / "lighting.csv", results)
    return build_report(out, results, data, truth, gt_path, workers=workers)
