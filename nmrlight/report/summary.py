"""The numbers of a run report: one row per car, and the run's summary computed from those rows.

Everything the report shows comes from here: report.json holds `summary_of(results)` verbatim and the
summary page prints the same dict, so the page can be checked against the file.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field

import numpy as np

from nmrlight.refine.result import CarResult, ImageResult
from nmrlight.rotations import geodesic_angle_deg, kaggle_to_matrix

FEATURED_CARS = 8        # worst and most-moved cars shown on the summary page
FAILED_LISTED = 50       # failed images listed by name in the summary


@dataclass
class CarRow:
    """One car of the run as the report shows it (the table of cars, the plots, the summary)."""

    image_id: str
    index: int
    status: str
    model_type: int
    depth_m: float                      # initial camera z
    iou_before: float | None
    iou_after: float | None
    seconds: float
    iterations: int
    rotation_change_deg: float          # geodesic angle between initial and refined rotation
    depth_change_rel: float             # (z_refined - z_initial) / z_initial
    shift_m: float                      # |t_refined - t_initial|
    extra: dict = field(default_factory=dict)

    @property
    def optimised(self) -> bool:
        """The pose optimisation ran for this car (refined, or kept its initial pose as better)."""
        return self.iou_after is not None

    def to_dict(self) -> dict:
        return asdict(self)


def car_rows(results: Sequence[ImageResult]) -> list[CarRow]:
    """The report's row of every car, with how far it moved (rotations converted in one batch)."""
    cars: list[tuple[str, CarResult]] = [(r.image_id, c) for r in results for c in r.cars]
    if not cars:
        return []
    r0 = kaggle_to_matrix(np.asarray([c.initial.rotation for _, c in cars], dtype=np.float64))
    r1 = kaggle_to_matrix(np.asarray([c.refined.rotation for _, c in cars], dtype=np.float64))
    turned = np.atleast_1d(np.asarray(geodesic_angle_deg(r0, r1), dtype=np.float64))
    t0 = np.asarray([c.initial.translation for _, c in cars], dtype=np.float64)
    t1 = np.asarray([c.refined.translation for _, c in cars], dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        depth = np.where(t0[:, 2] != 0, (t1[:, 2] - t0[:, 2]) / t0[:, 2], 0.0)
    shift = np.linalg.norm(t1 - t0, axis=1)
    return [CarRow(image_id=image_id, index=car.index, status=car.status, model_type=int(car.initial.model_type),
                   depth_m=float(t0[k, 2]), iou_before=car.iou_before, iou_after=car.iou_after,
                   seconds=float(car.seconds), iterations=int(car.iterations),
                   rotation_change_deg=float(turned[k]), depth_change_rel=float(depth[k]), shift_m=float(shift[k]),
                   extra=dict(car.extra))
            for k, (image_id, car) in enumerate(cars)]


def stats(values: Sequence[float | None]) -> dict:
    """n, mean, median, 10th and 90th percentile, min and max of the values that are not None."""
    v = np.asarray([x for x in values if x is not None and math.isfinite(x)], dtype=np.float64)
    if v.size == 0:
        return {"n": 0, "mean": None, "median": None, "p10": None, "p90": None, "min": None, "max": None}
    return {"n": int(v.size), "mean": float(v.mean()), "median": float(np.median(v)),
            "p10": float(np.percentile(v, 10)), "p90": float(np.percentile(v, 90)),
            "min": float(v.min()), "max": float(v.max())}


def _counts(values: Sequence[str]) -> dict[str, int]:
    out: dict[str, int] = {}
    for v in values:
        out[v] = out.get(v, 0) + 1
    return dict(sorted(out.items(), key=lambda kv: (-kv[1], kv[0])))


def _featured(row: CarRow) -> dict:
    return {"image_id": row.image_id, "index": row.index, "status": row.status, "iou_before": row.iou_before,
            "iou_after": row.iou_after, "rotation_change_deg": row.rotation_change_deg,
            "depth_change_rel": row.depth_change_rel}


def _lighting(results: Sequence[ImageResult]) -> dict:
    lit = [r.lighting for r in results if r.lighting is not None and r.status == "ok"]
    if not lit:
        return {"images": 0, "ambient": stats([]), "directional": stats([]), "direction_mean": None}
    directions = np.asarray([li.direction for li in lit], dtype=np.float64)
    norms = np.linalg.norm(directions, axis=1, keepdims=True)
    unit = directions / np.where(norms > 0, norms, 1.0)
    mean = unit.mean(axis=0)
    spread = float(np.linalg.norm(mean))   # 1: every photograph lit from the same side, 0: no agreement
    return {"images": len(lit), "ambient": stats([li.ambient for li in lit]),
            "directional": stats([li.directional for li in lit]),
            "direction_mean": [float(x) for x in mean / (spread or 1.0)], "direction_agreement": spread}


def summary_of(results: Sequence[ImageResult], rows: Sequence[CarRow] | None = None) -> dict:
    """The run's summary: counts by status, time, overlap, movement, lights, worst and most-moved cars."""
    rows = car_rows(results) if rows is None else rows
    optimised = [r for r in rows if r.optimised]
    with_iou = [r for r in optimised if r.iou_before is not None]
    failed = [r for r in results if r.status != "ok"]
    worst = sorted(with_iou, key=lambda r: (r.iou_after, r.image_id, r.index))[:FEATURED_CARS]
    moved = sorted(optimised, key=lambda r: (-r.rotation_change_deg, r.image_id, r.index))[:FEATURED_CARS]
    return {
        "images": len(results),
        "images_by_status": _counts([r.status for r in results]),
        "cars": len(rows),
        "cars_by_status": _counts([r.status for r in rows]),
        "cars_optimised": len(optimised),
        "seconds_images": float(sum(r.seconds for r in results)),
        "seconds_per_image": stats([r.seconds for r in results if r.status == "ok"]),
        "seconds_per_car": stats([r.seconds for r in optimised]),
        "iou_before": stats([r.iou_before for r in with_iou]),
        "iou_after": stats([r.iou_after for r in with_iou]),
        "iou_improved_fraction": (float(np.mean([r.iou_after > r.iou_before for r in with_iou]))
                                  if with_iou else None),
        "rotation_change_deg": stats([r.rotation_change_deg for r in optimised]),
        "depth_change_rel_abs": stats([abs(r.depth_change_rel) for r in optimised]),
        "shift_m": stats([r.shift_m for r in optimised]),
        "lighting": _lighting(results),
        "worst_cars": [_featured(r) for r in worst],
        "most_moved_cars": [_featured(r) for r in moved],
        "failed_images": [{"image_id": r.image_id, "error": r.error or "failed"} for r in failed[:FAILED_LISTED]],
    }
