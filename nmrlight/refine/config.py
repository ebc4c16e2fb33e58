"""Settings of lighting estimation and pose refinement (picklable: sent to worker processes)."""

from __future__ import annotations

from dataclasses import dataclass, field

LOSS_TERMS = ("silhouette", "grayscale", "both")
LIGHTING_MODES = ("learn", "fixed")

# coarse-to-fine stages: (window size in render pixels, edges, soft sigma in pixels, max iterations)
DEFAULT_STAGES: tuple[tuple[int, str, float, int], ...] = (
    (96, "soft", 2.0, 20),
    (160, "soft", 1.0, 20),
    (240, "analytic", 0.0, 30),
)


@dataclass
class RefineConfig:
    """What to optimise and how. Defaults are the recommended setting."""

    losses: str = "both"                 # silhouette, grayscale or both
    lighting: str = "learn"              # learn it from the image, or keep `fixed_lighting`
    fixed_lighting: tuple[float, float, float, float, float] = (0.5, 0.5, 0.0, -1.0, -0.5)  # ambient, directional, d
    lighting_cars: int = 3               # how many cars (closest with masks first) to fit the lighting on
    device: str = "cpu"
    threads: int | None = None           # torch threads in this process (None: leave as is)
    gif_dir: str | None = None           # write an optimisation GIF per car here when set
    extra: dict = field(default_factory=dict)
    # --- pose optimisation (added by the refinement engineer; all optional) ---
    stages: tuple[tuple[int, str, float, int], ...] = DEFAULT_STAGES
    lr_rotation: float = 0.01            # Adam step on so(3), radians
    lr_pixels: float = 0.5               # Adam step on the projected centre, render pixels
    lr_log_depth: float = 0.004          # Adam step on log depth
    stage_lr_decay: float = 0.6          # learning rates multiply by this at each new stage
    patience: int = 8                    # stop a stage after this many iterations without improvement
    weight_silhouette: float = 1.0
    weight_grayscale: float = 1.0
    huber_delta: float = 0.05            # grayscale residual scale (image units in [0, 1])
    erode_pixels: int = 1                # mask erosion (render pixels) for the grayscale term
    pad: float = 0.15                    # window margin around a car, fraction of its size
    max_neighbours: int = 6              # other cars rendered in a car's window (occluders)
    min_mask_pixels: int = 12            # smaller masks (image pixels) are left alone
    lighting_size: int = 128             # window size (render pixels) of the lighting fit
    lighting_refit: bool = True          # refit the lighting on the refined poses (reported)
