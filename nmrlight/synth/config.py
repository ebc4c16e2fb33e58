"""What synthetic pictures look like: image size, car counts and models, camera pose, mask errors."""

from __future__ import annotations

from dataclasses import dataclass

from nmrlight.camera import KAGGLE_HEIGHT, KAGGLE_WIDTH, Camera
from nmrlight.errors import NmrlightError

DEFAULT_MODELS = (2, 9, 17, 23, 39, 50, 61, 72)
# the commonest model ids of train.csv first, then the default mix
KAGGLE_MODELS = (16, 46, 28, 2, 35, 70, 9, 17, 23, 39, 50, 61, 72)
LAYOUTS = ("default", "kaggle", "crowded")
MATERIALS = ("lambert", "realistic")


@dataclass
class SynthConfig:
    """What the synthetic images look like. `scale` renders smaller images with scaled intrinsics."""

    width: int = KAGGLE_WIDTH
    height: int = KAGGLE_HEIGHT
    scale: float = 1.0
    rgb: bool = False
    cars_mean: float = 10.0
    cars_min: int = 1
    cars_max: int = 20
    model_types: tuple[int, ...] = DEFAULT_MODELS
    depth_range: tuple[float, float] = (6.0, 120.0)
    pitch: tuple[float, float] = (0.15, 0.02)          # camera pitch (= v1): mean, sigma, radians
    camera_height: tuple[float, float] = (1.4, 1.75)   # metres above the road
    noise_sigma: float = 0.02
    mask_errors: bool = True
    edges: str = "analytic"
    jpeg: bool = True
    layout: str = "default"        # default: lanes (the original look); kaggle / crowded: nmrlight.synth.street
    materials: str = "lambert"     # lambert: uniform paint; realistic: paint variation, dark glass, trim, specular
    clutter: bool = False          # a cluttered street background (buildings, windows, poles, car shadows)
    roll: tuple[float, float] = (0.0, 0.0)             # camera roll about z: mean, sigma, radians
    unannotated_mean: float = 0.0  # mean number of rendered cars left out of train.csv (beyond 150 m)

    def __post_init__(self) -> None:
        if self.layout not in LAYOUTS:
            raise NmrlightError(f"synth: layout must be one of {', '.join(LAYOUTS)}, got {self.layout!r}")
        if self.materials not in MATERIALS:
            raise NmrlightError(f"synth: materials must be one of {', '.join(MATERIALS)}, got {self.materials!r}")

    def camera(self) -> Camera:
        """The Kaggle intrinsics on a width x height frame, scaled by `scale`."""
        camera = Camera.kaggle()
        if (self.width, self.height) != (camera.width, camera.height):
            camera = Camera(camera.K, int(self.width), int(self.height))
        return camera if self.scale == 1.0 else camera.scaled(self.scale)


