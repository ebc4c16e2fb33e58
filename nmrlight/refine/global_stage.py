"""Global stage: each car's pose hypotheses (`hypotheses`) refined, judged and the winner chosen.

The local refinement only finds the basin it starts in; `hypotheses` gives each car other starts
(by default its flipped heading) and their coarse scores (front and back of a car have nearly mirror
silhouettes, so flips are decided by what differs: shading and edges).

The detector's pose is refined as without the stage; the best other hypotheses whose coarse score is
close to it are screened (`global_screen`: refined with the coarsest stage only, then judged against
the detector's refined pose in one common view), and only those that pass are refined fully
(`refine_pose`, a black box). The winner is the lowest final loss, an alternative only when it beats
the detector's start and refinement by `global_switch_margin` and ends with an IoU of at least
`global_switch_min_iou` (docs/accuracy.md: most wrongly flipped correct headings ended in poor fits),
and (`global_recheck`) when the detector's heading, refined again from the winner's position, does not
fit as well there (a flip must not win only because the detector's own refinement stuck at a wrong depth;
`global_recheck_mirror`: nor the recheck's, so the flip turned back 180 deg where it ended, polished in
the last stage, is the recheck's other start);
before that, a won flip also has the detector's heading turned by +-10 and +-20 deg screened and the best
refined (`global_stall_turns_deg`): a heading stalled 10 deg off can make a wrong flip look better; the
turn takes the flip's place unless the flip fits better by the margin (ties go to the detector's heading).
Every start keeps its prior on the detector's pose (a flip on the flipped pose), so final losses compare.
A car whose chosen pose still fits poorly (`_fits_poorly`) has other depths along its ray searched
(`_depth_search`).
Whether the result is taken at all is `acceptance.accept`'s question.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace

import torch

from nmrlight.refine.config import RefineConfig
from nmrlight.refine.hypotheses import (
    Hypothesis,
    Scored,
    coarse_scores,
    heading_turn,
    hypotheses,
    shortlist,
    started_at,
)
from nmrlight.refine.params import rotation_sigma_rad
from nmrlight.refine.pose import CarProblem, PoseOutcome, car_stages, refine_pose
from nmrlight.rotations import so3_log
from nmrlight.shade import Lighting


@dataclass
class GlobalOutcome:
    """The chosen refinement and what the global stage saw (for the report and the re-scoring)."""

    outcome: PoseOutcome
    chosen: Hypothesis
    scored: list[Scored] = field(default_factory=list)
    refined: dict[str, float] = field(default_factory=dict)   # hypothesis label -> final loss
    margin: float = 0.0       # final loss of the runner-up minus the winner's (0: one refined)
    detector: PoseOutcome | None = None   # the refinement started from the detector's pose
    seconds: float = 0.0
    judged: dict[str, float] = field(default_factory=dict)   # screening: label -> loss in the common view
    recheck: float | None = None  # final loss of the detector's heading refined from the turned winner's position
    prior_free: float | None = None   # final loss of the prior-free second start (None: not tried)
    prior_free_taken: bool = False    # ... and whether it won
    flip_prior_free: float | None = None  # ... the same for a flip tied with the detector's heading (None: not tried)
    free_polish: float | None = None  # final loss (no prior) of the chosen pose's prior-free polish (None: not tried)
    free_polish_taken: bool = False   # ... and whether it was taken
    flip: PoseOutcome | None = None   # the best refinement of the flipped heading (None: none refined)

    def to_dict(self) -> dict:
        return {"chosen": self.chosen.label(), "flipped": self.chosen.flipped,
                "coarse": [[s.hypothesis.label(), round(s.score, 4)] for s in self.scored[:5]],
                "refined": {k: round(v, 4) for k, v in self.refined.items()},
                "margin": round(self.margin, 4), "seconds": round(self.seconds, 3),
                "judged": {k: round(v, 4) for k, v in self.judged.items()},
                "recheck": None if self.recheck is None else round(self.recheck, 4),
                "prior_free": None if self.prior_free is None else round(self.prior_free, 4),
                "prior_free_taken": self.prior_free_taken,
                "flip_prior_free": None if self.flip_prior_free is None else round(self.flip_prior_free, 4),
                "free_polish": None if self.free_polish is None else round(self.free_polish, 4),
                "free_polish_taken": self.free_polish_taken}


def screen_config(config: RefineConfig, max_iterations: int | None = None) -> RefineConfig:
    """The first (coarsest) stage only, at most `max_iterations` of it: where a start's basin leads
    (or how well a mesh fits), at a fraction of the cost."""
    size, edges, sigma, iterations = config.stages[0]
    if max_iterations is not None:
        iterations = min(iterations, max_iterations)
    return replace(config, stages=((size, edges, sigma, iterations),), large_stage=None)


def _judge(problem: CarProblem, lighting: Lighting, config: RefineConfig, rotation: torch.Tensor,
           translation: torch.Tensor) -> float:
    """The image loss of a pose in one common view (the second stage's size and blur, no iteration, no
    prior): screened and fully refined poses compared on equal terms."""
    size, edges, sigma, _ = config.stages[min(1, len(config.stages) - 1)]
    judge = replace(config, stages=((size, edges, sigma, 0),), large_stage=None, align_start=False)
    return refine_pose(replace(problem, rotation=rotation, translation=translation), lighting, judge).loss_before


def _screen(problem: CarProblem, start: CarProblem, lighting: Lighting, config: RefineConfig
            ) -> tuple[float, PoseOutcome]:
    """`start` refined with the coarsest stage only, and that pose's loss in the common view (`_judge`)."""
    screened = refine_pose(start, lighting, screen_config(config))
    return _judge(problem, lighting, config, screened.rotation, screened.translation), screened


