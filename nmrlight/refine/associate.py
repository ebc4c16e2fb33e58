"""Pair a segmenter's unordered instance masks with the predicted cars of one photograph.

Each car is rendered at its initial pose with all the other cars (so a car hidden behind a nearer one
is compared by the part of it that shows) at a coarse scale; each pair (car, mask) gets an overlap
score robust to the detector's errors, and a global one-to-one matching
(`scipy.optimize.linear_sum_assignment`) maximises the total score. Pairs below a minimum score are
never matched: such cars get no mask, such masks are cars the detector missed.

The score is the larger of the plain IoU and the *box-aligned* IoU (the car's silhouette shifted so
its box centre lies on the mask's) damped by how far it had to be shifted, relative to the car's size.
A detector's lateral error is a constant few pixels, a lot for a small far car, and its ~7 % depth
error changes the silhouette's size, so the plain IoU of a far car and its own mask can be near zero;
the aligned IoU keeps the shape and size evidence, the damping keeps a car from taking a mask of a
similar car one lane over. The mask's own score breaks ties. A partly hidden car also gets a *hidden*
score (`hidden_score`): its whole silhouette placed so the mask is its visible part, the rest covered
by the masks that may hide it (`occluders`: for a car the render shows whole, only nearer cars' and
missed cars' masks).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy.optimize import linear_sum_assignment

from nmrlight.refine.window import Box, mask_box

TIE_BREAK = 0.02   # weight of the segmenter's score in the matching (0..1 scores): ties only


@dataclass
class Match:
    """What one car got: the index of its mask in the list given (None: no mask) and the pair's score."""

    mask: int | None
    score: float


def _centre(box: Box) -> tuple[float, float]:
    return 0.5 * (box.x0 + box.x1), 0.5 * (box.y0 + box.y1)


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    union = np.logical_or(a, b).sum()
    return float(np.logical_and(a, b).sum() / union) if union else 0.0


def _shifted(mask: np.ndarray, dx: int, dy: int) -> np.ndarray:
    """`mask` moved by (dx, dy) pixels, what leaves the frame dropped."""
    out = np.zeros_like(mask)
    h, w = mask.shape
    ys, yd = (slice(0, h - dy), slice(dy, h)) if dy >= 0 else (slice(-dy, h), slice(0, h + dy))
    xs, xd = (slice(0, w - dx), slice(dx, w)) if dx >= 0 else (slice(-dx, w), slice(0, w + dx))
    if abs(dx) < w and abs(dy) < h:
        out[yd, xd] = mask[ys, xs]
    return out


def pair_score(silhouette: np.ndarray, mask: np.ndarray, reach: float = 0.5, slack: float = 0.0) -> float:
    """Overlap score in [0, 1] of a car's visible silhouette and a mask (bool arrays, same shape).

    max(IoU, aligned IoU * exp(-0.5 (d / s)^2)): d the distance between the two boxes' centres,
    s = max(reach * size, slack), size the geometric mean of the silhouette box's sides, slack (pixels)
    the detector's typical lateral error, about constant in pixels whatever the car's distance.
    """
    sbox, mbox = mask_box(silhouette), mask_box(mask)
    if sbox is None or mbox is None:
        return 0.0
    (sx, sy), (mx, my) = _centre(sbox), _centre(mbox)
    size = math.sqrt(sbox.width * sbox.height)
    distance = math.hypot(mx - sx, my - sy)
    damping = math.exp(-0.5 * (distance / max(reach * size, slack, 1e-6)) ** 2)
    if damping < 1e-3:
        return 0.0
    # compare in the box holding both boxes and the shifted silhouette box, not the whole frame
    dx, dy = int(round(mx - sx)), int(round(my - sy))
    x0, y0 = max(min(sbox.x0, sbox.x0 + dx, mbox.x0), 0), max(min(sbox.y0, sbox.y0 + dy, mbox.y0), 0)
    x1, y1 = max(sbox.x1, sbox.x1 + dx, mbox.x1), max(sbox.y1, sbox.y1 + dy, mbox.y1)
    s, m = silhouette[y0:y1, x0:x1], mask[y0:y1, x0:x1]
    return max(_iou(s, m), _iou(_shifted(s, dx, dy), m) * damping)


def hidden_score(whole: np.ndarray, mask: np.ndarray, others: np.ndarray, reach: float = 0.5,
                 slack: float = 0.0) -> float:
    """Score in [0, 1] of a mask as the visible part of a partly hidden car (bool arrays, same shape).

    whole: the car rendered alone; others: the union of the other masks. The car's whole silhouette is
    shifted so one of its box edges (or its centre) meets the mask box's, in x and in y (16 shifts); a
    shift scores (share of the mask inside the car) x (share of the car covered by this mask or the
    others, i.e. hidden or shown, not sticking out over background), damped like `pair_score`.
    """
    wbox, mbox = mask_box(whole), mask_box(mask)
    if wbox is None or mbox is None:
        return 0.0
    size = math.sqrt(wbox.width * wbox.height)
    sigma = max(reach * size, slack, 1e-6)
    x0, y0 = max(min(wbox.x0, mbox.x0) - wbox.width, 0), max(min(wbox.y0, mbox.y0) - wbox.height, 0)
    x1, y1 = max(wbox.x1, mbox.x1) + wbox.width, max(wbox.y1, mbox.y1) + wbox.height
    w, m, o = whole[y0:y1, x0:x1], mask[y0:y1, x0:x1], others[y0:y1, x0:x1]
    covered = m | o
    area_m, area_w = m.sum(), w.sum()

    def shifts(a0: int, a1: int, b0: int, b1: int) -> set[int]:
        return {0, int(round(0.5 * (b0 + b1 - a0 - a1))), b0 - a0, b1 - a1}

    best = 0.0
    for dx in shifts(wbox.x0, wbox.x1, mbox.x0, mbox.x1):
        for dy in shifts(wbox.y0, wbox.y1, mbox.y0, mbox.y1):
            damping = math.exp(-0.5 * (math.hypot(dx, dy) / sigma) ** 2)
            if damping <= best:
                continue
            moved = _shifted(w, dx, dy)
            inside = np.logical_and(moved, m).sum() / area_m
            explained = np.logical_and(moved, covered).sum() / max(area_w, 1)
            best = max(best, float(inside * explained * damping))
    return best


