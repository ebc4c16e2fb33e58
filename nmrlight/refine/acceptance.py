"""Acceptance of a refined pose: a pose that does not explain its own mask is not taken.

Used with or without the global stage (`refine/global_stage.py`): a refined pose whose final IoU with its
mask is too low, or that moved far along its ray to a middling fit, is not taken as it is: it may be a
wrong basin. It is still evidence, though weak: most rejected refinements of partly hidden cars ended
nearer the truth than the detector's pose (docs/crowded.md), so the car moves `accept_partial_share` of
the way toward it (`partial_move`; 0 keeps the detector's pose).
"""

from __future__ import annotations

from dataclasses import replace

import torch

from nmrlight.refine.config import RefineConfig
from nmrlight.refine.pose import PoseOutcome
from nmrlight.rotations import so3_exp, so3_log


def accept(outcome: PoseOutcome, config: RefineConfig, start: torch.Tensor | None = None
           ) -> tuple[PoseOutcome, str | None]:
    """The outcome, or the detector's pose kept (improved False) when the evidence does not support
    the move: its overlap with the mask fell by more than `accept_iou_drop`, or ended below
    `accept_min_iou` (the refined car does not explain its own mask: a mostly hidden car slid off its
    sliver of mask, or along it, where occlusion hides what would say so) or, for a car less visible than
    `accept_hidden_visible`, below `accept_hidden_min_iou` (a sliver moves a car on little evidence), or
    it moved along its ray by more than `accept_large_move` (fraction of the depth of `start`, the
    detector's translation) and ended below `accept_large_move_iou` (a large move must end in a good fit:
    partly hidden cars walked to a farther or nearer pose that fits their visible part only roughly).
    None: no check."""
    if not outcome.improved:
        return outcome, None
    if config.accept_iou_drop is not None and outcome.iou_after < outcome.iou_before - config.accept_iou_drop:
        return replace(outcome, improved=False), f"IoU fell {outcome.iou_before:.3f} -> {outcome.iou_after:.3f}"
    if config.accept_min_iou is not None and outcome.iou_after < config.accept_min_iou:
        return replace(outcome, improved=False), f"IoU {outcome.iou_after:.3f} below {config.accept_min_iou:g}"
    if (config.accept_hidden_min_iou is not None and outcome.visible < config.accept_hidden_visible
            and outcome.iou_after < config.accept_hidden_min_iou):
        return replace(outcome, improved=False), (f"{100 * outcome.visible:.0f} % visible, IoU "
                                                  f"{outcome.iou_after:.3f} below {config.accept_hidden_min_iou:g}")
    if config.accept_large_move is not None and start is not None:
        move = abs(float(outcome.translation[2]) / float(start[2]) - 1.0)
        if move > config.accept_large_move and outcome.iou_after < config.accept_large_move_iou:
            return replace(outcome, improved=False), (
                f"moved {100 * move:.1f} % in depth to IoU {outcome.iou_after:.3f}, below "
                f"{config.accept_large_move_iou:g}")
    return outcome, None


def partial_move(outcome: PoseOutcome, rotation: torch.Tensor, translation: torch.Tensor, share: float
                 ) -> PoseOutcome:
    """The pose `share` of the way from the start (`rotation`, `translation`: the detector's pose) to a
    rejected outcome: the rotation along the geodesic between them, the translation on the segment.
    The fit's numbers (loss, IoU) stay the rejected outcome's; `improved` stays False (it was not taken)."""
    start_r, end_r = rotation.double(), outcome.rotation.detach().double()
    turn = so3_log(end_r @ start_r.T)
    moved_r = so3_exp(share * turn) @ start_r
    start_t, end_t = translation.double(), outcome.translation.detach().double()
    moved_t = start_t + share * (end_t - start_t)
    return replace(outcome, rotation=moved_r.to(outcome.rotation.dtype),
                   translation=moved_t.to(outcome.translation.dtype))