def refine_global(problem: CarProblem, lighting: Lighting, config: RefineConfig, frame=None,
                  base: PoseOutcome | None = None) -> GlobalOutcome:
    """The global stage for one car; returns the accepted refinement (or the detector's pose kept).

    The detector's start is refined as without the stage (or `base` is that refinement, when the caller
    has it: the mesh choice refined it already). With `global_screen`, each other shortlisted
    start is first refined with the coarsest stage only and judged against the detector's refined pose
    in one common view; only one whose loss there is below the detector's minus `global_screen_margin`
    (a negative margin: within |margin| of it) is refined fully, so that a car costs one refinement, a
    few coarse renders and a coarse screen unless an alternative looks as good. A car less visible than
    `global_min_visible` (mask area over its rendered area at the detector's pose) tries no alternative;
    one less visible than `global_partial_visible` takes one only at `global_switch_min_iou_partial`
    (`switch_bars`; and a turned heading only by `global_switch_margin_partial`, when set).
    When a flip wins, small turns of the detector's heading are screened too (`_stall_turns`).
    A chosen pose below `global_depth_search_below_iou` (or, for a near car seen whole, below
    `global_depth_search_clear_iou`: `_fits_poorly`) has other depths searched (`_depth_search`), for a car
    at least `global_depth_search_min_visible` visible (slivers too: the switch's IoU bar guards them).
    A car at least `global_free_polish` visible ends with the chosen pose polished without the prior."""
    began = time.perf_counter()
    detector = Hypothesis(0.0, 1.0)
    if base is None:
        base = refine_pose(problem, lighting, config, frame=frame)
    outcomes: dict[Hypothesis, PoseOutcome] = {detector: base}
    sees_enough = config.global_min_visible is None or base.visible >= config.global_min_visible
    if not sees_enough:
        # a sliver of a car shows too little to tell its front from its back (or its depth): at 7 %
        # flipped headings a guess there is more often wrong than right; nothing else is scored
        scored: list[Scored] = []
        candidates = [detector]
    else:
        scored = coarse_scores(problem, lighting, config, hypotheses(config))
        candidates = shortlist(scored, config) or [detector]
    spent_seconds, spent_iterations = 0.0, 0
    judged: dict[str, float] = {}
    if config.global_screen and len(candidates) > 1:
        judged[detector.label()] = _judge(problem, lighting, config, base.rotation, base.translation)
    for h in candidates:
        if h.is_detector:
            continue
        start = started_at(problem, h)
        if config.global_screen:
            judged[h.label()], screened = _screen(problem, start, lighting, config)
            spent_seconds, spent_iterations = spent_seconds + screened.seconds, spent_iterations + screened.iterations
            if judged[h.label()] > judged[detector.label()] - config.global_screen_margin:
                continue
        outcomes[h] = refine_pose(start, lighting, config)
    # an alternative wins only when its final loss beats the detector's start and refinement by a margin,
    # and it ends in a good fit (a flip decided on a poorly fitted sliver of mask is a guess)
    best_h, best = detector, base
    min_iou, turn_margin = switch_bars(config, base.visible)
    for h, o in outcomes.items():
        if h.is_detector or (min_iou is not None and o.iou_after < min_iou):
            continue
        margin = turn_margin if h.heading_deg != 0.0 else config.global_switch_margin
        if o.loss_after < min(best.loss_after, base.loss_before) - margin:
            best_h, best = h, o
    if config.global_stall_turns_deg and best_h.flipped:
        turned, seconds, iterations = _stall_turns(problem, lighting, config, base, judged)
        spent_seconds, spent_iterations = spent_seconds + seconds, spent_iterations + iterations
        best_h, best = _adopt(turned, outcomes, (best_h, best),
                              lambda o: _turn_replaces_flip(o, best, min_iou, turn_margin))
    prior_free, prior_free_taken, flip_prior_free = None, False, None
    if config.global_prior_free and best_h.is_detector and config.prior_weight > 0 and sees_enough:
        polished = _prior_free_start(problem, lighting, config)
        spent_seconds, spent_iterations = spent_seconds + polished.seconds, spent_iterations + polished.iterations
        prior_free = polished.loss_after
        if _replaces(polished, best, min_iou, config.global_switch_margin):
            best, prior_free_taken = polished, True
            tied = _tied_flip(outcomes, base, config)
            if tied is not None:
                freed = _prior_free_start(started_at(problem, tied), lighting, config)
                spent_seconds, spent_iterations = spent_seconds + freed.seconds, spent_iterations + freed.iterations
                flip_prior_free = freed.loss_after
                if _replaces(freed, best, min_iou, turn_margin):
                    best_h, best = tied, freed
    recheck = None
    if config.global_recheck and best_h.heading_deg != 0.0:
        again = _detector_heading_at(problem, best, lighting, config)
        spent_seconds, spent_iterations = spent_seconds + again.seconds, spent_iterations + again.iterations
        if config.global_recheck_mirror and best_h.flipped:
            mirrored = _mirror_polish(problem, best, lighting, config)
            spent_seconds, spent_iterations = spent_seconds + mirrored.seconds, spent_iterations + mirrored.iterations
            if mirrored.loss_after < again.loss_after:
                again = mirrored
        recheck = again.loss_after
        # the turn must beat the detector's heading at its own position by the same margin; if it does
        # not, the recheck is taken (it started where the image evidence led the turn)
        if again.loss_after < best.loss_after + turn_margin:
            best_h, best = detector, again
    if config.global_depth_search and _fits_poorly(config, problem, base, best) and \
            _searches_depth(config, base.visible):
        found, seconds, iterations = _depth_search(problem, lighting, config, best_h, best, judged)
        spent_seconds, spent_iterations = spent_seconds + seconds, spent_iterations + iterations
        best_h, best = _adopt(found, outcomes, (best_h, best),
                              lambda o: _replaces(o, best, min_iou, config.global_switch_margin))
    free_polish, free_polish_taken = None, False
    if config.global_free_polish is not None and base.visible >= config.global_free_polish:
        free = _free_polish(problem, best, lighting, config)
        spent_seconds, spent_iterations = spent_seconds + free.seconds, spent_iterations + free.iterations
        free_polish = free.loss_after
        # visible enough at the detector's pose and at the chosen one (a car the detector put too far
        # looks more visible than it is), and no worse a fit than the switch's bar or the chosen pose
        if free.visible >= config.global_free_polish and _within_prior_sigma(best, free, config) and (
                min_iou is None or free.iou_after >= min(min_iou, best.iou_after)):
            best, free_polish_taken = free, True
    finals = sorted(o.loss_after for o in outcomes.values())
    margin = finals[1] - finals[0] if len(finals) > 1 else 0.0
    chosen = replace(best, loss_before=base.loss_before, iou_before=base.iou_before,
                     seconds=sum(o.seconds for o in outcomes.values()) + spent_seconds,
                     iterations=sum(o.iterations for o in outcomes.values()) + spent_iterations,
                     improved=best.loss_after < base.loss_before)
    # the flipped heading's best refinement under the prior (as `detector` is the detector's heading's):
    # the two compare, whatever polish the chosen one had after
    flip = min((o for h, o in outcomes.items() if h.flipped), key=lambda o: o.loss_after, default=None)
    return GlobalOutcome(chosen, best_h, scored, {h.label(): o.loss_after for h, o in outcomes.items()},
                         margin, base, time.perf_counter() - began, judged, recheck, prior_free,
                         prior_free_taken, flip_prior_free, free_polish, free_polish_taken, flip)


