"""What synthetic pictures look like: image size, car counts and models, camera pose, mask errors."""

from __future__ import annotations

from dataclasses import dataclass

from nmrlight.camera import KAGGLE_HEIGHT, KAGGLE_WIDTH, Camera

DEFAULT_MODELS = (2, 9, 17, 23, 39, 50, 61, 72)


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

    def camera(self) -> Camera:
        """The Kaggle intrinsics on a width x height frame, scaled by `scale`."""
        camera = Camera.kaggle()
        if (self.width, self.height) != (camera.width, camera.height):
            camera = Camera(camera.K, int(self.width), int(self.height))
        return camera if self.scale == 1.0 else camera.scaled(self.scale)


