"""Settings of lighting estimation and pose refinement (picklable: sent to worker processes)."""

from __future__ import annotations

from dataclasses import dataclass, field

LOSS_TERMS = ("silhouette", "grayscale", "both")
LIGHTING_MODES = ("learn", "fixed")

# coarse-to-fine stages: (window size in render pixels, edges, sigma in pixels, max iterations);
# analytic stages blur render and mask by a Gaussian of width sigma (0: compare them sharp),
# soft stages use the renderer's soft silhouettes of width sigma
DEFAULT_STAGES: tuple[tuple[int, str, float, int], ...] = (
    (80, "analytic", 2.0, 25),
    (128, "analytic", 1.0, 25),
    (192, "analytic", 0.0, 30),
)


@dataclass
class RefineConfig:
    """What to optimise and how. Defaults are the recommended setting."""

    # silhouette (+ photo edges), grayscale or both; the grayscale shading term is off by default: it
    # has not improved a pose measurably in any ablation (docs/lighting.md); the light is still learned
    losses: str = "silhouette"
    lighting: str = "learn"              # learn it from the image, or keep `fixed_lighting`
    fixed_lighting: tuple[float, float, float, float, float] = (0.5, 0.5, 0.0, -1.0, -0.5)  # ambient, directional, d
    lighting_cars: int = 0               # how many cars (most mask pixels first) to fit the lighting on (0: all)
    device: str = "cpu"
    threads: int | None = None           # torch threads in this process (None: leave as is)
    gif_dir: str | None = None           # write an optimisation GIF per car here when set
    extra: dict = field(default_factory=dict)
    # --- pose optimisation (added by the refinement engineer; all optional) ---
    stages: tuple[tuple[int, str, float, int], ...] = DEFAULT_STAGES
    # an extra, finer stage for cars whose window is large in the photo (near cars, where the last
    # stage's render is much coarser than the photo); None: never
    large_stage: tuple[int, str, float, int] | None = (256, "analytic", 0.0, 20)
    large_stage_min_pixels: int = 300    # window's longer side (image pixels) that gets it
    # per-stage optimiser: "auto" (Levenberg-Marquardt on the silhouette + photo-edge terms, Adam when a
    # grayscale term or soft edges are on), "lm", "adam" (fixed-size steps) or "lbfgs" (quasi-Newton,
    # scipy's L-BFGS-B in units of the Adam steps below); a stage's iteration count is its budget of
    # renders (docs/speed.md)
    optimizer: str = "auto"
    lbfgs_tolerance: float = 1e-4        # L-BFGS stops when a step gains less than this, relative
    lr_rotation: float = 0.02            # Adam step on so(3), radians
    lr_pixels: float = 1.0               # Adam step on the projected centre, render pixels
    lr_log_depth: float = 0.008          # Adam step on log depth
    stage_lr_decay: float = 0.6          # learning rates multiply by this at each new stage
    patience: int = 12                   # stop a stage after this many iterations without improvement ...
    min_improvement: float = 1e-5        # ... of the stage's best loss by more than this (convergence test)
    weight_silhouette: float = 1.0
    weight_grayscale: float = 1.0
    huber_delta: float = 0.05            # grayscale residual scale (image units in [0, 1])
    grayscale_trim: float = 0.0          # leave out this fraction of the largest grayscale residuals
    erode_pixels: int = 1                # mask erosion (render pixels) for the grayscale term
    pad: float = 0.15                    # window margin around a car, fraction of its size
    max_neighbours: int = 6              # other cars rendered in a car's window (occluders)
    ignore_occluded: bool = False        # silhouette term ignores pixels labelled as a nearer car
    # a nearer neighbour whose render covers more than this share of a car's mask contradicts the
    # mask: it is not rendered over that car, its mask pixels are don't-care (refine/occluders.py)
    occluder_contradiction: float | None = 0.2
    min_mask_pixels: int = 12            # smaller masks (image pixels) are left alone
    lighting_size: int = 128             # window size (render pixels) of the lighting fit
    lighting_refit: bool = True          # refit the lighting on the refined poses (reported)
    # a Gaussian prior around the initial pose (the detector's error), weighted against the image
    # terms: it keeps cars whose pixels say little (far, small, occluded) from drifting
    prior_weight: float = 0.005          # loss added at one standard deviation of each direction
    prior_sigma_deg: tuple[float, float, float] = (1.5, 4.0, 1.5)   # rotation about camera x, y, z
    prior_sigma_depth: float = 0.1       # relative depth
    prior_sigma_far: float = 1.0         # the rotation sigmas times this at 70 m and beyond (linear from
                                         # 1 at 20 m): a real detector's rotation error doubles from 20 to 70 m
                                         # (2 tried: mixed, docs/accuracy.md; 1: the same sigmas at every depth)
    prior_sigma_far_visible: float = 0.5  # ... for cars at least this visible (a sliver pins no heading)
    # ... times (car's rendered area / its mask's area), at most this: a car mostly hidden behind
    # nearer cars shows a sliver of mask that pins little, so the detector's pose weighs more
    max_prior_scale: float = 20.0
    # the depth term's scale is that scale ** this (1: as the rotation's; 0: the depth prior never grows).
    # This and the next: options, neither a gain on held-out seeds (docs/accuracy.md, last section)
    prior_depth_scale_power: float = 1.0
    # the detector's depth errors have outliers: this share of them k (`prior_depth_outlier_scale`) times
    # wider (0: a Gaussian depth prior; params.depth_penalty)
    prior_depth_outliers: float = 0.0
    prior_depth_outlier_scale: float = 3.0
    # the detector's masks are dilated or eroded by a few pixels, which biases the silhouette's size,
    # i.e. depth: fit a per-car mask offset (image pixels; the mask is grown by it, so < 0 when the
    # mask is too large) as a nuisance parameter; the photo-edge term then decides the size
    fit_dilation: bool = True
    lr_dilation: float = 0.1             # Adam step, image pixels
    dilation_sigma: float = 1.5          # prior width of the offset, image pixels
    # the offset's range: at most this many image pixels either way, and an erosion of at most
    # `dilation_max_erode` x the mask's thickness (its largest inscribed radius), so that the offset
    # can neither erase a sliver of mask nor grow it to fit a car it does not show (None: unbounded)
    dilation_max: float | None = 3.0
    dilation_max_erode: float = 0.5
    # the photo's own edges along the rendered outline: unbiased by the mask's dilation, they pin
    # the car's size (depth) and its outline's shape (rotation); no lighting model involved
    weight_edges: float = 0.5
    edge_sigma: float = 1.0              # blur of render and photo before their gradients (render pixels)
    # start from the best of 16 image-plane shifts lining the car's box up with its mask's ...
    align_start: bool = True
    align_below_iou: float = 0.5         # ... for cars whose initial IoU with the mask is below this
    align_min_visible: float = 0.15      # ... and whose mask is at least this fraction of their area
    # --- inputs: a segmenter's masks, mesh choice (issue 10; docs/inputs.md) ---
    masks_file: str | None = None        # COCO masks (dataset or results format), associated to the cars
    coco_images: str | None = None       # COCO file whose `images` resolve a results file's image_ids
    model: int | None = None             # force this mesh (model id) for every car
    association_min_score: float = 0.3  # pairs (car, mask) scoring below this are never matched
    association_size: int = 2048         # longer side (pixels) of the frame the association renders
    association_slack: float = 0.03      # lateral error forgiven without damping, fraction of the focal length
    mesh_candidates: int = 4             # meshes refined per car without a model id (best loss wins; 3 until
                                         # the seventeenth session, docs/accuracy.md) ...
    mesh_screened: int = 8               # ... of this many, kept by the silhouette shortlist and ranked by
                                         # the coarsest stage's loss (<= mesh_candidates: no screening) ...
    mesh_screen_iterations: int = 25     # ... after at most this many iterations of it
    global_each_mesh: bool = False       # with the global stage: run it for every refined mesh (True), or only
                                         # for the one the refinements from the detector's pose chose
    mesh_shortlist_size: int = 64        # window size (render pixels) of the mesh shortlist
    mesh_shortlist_steps: int = 2        # depths it tries each side of the detector's, 7 % apart (meshchoice)
    # --- global stage, acceptance, re-scoring (issue 11; docs/accuracy.md). Off by default (it costs
    # about 1.4 x the CPU of the local refinement); on held-out kaggle seeds it fixes 84 % of the flipped
    # headings and raises the mAP (docs/accuracy.md): turn it on (`--global-stage`) for a real detector ---
    global_stage: bool = False           # hypotheses (flips; optionally heading turns, depths) before the refinement
    global_headings_deg: tuple[float, ...] = (180.0,)   # turns tried (+-15, +-30, 165, 195 once: too costly)
    global_depth_factors: tuple[float, ...] = ()       # depths tried along the ray (0.8 ... 1.2 once)
    global_size: int = 64                # window size (render pixels) of the coarse scoring
    global_sigma: float = 1.5            # blur of render and mask in the coarse silhouette term
    global_edge_weight: float = 0.5      # photo-edge term's weight in the coarse score
    global_refine: int = 1               # hypotheses refined besides the detector's
    global_refine_margin: float = 0.1    # ... only those whose coarse score is within this of the detector's
    global_switch_margin: float = 0.01   # an alternative must beat the detector's final loss by this ...
    global_switch_min_iou: float | None = 0.75  # ... and end with at least this IoU with its mask (None: any) ...
    global_recheck: bool = True          # ... and beat, by that margin, the detector's heading refined again there
    global_recheck_mirror: bool = True   # ... and (a flip) its own mirror polished in the last stage there
    global_stall_turns_deg: tuple[float, ...] = (-20.0, -10.0, 10.0, 20.0)  # when a flip won: the detector's
                                         # heading turned by these, screened, the best refined (() off)
    global_depth_search: tuple[float, ...] = (0.85, 1.15)  # a poorly fitted chosen pose: these depths (x the
                                         # detector's, along its ray) screened, the best refined (() off) ...
    global_depth_search_below_iou: float = 0.8  # ... for a car whose chosen pose ends below this IoU
    global_depth_search_min_visible: float | None = 0.05  # ... and at least this visible (None: as
                                         # global_min_visible, the flips' gate, as until the twenty-fifth
                                         # session; docs/accuracy.md, last section)
    global_depth_search_clear_iou: float | None = 0.95  # ... and, below this IoU, a car whose outline pins
                                         # its depth: at least `global_depth_search_clear_visible` visible
                                         # and nearer than `global_depth_search_clear_depth` (None: off, as
                                         # until the twenty-fifth session; docs/accuracy.md, last section)
    global_depth_search_clear_visible: float = 0.7
    global_depth_search_clear_depth: float = 40.0   # metres, the detector's depth
    global_min_visible: float | None = 0.3  # no alternative for a car less visible than this (None: all)
    global_switch_min_iou_partial: float = 0.85  # the switch's IoU for a car less visible than ...
    global_partial_visible: float = 0.5  # ... this (less of the outline is evidence)
    global_switch_margin_partial: float | None = 0.025  # ... and the margin a turned heading (a flip) must
                                         # win by there (None: global_switch_margin; 0.015 until the
                                         # seventeenth session; docs/crowded.md, last section)
    global_prior_free: bool = True       # a second start: refined without the prior, then with it from there,
                                         # taken when its loss is lower (docs/accuracy.md; about 1.6 x the renders)
    global_flip_tie: bool = True         # ... when it is taken, a flip that tied the detector's heading under the
                                         # prior gets the same second start (global_stage._tied_flip)
    global_free_polish: float | None = 0.01  # the chosen pose polished, the prior's pull off (last stage), for a car
                                         # at least this visible: every car with a mask (None: off; 0.7 until
                                         # the ninth session of 2026-11-30, 0.5 until the eleventh; docs/accuracy.md)
    global_free_polish_prior: float = 0.1  # ... keeping this share of the prior's weight, centred on the chosen
                                         # pose: it holds what the car's pixels leave flat, a sliver's depth
                                         # (0: none, as until the twenty-second session; docs/accuracy.md)
    accept_iou_drop: float | None = None  # reject a refined pose whose IoU fell more than this (None: off; 0.02 tried)
    accept_min_iou: float | None = 0.3    # reject a refined pose whose final IoU with its mask is below this
                                          # (docs/crowded.md: fewer cars end worse, crowded or not; None: off)
    accept_hidden_min_iou: float | None = 0.5  # ... or below this for a car less visible than ...
    accept_hidden_visible: float = 0.2       # ... this fraction (mask over its rendered area at the detector's pose)
    accept_large_move: float | None = 0.04  # ... or that moved more than this fraction of its depth (None: off)
    accept_large_move_iou: float = 0.75     # ... and ended below this IoU (docs/crowded.md)
    accept_partial_share: float = 0.5       # a refinement these rules reject still moves the car this share of
                                          # the way from the detector's pose toward it: weak evidence, not
                                          # none (0: the detector's pose kept, as until the twenty-third
                                          # session; docs/crowded.md, last section)
    rescore: bool = False                # confidence from the fit's evidence (nmrlight.refine.rescore)
    # --- flip ties judged by a per-mesh face layout learned from the run's cars (refine/appearance.py) ---
    appearance_review: bool = True       # once every photograph is refined (needs the global stage's records);
                                         # kaggle seeds not tuned on: 6 right, 2 wrong switches (docs/accuracy.md)
    appearance_tie: float = 0.03         # both headings refined and their final losses within this: a tie
    appearance_switch: float = 0.2       # the other heading is taken when its layout residual is this much lower
    appearance_gap_weight: float = 5.0   # ... plus this x its outline fit's loss gap (0.03 -> +0.15)
    appearance_min_voters: int = 8       # a mesh's layout judges only when at least this many cars voted
    # --- lighting fit (docs/lighting.md) ---
    lighting_materials: str = "classes"  # one albedo a car ("single") or a car and material class ("classes")
    lighting_robust: str = "cauchy"      # reweighting of the lighting residuals: "huber" or "cauchy"
    lighting_agree: float = 3.0          # drop cars whose residual is this x the median car's (0: keep all)
    lighting_bootstrap: int = 8          # block-bootstrap refits for the lighting's uncertainty (0: none)
    lighting_consistency: bool = True    # fit two halves of the lighting cars apart and report their angle
    # --- per-material shading term (issue 12 item 4; docs/lighting.md) ---
    shading_materials: bool = False      # grayscale term with one albedo a material class (refine/shading.py)
    # --- ground plane per photograph (issue 11 item 3; docs/accuracy.md, nmrlight.refine.ground) ---
    ground_plane: bool = False           # fuse each car's depth with where its ray meets the other cars' road
    ground_depth_sd: tuple[float, float] = (0.006, 0.0002)  # refined depth's relative sd: near + per metre
    ground_unrefined_sd: float | None = 0.1   # ... of a car that kept the detector's pose (None: never moved)
    ground_residual: float = 0.05        # road unevenness (m) added to each car's height off the plane
    ground_min_cars: int = 3             # fewer other cars on the plane: the car is left alone
    ground_gate: float = 3.0             # depths disagreeing beyond this many sd: the car is left alone ...
    ground_fallback: bool = False        # ... or, when set, given the detector's pose if that agrees (hurt: docs)
    # --- global stage made affordable (docs/accuracy.md): other starts screened with the coarsest stage ---
    global_screen: bool = True           # refine an alternative fully only when its screened pose wins
    global_screen_margin: float = -0.05  # ... within this of the detector's refined pose in a common view
                                         # (< 0: screened poses, only coarsely fitted, get the benefit of the doubt)
    # --- coarse segmenter masks (issue 10; nmrlight.refine.coarse, docs/inputs.md) ---
    mask_quality: str = "auto"           # coarse | fine | auto (a segmenter's unordered COCO masks: coarse)
    mask_band: float = 0.05              # coarse masks: truncation band beyond the mask's box, fraction of its size
    mask_band_weight: float = 0.0        # silhouette weight of render pixels in that band (1: no band)
    # --- crowded photographs (issue 14; docs/crowded.md) ---
    # passes over the photograph's cars: the first refines them nearest first (each sees the cars
    # before it at their refined poses); each further pass refines every car again from its refined
    # pose, with all its neighbours at theirs, in the last stage only, the prior still centred on the
    # detector's pose; passes stop when no car moved more than `joint_tolerance` (relative: translation
    # over depth, and rotation in radians)
    joint_passes: int = 1
    joint_tolerance: float = 0.002
    joint_iterations: int = 15           # iterations of a later pass (the last stage's steps)
    # a wall on the depth move (relative to the prior's centre) of cars the photograph shows little of:
    # a car may move by up to this fraction of its depth when at least 70 % of it is visible, and by
    # proportionally less when less is (the sliver of a mostly hidden car is fitted as well by a
    # smaller, farther car); None: no wall
    depth_wall: float | None = None
    # --- Levenberg-Marquardt stages (issue 13; nmrlight.refine.linearise, docs/speed.md) ---
    # per-stage optimiser (as `optimizer`), the last entry for any later stage (the large stage);
    # None: `optimizer` for every stage
    stage_optimizers: tuple[str, ...] | None = None
    lm_tolerance: float = 1e-3           # an LM stage stops when a kept step gains less than this, relative
    lm_damping: float = 1.0              # LM's initial lambda (relative to the Hessian's diagonal)
    # --- association of unordered masks (issue 10; nmrlight.refine.associate, docs/inputs.md) ---
    association_depth_order: bool = True  # a car shown whole is hidden only by nearer cars' masks (occluders)
    # --- lighting fit, continued (docs/lighting.md): material classes from the pixels, body paint only ---
    lighting_reclassify: float = 0.75    # pixels darker than this x their car's paint (given the light) are glass/dark
    lighting_other_weight: float = 0.0   # weight of glass and dark pixels in the light's fit (paint: 1)
    lighting_car_power: float = 1.0      # a car weighs (its pixels, at most 1500) ** this (0: every car the same)
    lighting_consistency_splits: int = 4  # self-consistency: median angle over this many splits of the cars in two