def switch_bars(config: RefineConfig, visible: float) -> tuple[float | None, float]:
    """The IoU an alternative must end with and the margin a turned heading must win by: higher for a
    car less visible than `global_partial_visible`, whose loss rests on a sliver of outline."""
    min_iou, margin = config.global_switch_min_iou, config.global_switch_margin
    if visible < config.global_partial_visible:
        if min_iou is not None:
            min_iou = max(min_iou, config.global_switch_min_iou_partial)
        if config.global_switch_margin_partial is not None:
            margin = max(margin, config.global_switch_margin_partial)
    return min_iou, margin


def _fits_poorly(config: RefineConfig, problem: CarProblem, base: PoseOutcome, best: PoseOutcome) -> bool:
    """Whether the chosen pose fits its mask poorly enough for the depth search: below
    `global_depth_search_below_iou`, or (`global_depth_search_clear_iou`) below that higher bar for a car
    whose whole outline is seen near the camera (at least `global_depth_search_clear_visible` visible,
    the detector's depth below `global_depth_search_clear_depth`): there an IoU of 0.9 is a stall, not a
    sliver's best."""
    if best.iou_after < config.global_depth_search_below_iou:
        return True
    clear = config.global_depth_search_clear_iou
    return clear is not None and best.iou_after < clear and \
        base.visible >= config.global_depth_search_clear_visible and \
        float(problem.translation[2]) < config.global_depth_search_clear_depth


