"""Instance masks from the render's object ids: the detector-like label images of masks/."""

from __future__ import annotations

import numpy as np
from scipy import ndimage


def detector_labels(object_id: np.ndarray, depths: np.ndarray, rng: np.random.Generator | None,
                    label_of: np.ndarray | None = None) -> np.ndarray:
    """Label image from the render's object ids: label_of[i] (default i + 1) for object i, 0 elsewhere.

    With `rng`, each region is dilated or eroded by 0-2 px (0-1 below 2000 px, none below 150) and
    shifted by up to 1 px; regions are
    painted far to near (by `depths`) so nearer cars win. Objects with no pixels get no label.
    """
    n = len(depths)
    label_of = np.arange(1, n + 1) if label_of is None else np.asarray(label_of)
    if rng is None:
        labels = np.zeros(object_id.shape, dtype=np.int32)
        fg = object_id >= 0
        labels[fg] = label_of[object_id[fg]]
        return labels
    labels = np.zeros(object_id.shape, dtype=np.int32)
    h, w = object_id.shape
    objects = ndimage.find_objects(object_id + 1, max_label=n)
    for i in np.argsort(-np.asarray(depths)):
        box = objects[i]
        if box is None or label_of[i] <= 0:
            continue
        pad = 3
        y0, y1 = max(0, box[0].start - pad), min(h, box[0].stop + pad)
        x0, x1 = max(0, box[1].start - pad), min(w, box[1].stop + pad)
        region = object_id[y0:y1, x0:x1] == i
        area = int(region.sum())
        reach = 2 if area >= 2000 else 1 if area >= 150 else 0   # small regions get small errors
        radius = int(rng.integers(-2, 3))
        radius = int(np.clip(radius, -reach, reach))
        if radius > 0:
            changed = ndimage.binary_dilation(region, iterations=radius)
        elif radius < 0:
            changed = ndimage.binary_erosion(region, iterations=-radius)
            if not changed.any():
                changed = region
        else:
            changed = region
        dy, dx = (rng.integers(-1, 2, 2) if rng.random() < 0.5 else (0, 0))
        changed = np.roll(changed, (int(dy), int(dx)), axis=(0, 1))
        labels[y0:y1, x0:x1][changed] = label_of[i]
    return labels