FULLY_SHOWN = 0.9  # a car whose render shows this share of its silhouette has nothing in front of it


def occluders(pair: np.ndarray, depths: list[float] | None, min_score: float = 0.3,
              shown: list[float] | None = None) -> np.ndarray:
    """(cars, masks) bool: may mask k be a car in front of car i?

    For a car the render shows whole (`shown`, the visible share of its silhouette, at least
    FULLY_SHOWN): only when the car that fits mask k best (by `pair_score`) is nearer than car i, or
    when no car fits it (score below `min_score`: a car the detector missed, at any depth). Not
    behind the mask it fits best itself nor behind a farther car's: that is what let a fully visible
    near car pass as "mostly hidden behind its own mask" and take the small visible sliver of a
    farther neighbour. For a car the render already shows partly hidden, every mask may hide it:
    there the best fit is unreliable (its visible part depends on the detector's depth order).
    Without `depths`: every mask may hide every car.
    """
    cars, masks = pair.shape
    if depths is None or cars == 0 or masks == 0:
        return np.ones((cars, masks), bool)
    best = np.argmax(pair, axis=0)
    unclaimed = pair.max(axis=0) < min_score
    z = np.asarray(depths, float)
    restricted = unclaimed[None, :] | (z[best][None, :] < z[:, None])
    whole = np.ones(cars, bool) if shown is None else np.asarray(shown, float) >= FULLY_SHOWN
    return np.where(whole[:, None], restricted, True)


def score_matrix(silhouettes: list[np.ndarray], masks: list[np.ndarray], reach: float = 0.5,
                 slack: float = 0.0, whole: list[np.ndarray] | None = None,
                 depths: list[float] | None = None, min_score: float = 0.3) -> np.ndarray:
    """(cars, masks) matrix of `pair_score`s.

    With `whole` (each car rendered alone, unoccluded), a pair also gets its `hidden_score`: for a
    partly hidden car whose rendered visible part says little, when the detector's depth error puts
    it behind the wrong neighbour, or the car that hides it was missed by the detector (its mask is
    there, its render is not). The masks that may hide a car are its `occluders` (by `depths`, the
    cars' camera depths).
    """
    pair = np.zeros((len(silhouettes), len(masks)))
    for i, sil in enumerate(silhouettes):
        if sil.any():
            for j, mask in enumerate(masks):
                pair[i, j] = pair_score(sil, mask, reach, slack)
    if whole is None or not masks:
        return pair
    scores = pair.copy()
    shown = [float(sil.sum()) / max(float(w.sum()), 1.0) for sil, w in zip(silhouettes, whole, strict=True)]
    may_hide = occluders(pair, depths, min_score, shown)
    stack = np.asarray(masks)
    for i in range(len(silhouettes)):
        count = np.sum(stack[may_hide[i]], axis=0, dtype=np.int32)   # zeros when none may hide it
        for j, mask in enumerate(masks):
            others = (count - (mask if may_hide[i, j] else 0)) > 0
            scores[i, j] = max(pair[i, j], hidden_score(whole[i], mask, others, reach, slack))
    return scores


def match(scores: np.ndarray, mask_scores: list[float] | None = None, min_score: float = 0.3) -> list[Match]:
    """One-to-one matching of cars (rows) to masks (columns) maximising the total score.

    Pairs scoring below `min_score` are never matched. `mask_scores` (the segmenter's confidence of
    each mask, 0..1) adds TIE_BREAK times itself, so of two equally fitting masks the surer one wins.
    """
    cars, masks = scores.shape
    if cars == 0 or masks == 0:
        return [Match(None, 0.0) for _ in range(cars)]
    bonus = np.zeros(masks) if mask_scores is None else TIE_BREAK * np.clip(np.asarray(mask_scores, float), 0, 1)
    allowed = scores >= min_score
    gain = np.where(allowed, scores + bonus[None, :], 0.0)
    rows, cols = linear_sum_assignment(gain, maximize=True)
    out = [Match(None, 0.0) for _ in range(cars)]
    for i, j in zip(rows, cols, strict=True):
        if allowed[i, j]:
            out[i] = Match(int(j), float(scores[i, j]))
    return out


def associate(silhouettes: list[np.ndarray], masks: list[np.ndarray], mask_scores: list[float] | None = None,
              min_score: float = 0.3, reach: float = 0.5, slack: float = 0.0,
              whole: list[np.ndarray] | None = None, depths: list[float] | None = None
              ) -> tuple[list[Match], np.ndarray]:
    """Match each car's visible silhouette to at most one mask; returns the matches and the score matrix."""
    scores = score_matrix(silhouettes, masks, reach, slack, whole, depths, min_score)
    return match(scores, mask_scores, min_score), scores
