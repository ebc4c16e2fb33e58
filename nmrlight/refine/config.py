"""Settings of lighting estimation and pose refinement (picklable: sent to worker processes)."""

from __future__ import annotations

from dataclasses import dataclass, field

LOSS_TERMS = ("silhouette", "grayscale", "both")
LIGHTING_MODES = ("learn", "fixed")


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
