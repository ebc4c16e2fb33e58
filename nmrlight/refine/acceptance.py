"""Acceptance of a refined pose: a pose that does not explain its own mask is not taken.

Used with or without the global stage (`refine/global_stage.py`): a refined pose whose final IoU with its
mask is too low, or that moved far along its ray to a middling fit, is not an improvement but a wrong
basin, and the car keeps the detector's pose (docs/accuracy.md, docs/crowded.md).
"""

from __future__ import annotations

from dataclasses import replace

import torch

from nmrlight.refine.config import RefineConfig
from nmrlight.refine.pose import PoseOutcome


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
