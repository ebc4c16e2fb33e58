"""What an instance segmenter would output for a synthetic picture: unordered, scored, coarse masks.

A Mask R-CNN-like segmenter predicts each mask on a small grid (28 x 28) inside a slightly wrong box
and upsamples it, so outlines are coarse and wander by about a pixel; it misses some cars the pose
detector found and finds most of those the detector missed (large ones surely, small far ones less
often); nearby masks may overlap.
`segment` draws such masks from the render's exact object ids, keeping for each the index of its
true car, which the written files hide (`coco`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from nmrlight.errors import NmrlightError


@dataclass
class SegmenterModel:
    """How the synthetic segmenter errs.

    `missing_rate`: fraction of the detected (predicted) visible cars that get no mask.
    `extra_rate`: None (default): the segmenter is a model of its own and finds the visible cars the
    detector missed by their visible pixels, each with probability (1 - `missing_rate`) times
    min(1, pixels / `found_pixels`), so a large car in front is found whatever the detector did and a
    small far one less often. A number: the older model, masks of missed cars as that fraction of the
    masks of detected cars (as many as there are missed cars allow), whatever their size.
    `grid`: the mask resolution inside the box. `box_jitter`: relative error of the box edges.
    `min_pixels`: smaller regions are never found.
    """

    missing_rate: float = 0.08
    extra_rate: float | None = None
    found_pixels: int = 400
    grid: int = 28
    box_jitter: float = 0.05
    min_pixels: int = 6

    def __post_init__(self) -> None:
        for name in ("missing_rate", "extra_rate", "box_jitter"):
            value = getattr(self, name)
            if value is not None and not 0.0 <= value <= 1.0:
                raise NmrlightError(f"segmenter {name} must lie in [0, 1], got {value}")
        if self.grid < 2:
            raise NmrlightError(f"segmenter grid must be at least 2, got {self.grid}")


@dataclass
class SegmentedMask:
    """One segmenter mask: the pixels (H, W) bool, a score in (0, 1), and its true car (hidden)."""

    mask: np.ndarray
    score: float
    truth_index: int            # 0-based position in the truth row, -1: not an annotated car


def coarse_mask(region: np.ndarray, rng: np.random.Generator, grid: int = 28, box_jitter: float = 0.05
                ) -> np.ndarray:
    """A segmenter-like copy of the bool mask `region` (H, W): resampled on a grid x grid box, +-1 px.

    The box is the region's bounding box with each edge moved by up to `box_jitter` of its size
    (and 1 px); the region is averaged onto the grid, upsampled bilinearly to the box and cut at a
    random level near 0.5, then shifted by up to 1 px. Pixels outside the image are dropped.
    """
    h, w = region.shape
    rows, cols = np.flatnonzero(region.any(1)), np.flatnonzero(region.any(0))
    if not len(rows):
        return np.zeros_like(region, dtype=bool)
    y0, y1, x0, x1 = rows[0], rows[-1] + 1, cols[0], cols[-1] + 1
    bh, bw = y1 - y0, x1 - x0
    move = rng.uniform(-box_jitter, box_jitter, 4) * np.array([bh, bh, bw, bw]) + rng.integers(-1, 2, 4)
    y0, y1 = int(round(y0 + move[0])), int(round(y1 + move[1]))
    x0, x1 = int(round(x0 + move[2])), int(round(x1 + move[3]))
    y1, x1 = max(y1, y0 + 1), max(x1, x0 + 1)
    # crop the box (zero outside the image) and push it through the grid
    box = np.zeros((y1 - y0, x1 - x0), dtype=np.float32)
    sy0, sy1, sx0, sx1 = max(y0, 0), min(y1, h), max(x0, 0), min(x1, w)
    if sy1 > sy0 and sx1 > sx0:
        box[sy0 - y0:sy1 - y0, sx0 - x0:sx1 - x0] = region[sy0:sy1, sx0:sx1]
    low = F.interpolate(torch.from_numpy(box)[None, None], size=(grid, grid), mode="area")
    up = F.interpolate(low, size=box.shape, mode="bilinear", align_corners=False)[0, 0].numpy()
    coarse = up >= rng.uniform(0.4, 0.6)
    out = np.zeros((h, w), dtype=bool)
    dy, dx = (int(v) for v in rng.integers(-1, 2, 2))
    ty0, ty1, tx0, tx1 = max(y0 + dy, 0), min(y1 + dy, h), max(x0 + dx, 0), min(x1 + dx, w)
    if ty1 > ty0 and tx1 > tx0:
        out[ty0:ty1, tx0:tx1] = coarse[ty0 - y0 - dy:ty1 - y0 - dy, tx0 - x0 - dx:tx1 - x0 - dx]
    return out


def _score(pixels: int, rng: np.random.Generator) -> float:
    """Segmenter confidence: high for large masks, lower and noisier for small far ones."""
    logit = 0.8 * np.log10(max(pixels, 1)) - 0.5 + rng.normal(0.0, 0.6)
    return float(np.clip(0.05 + 0.95 / (1.0 + np.exp(-logit)), 0.05, 0.999))


def segment(object_id: np.ndarray, detected: list[int], n_cars: int, rng: np.random.Generator,
            model: SegmenterModel | None = None, unannotated: list[int] | None = None
            ) -> list[SegmentedMask]:
    """Segmenter masks of a picture whose exact render object ids are `object_id` (H, W; -1 background).

    Objects 0..n_cars-1 are the annotated cars (truth row order); `detected` lists those the pose
    detector predicted. Each detected car with at least `min_pixels` visible pixels gets a mask
    unless missed (`missing_rate`); the other visible cars get masks by their visible pixels, or at
    `extra_rate` relative to the detected masks (`SegmenterModel`). Objects in `unannotated` (rendered,
    not in the truth) may get masks too, with truth_index -1. Masks come in truth order; the writer
    shuffles them.
    """
    model = model or SegmenterModel()
    pixels = np.bincount(object_id[object_id >= 0].ravel(), minlength=n_cars)
    visible = [i for i in range(n_cars) if pixels[i] >= model.min_pixels]
    found = set(detected)
    keep = [i for i in visible if i in found and rng.random() >= model.missing_rate]
    others = [i for i in visible if i not in found]
    others += [i for i in (unannotated or []) if i < len(pixels) and pixels[i] >= model.min_pixels]
    if others and model.extra_rate is None:   # found by their own pixels
        found_rate = 1.0 - model.missing_rate
        keep += [i for i in others if rng.random() < found_rate * min(1.0, pixels[i] / model.found_pixels)]
    elif others:
        p = min(1.0, model.extra_rate * len(keep) / len(others))
        keep += [i for i in others if rng.random() < p]
    masks = []
    for i in sorted(keep):
        mask = coarse_mask(object_id == i, rng, model.grid, model.box_jitter)
        if mask.any():
            masks.append(SegmentedMask(mask, _score(int(pixels[i]), rng), i if i < n_cars else -1))
    return masks