def _searches_depth(config: RefineConfig, visible: float) -> bool:
    """Whether a poorly fitted car is visible enough for the depth search: its own gate
    (`global_depth_search_min_visible`) or, when that is None, the alternatives' (`global_min_visible`)."""
    gate = config.global_depth_search_min_visible
    if gate is None:
        gate = config.global_min_visible
    return gate is None or visible >= gate


def _stall_turns(problem: CarProblem, lighting: Lighting, config: RefineConfig, base: PoseOutcome,
                 judged: dict[str, float]) -> tuple[tuple[Hypothesis, PoseOutcome] | None, float, int]:
    """Small turns of the detector's heading (`global_stall_turns_deg`), tried when a flip won.

    A flip wins wrongly when the detector's own refinement stalled: a heading a few degrees off with
    the depth 10-15 % off ends 10 deg off in a poor fit, and the flip (whose best fit mirrors that
    stall) fits a little better. A start turned by 10-20 deg the other way reaches the truth
    (docs/accuracy.md). Each turn is screened (coarsest stage, judged in the common view); the best,
    if it beats the detector's refined pose there by `global_screen_margin`, is refined fully.
    Returns it (or None) and the seconds and iterations of the screening (the full refinement's are its own)."""
    detector_label = Hypothesis(0.0, 1.0).label()
    if detector_label not in judged:
        judged[detector_label] = _judge(problem, lighting, config, base.rotation, base.translation)
    turns = [Hypothesis(float(degrees), 1.0) for degrees in config.global_stall_turns_deg]
    return _best_screened(problem, lighting, config, turns, judged[detector_label], judged)


def _depth_search(problem: CarProblem, lighting: Lighting, config: RefineConfig, chosen: Hypothesis,
                  best: PoseOutcome, judged: dict[str, float]
                  ) -> tuple[tuple[Hypothesis, PoseOutcome] | None, float, int]:
    """Other depths along the viewing ray for a car whose chosen pose fits poorly (`global_depth_search`,
    the chosen heading kept): each screened and judged in the common view against the chosen pose, the
    best refined fully if it passes the screen. Returns it (or None) and the screening's seconds and
    iterations."""
    reference = _judge(problem, lighting, config, best.rotation, best.translation)
    depths = [Hypothesis(chosen.heading_deg, float(factor)) for factor in config.global_depth_search]
    return _best_screened(problem, lighting, config, depths, reference, judged)


