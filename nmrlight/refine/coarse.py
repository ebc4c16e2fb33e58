"""Coarse segmenter masks: where their outline cannot be trusted (issue 10; docs/inputs.md).

A Mask R-CNN-like segmenter predicts each mask on a small grid inside its detected box and pastes
it into that box, so the mask can never reach past the box: where the box edge fell a few percent
inside the car, the mask is cut straight along it, and the car looks shorter (or lower) than it is.
The silhouette term would read that as depth or heading. A `truncation band` just outside each side
of the mask's bounding box (a fraction of the box's size, at least one pixel) is where a car may
show without its mask: there the silhouette term does not charge render pixels outside the mask, and
the photo's edges alone place the outline. Inside the box the coarse outline is still used (the
mask offset absorbs its uniform part).
"""

from __future__ import annotations

import numpy as np

MASK_QUALITIES = ("auto", "coarse", "fine")


def truncation_band(mask: np.ndarray, fraction: float) -> np.ndarray | None:
    """Bool (H, W): pixels outside `mask` within `fraction` of its box size beyond any side of its box.

    mask: bool (H, W), one car's mask (crop). The band reaches max(1, fraction x box width) pixels
    left and right of the box and max(1, fraction x box height) above and below it, along the box's
    (equally widened) extent; None for an empty mask or fraction <= 0.
    """
    if fraction <= 0:
        return None
    rows, cols = np.flatnonzero(mask.any(1)), np.flatnonzero(mask.any(0))
    if not len(rows):
        return None
    y0, y1, x0, x1 = int(rows[0]), int(rows[-1]) + 1, int(cols[0]), int(cols[-1]) + 1
    bx = max(1, int(round(fraction * (x1 - x0))))
    by = max(1, int(round(fraction * (y1 - y0))))
    h, w = mask.shape
    grown = np.zeros((h, w), bool)
    grown[max(y0 - by, 0):y1 + by, max(x0 - bx, 0):x1 + bx] = True
    inside = np.zeros((h, w), bool)
    inside[y0:y1, x0:x1] = True
    return grown & ~inside & ~mask


def is_coarse(quality: str, unordered_coco: bool) -> bool:
    """Whether a run's masks are coarse: `quality` coarse|fine, or auto (a segmenter's unordered COCO
    masks are coarse; label images and COCO masks with car_index are taken as exact enough)."""
    return quality == "coarse" or (quality == "auto" and unordered_coco)


def band_weights(views: list, mask: np.ndarray, fraction: float, weight: float) -> None:
    """Give each view (`window.View`) a silhouette weight with the truncation band of `mask` at `weight`:
    stored as view.cache["silhouette_weight"], which the silhouette term uses instead of view.weight."""
    from nmrlight.refine.window import _resample

    band = truncation_band(mask, fraction)
    if band is None or not band.any():
        return
    for view in views:
        h, w = view.weight.shape
        share = _resample(band.astype(np.float32), h, w)
        view.cache["silhouette_weight"] = view.weight * (1.0 - (1.0 - weight) * share.to(view.weight.dtype))
