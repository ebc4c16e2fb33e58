"""How well the learned lighting matches the truth: direction and ambient-share errors by material
model and number of cars, and whether the uncertainty and the self-consistency angle track the error.

For each photograph of a data folder with a true lighting.csv, the cars (poses from train.csv by
default, so pose errors do not mix in; or a predictions file) are sampled once, as `nmrlight refine`
samples them, most mask pixels first; then each model is fitted on the first n of them for each n
asked. A photograph counts for n only when it has n usable cars, so each cell says how many
photographs it rests on.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace

import numpy as np
from scipy import stats

from nmrlight.io.dataset import DataFolder
from nmrlight.io.poses import CarPose
from nmrlight.refine.config import RefineConfig
from nmrlight.refine.image import fit_samples, lighting_samples
from nmrlight.refine.lighting.fit import MIN_PIXELS, direction_error_deg, normalise_truth
from nmrlight.refine.prepare import ImageMasks, attach_masks, pose_cars

# the first model (one albedo a car, Huber), then the geometric material classes, the Cauchy
# reweighting, the agreement of cars, and the classes from the pixels with paint only and cars
# weighed by their pixels, added one at a time; the last is the default (the uncertainty and the
# self-consistency check are computed for the default only: they cost 16 fits)
_PLAIN = {"lighting_agree": 0.0, "lighting_bootstrap": 0, "lighting_consistency": False}
_GEOMETRIC = {"lighting_reclassify": 0.0, "lighting_other_weight": 1.0, "lighting_car_power": 0.0}
MODELS: dict[str, dict] = {
    "one albedo a car, Huber": {"lighting_materials": "single", "lighting_robust": "huber", **_PLAIN, **_GEOMETRIC},
    "classes, Cauchy": {"lighting_materials": "classes", "lighting_robust": "cauchy", **_PLAIN, **_GEOMETRIC},
    "classes, Cauchy, agreement": {"lighting_bootstrap": 0, "lighting_consistency": False, **_GEOMETRIC},
    # the default fit with the previous round's self-consistency (one alternating split, no bootstrap):
    # to compare the two consistency angles on the same photographs
    "default fit, single-split consistency (before)": {"lighting_consistency_splits": 1, "lighting_bootstrap": 0},
    "pixel classes, paint only, pixel weights (default)": {},
}
ALL = 0   # "all usable cars" in `counts`


@dataclass
class LightingRow:
    """One photograph, one model, one number of cars."""

    image_id: str
    model: str
    cars: int                    # cars asked for (0: all usable)
    cars_used: int               # after the agreement step
    direction_error_deg: float
    ambient_error: float         # fitted l_a - true A / (A + D)
    direction_sd_deg: float | None
    ambient_sd: float | None
    consistency_deg: float | None
    consistency_ambient: float | None

    def to_dict(self) -> dict:
        return dict(self.__dict__)


def evaluate_lighting(data: DataFolder, poses: dict[str, list[CarPose]],
                      truth: dict[str, tuple[float, float, tuple[float, float, float]]],
                      counts: tuple[int, ...] = (1, 2, 3, 5, 8, ALL), models: dict[str, dict] | None = None,
                      base: RefineConfig | None = None, progress: Callable[[], None] | None = None
                      ) -> list[LightingRow]:
    """Fit every model on the first n cars of each photograph of `truth` for each n of `counts` (0: all)."""
    base = base or RefineConfig(threads=1)
    models = MODELS if models is None else models
    rows = []
    for image_id, light in truth.items():
        cars = poses.get(image_id, [])
        photo = data.read_image(image_id, "gray")
        labels = data.read_mask(image_id, shape=photo.shape)
        camera = data.camera(photo.shape[1], photo.shape[0])
        state = pose_cars(data, cars, camera, base)
        attach_masks(state, ImageMasks(labels, None), camera, base)
        limit = 0 if ALL in counts else max(counts)
        samples = [s for s in lighting_samples(state, camera, photo, labels, base, limit) if len(s) >= MIN_PIXELS]
        la_true = normalise_truth(light[0], light[1])[0]
        for name, overrides in models.items():
            config = replace(base, **overrides)
            for n in counts:
                if n > len(samples) or not samples:
                    continue
                fit, used = fit_samples(samples[:n] if n != ALL else samples, config)
                if fit is None:
                    continue
                rows.append(LightingRow(image_id, name, n, len(used), direction_error_deg(fit.direction, light[2]),
                                        fit.ambient - la_true, fit.direction_sd_deg, fit.ambient_sd,
                                        fit.consistency_deg, fit.consistency_ambient))
        if progress is not None:
            progress()
    return rows


def truth_in_prediction_order(truth: dict[str, list[CarPose]], predictions: dict[str, list[CarPose]],
                              tolerance: float = 0.25) -> dict[str, list[CarPose]]:
    """For each predicted car, the true car nearest to it (relative translation within `tolerance`).

    Mask labels follow the rows of predictions.csv (k = k-th prediction); where the detector missed
    cars or added false ones (the kaggle preset), train.csv's rows do not line up with the masks. A
    prediction with no true car near it (a false positive) keeps its own pose: it has no mask anyway.
    """
    out = {}
    for image_id, preds in predictions.items():
        gts = truth.get(image_id, [])
        t_true = np.array([g.translation for g in gts], float).reshape(-1, 3)
        row = []
        for pred in preds:
            t = np.asarray(pred.translation, float)
            if len(gts):
                gap = np.linalg.norm(t_true - t, axis=1) / np.linalg.norm(t_true, axis=1)
                k = int(np.argmin(gap))
                if gap[k] <= tolerance:
                    row.append(gts[k])
                    continue
            row.append(pred)
        out[image_id] = row
    return out


def _order(n: int) -> int:
    return n if n != ALL else 1 << 30      # "all" last


def _label(n: int) -> str:
    return "all" if n == ALL else str(n)


def _cell(rows: list[LightingRow]) -> str:
    d = np.array([r.direction_error_deg for r in rows])
    a = np.abs([r.ambient_error for r in rows])
    return (f"{len(rows)} | {np.median(d):.1f} | {np.percentile(d, 90):.1f} | {np.median(a):.3f} | "
            f"{np.mean([r.ambient_error for r in rows]):+.3f}")


def summary_table(rows: list[LightingRow]) -> str:
    """Markdown: per model and number of cars, photographs, direction error median / 90th percentile,
    median |ambient-share error| and its mean (the bias)."""
    lines = ["| model | cars | photographs | direction error median (deg) | 90th pct (deg) "
             "| ambient share abs. error median | mean (bias) |", "|---|---|---|---|---|---|---|"]
    for model in dict.fromkeys(r.model for r in rows):
        for n in sorted({r.cars for r in rows if r.model == model}, key=_order):
            cell = [r for r in rows if r.model == model and r.cars == n]
            lines.append(f"| {model} | {_label(n)} | {_cell(cell)} |")
    return "\n".join(lines)


def tracking_table(rows: list[LightingRow], model: str) -> str:
    """Markdown: does the self-consistency angle (and the bootstrap spread) track the true error?

    Spearman's rank correlation over photographs, per number of cars, and the median true error of
    the photographs whose consistency angle is below / above its median.
    """
    lines = ["| cars | photographs | Spearman(consistency angle, true error) | p | median consistency angle (deg) "
             "| true error where consistent / not (deg) | Spearman(bootstrap sd, true error) |",
             "|---|---|---|---|---|---|---|"]
    for n in sorted({r.cars for r in rows if r.model == model}, key=_order):
        cell = [r for r in rows if r.model == model and r.cars == n and r.consistency_deg is not None]
        if len(cell) < 4:
            continue
        err = np.array([r.direction_error_deg for r in cell])
        con = np.array([r.consistency_deg for r in cell])
        rho, p = stats.spearmanr(con, err)
        low = con <= np.median(con)
        sds = [r for r in cell if r.direction_sd_deg is not None]
        sd_rho = (f"{stats.spearmanr([r.direction_sd_deg for r in sds], [r.direction_error_deg for r in sds])[0]:.2f}"
                  if len(sds) >= 4 else "-")
        lines.append(f"| {_label(n)} | {len(cell)} | {rho:.2f} | {p:.3f} | {np.median(con):.1f} | "
                     f"{np.median(err[low]):.1f} / {np.median(err[~low]):.1f} | {sd_rho} |")
    return "\n".join(lines)