def _best_screened(problem: CarProblem, lighting: Lighting, config: RefineConfig, candidates: list[Hypothesis],
                   reference: float, judged: dict[str, float]
                   ) -> tuple[tuple[Hypothesis, PoseOutcome] | None, float, int]:
    """Each candidate start screened and judged in the common view (`judged` gets its loss there); the best
    refined fully if it beats `reference` by `global_screen_margin`. Returns it (or None) and the
    screening's seconds and iterations (the full refinement's are its own)."""
    seconds, iterations = 0.0, 0
    pick: tuple[float, Hypothesis, CarProblem] | None = None
    for h in candidates:
        start = started_at(problem, h)
        judged[h.label()], screened = _screen(problem, start, lighting, config)
        seconds, iterations = seconds + screened.seconds, iterations + screened.iterations
        if pick is None or judged[h.label()] < pick[0]:
            pick = (judged[h.label()], h, start)
    if pick is None or pick[0] > reference - config.global_screen_margin:
        return None, seconds, iterations
    return (pick[1], refine_pose(pick[2], lighting, config)), seconds, iterations


def _adopt(found: tuple[Hypothesis, PoseOutcome] | None, outcomes: dict[Hypothesis, PoseOutcome],
           held: tuple[Hypothesis, PoseOutcome], takes: Callable[[PoseOutcome], bool]
           ) -> tuple[Hypothesis, PoseOutcome]:
    """A search's refined start (or None): recorded in `outcomes`, and returned when `takes` says it
    replaces the held pose; otherwise the held (hypothesis, outcome)."""
    if found is None:
        return held
    outcomes[found[0]] = found[1]
    return found if takes(found[1]) else held


def _replaces(candidate: PoseOutcome, held: PoseOutcome, min_iou: float | None, margin: float) -> bool:
    """Whether another start's outcome takes the held pose's place: it meets the switch's IoU bar and its
    final loss is lower by the switch margin (a tie keeps the held pose)."""
    fits = min_iou is None or candidate.iou_after >= min_iou
    return fits and candidate.loss_after < held.loss_after - margin


def _turn_replaces_flip(turned: PoseOutcome, flip: PoseOutcome, min_iou: float | None, margin: float) -> bool:
    """Whether a refined turn of the detector's heading takes the place of the flip that won: it fits as a
    switch must (IoU bar) and its final loss is below the flip's plus the switch margin. A flip has to
    beat every refinement of the detector's heading by the margin (the switch and the recheck ask the
    same): a tie goes to the detector's heading, which is right for 93 % of cars."""
    fits = min_iou is None or turned.iou_after >= min_iou
    return fits and turned.loss_after < flip.loss_after + margin


def _prior_free_start(problem: CarProblem, lighting: Lighting, config: RefineConfig) -> PoseOutcome:
    """A start refined without the prior, then with it from where that ended (the prior still centred
    where the problem puts it, so its final loss compares with the refinement from the start itself).

    The prior is meant to judge between poses the photograph cannot tell apart, but it also steers
    the staged refinement: cars it left 4-8 % short of the truth, where the truth had the lower loss,
    reach it this way (docs/accuracy.md). Costs a refinement and a last stage a car; the outcome carries
    the iterations and seconds of both."""
    free = refine_pose(problem, lighting, replace(config, prior_weight=0.0))
    # from a converged pose the last stage alone polishes (in the same final view: the losses compare)
    polish = _last_stage(config, problem)
    polished = _refined_from(problem, free.rotation.detach().clone(), free.translation.detach().clone(),
                             lighting, polish)
    return replace(polished, seconds=free.seconds + polished.seconds,
                   iterations=free.iterations + polished.iterations)


def _tied_flip(outcomes: dict[Hypothesis, PoseOutcome], base: PoseOutcome, config: RefineConfig
               ) -> Hypothesis | None:
    """A refined flip that ended within the switch margin of the detector's heading (`global_flip_tie`),
    for a car at least `global_partial_visible` visible.

    Both were refined under the prior, which holds them in the detector's basin: when freed the
    detector's heading fits much better, the flip deserves the same chance before the tie is settled
    for the detector."""
    if not config.global_flip_tie or base.visible < config.global_partial_visible:
        return None   # freed, a partly hidden car's flip fits its sliver of outline at the wrong heading
    tied = [h for h, o in outcomes.items()
            if h.flipped and abs(o.loss_after - base.loss_after) < config.global_switch_margin]
    return min(tied, key=lambda h: outcomes[h].loss_after) if tied else None


def _last_stage(config: RefineConfig, problem: CarProblem) -> RefineConfig:
    """The car's last stage alone, from where it is (a polish of a converged pose, in the view the full
    refinement ended in, so that the losses compare)."""
    return replace(config, stages=car_stages(config, problem.box)[-1:], large_stage=None, align_start=False)


def _free_polish(problem: CarProblem, best: PoseOutcome, lighting: Lighting, config: RefineConfig) -> PoseOutcome:
    """The chosen pose refined once more in the last stage without the pose prior's pull (its visible
    fraction measured there): the prior is centred on the chosen pose and keeps the share
    `global_free_polish_prior` of its weight.

    The prior holds cars whose pixels say little; a mostly visible car that has converged is pinned by
    its own outline, and the prior only pulls it back towards the detector's pose: at the default
    weight the runs stopped at 0.5-0.9 deg median rotation error where the image loss's own minimum
    lies at 0.2-0.4 deg (docs/accuracy.md). A partly hidden car's prior weighs 1 / visible times more,
    and started at the truth such a car walks back to the detector's depth (8 % off at an IoU of 0.97);
    without it, the outline brought most such cars near the truth (docs/accuracy.md). From a converged
    pose the last stage does not wander off, and the caller keeps the move within one prior sigma. Where a
    sliver leaves a direction flat (its depth), a freed pose slides along it; the kept share holds it
    there and lets the outline's well-fixed directions move (docs/accuracy.md, twenty-second session)."""
    polish = replace(_last_stage(config, problem), prior_weight=config.prior_weight * config.global_free_polish_prior)
    rotation, translation = best.rotation.detach().float(), best.translation.detach().float()
    return refine_pose(replace(problem, rotation=rotation, translation=translation, prior_rotation=rotation,
                               prior_translation=translation), lighting, polish)


def _within_prior_sigma(held: PoseOutcome, free: PoseOutcome, config: RefineConfig) -> bool:
    """Whether the prior-free polish moved the pose by at most one of the prior's standard deviations
    about each camera axis and in log depth: it may remove the prior's pull, not overrule the prior (a
    car still at a wrong depth turns to fit its outline once nothing holds it)."""
    turn = so3_log(free.rotation.double() @ held.rotation.double().T).abs()
    sigma = rotation_sigma_rad(config, float(held.translation[2]), free.visible, torch.float64)
    depth = abs(math.log(float(free.translation[2]) / float(held.translation[2])))
    return bool((turn <= sigma).all()) and depth <= config.prior_sigma_depth


def _detector_heading_at(problem: CarProblem, winner: PoseOutcome, lighting: Lighting,
                         config: RefineConfig) -> PoseOutcome:
    """The detector's heading refined from where a turned (flipped) alternative ended, the prior still on
    the detector's pose. A flip can win only because the detector's own refinement stuck at a wrong
    depth; compared at the same position, the heading alone decides (docs/accuracy.md)."""
    return _refined_from(problem, problem.rotation, winner.translation.detach().clone(), lighting, config)


def _mirror_polish(problem: CarProblem, winner: PoseOutcome, lighting: Lighting, config: RefineConfig
                   ) -> PoseOutcome:
    """The won flip turned back 180 deg about the car's own vertical axis where it ended, polished in the
    last stage (the prior on the detector's pose). The recheck's full coarse-to-fine refinement from the
    detector's rotation can stall short of that mirror pose for a near car whose depth the detector had
    far off, while the flip, started elsewhere, got there; this start removes that difference."""
    rotation = winner.rotation.detach().float() @ heading_turn(180.0)
    return _refined_from(problem, rotation, winner.translation.detach().clone().float(), lighting,
                         _last_stage(config, problem))


def _refined_from(problem: CarProblem, rotation: torch.Tensor, translation: torch.Tensor, lighting: Lighting,
                  config: RefineConfig) -> PoseOutcome:
    """`problem` refined from another start, its prior kept on its centre (the detector's pose unless
    moved): its final loss compares with the refinement from the problem's own start."""
    centre_r, centre_t = problem.prior_pose()
    return refine_pose(replace(problem, rotation=rotation, translation=translation, prior_rotation=centre_r,
                               prior_translation=centre_t), lighting, config)
