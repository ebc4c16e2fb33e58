"""What one car's refinement takes (`CarProblem`) and gives back (`PoseOutcome`)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch

from nmrlight.camera import Camera
from nmrlight.refine.window import Box, View


@dataclass
class Neighbour:
    """Another car of the window, rendered (fixed) so that occlusions are right."""

    vertices: torch.Tensor
    faces: torch.Tensor
    rotation: torch.Tensor
    translation: torch.Tensor


@dataclass
class CarProblem:
    """Everything needed to refine one car: mesh, initial pose, window, image data, neighbours."""

    vertices: torch.Tensor
    faces: torch.Tensor
    rotation: torch.Tensor
    translation: torch.Tensor
    camera: Camera           # full image camera
    box: Box                 # window in image pixels
    photo: np.ndarray        # grayscale photo, cropped to box
    mask: np.ndarray         # bool, this car's label, cropped to box
    hidden: np.ndarray | None  # bool, labels of nearer cars (ignored by the silhouette term), cropped
    neighbours: list[Neighbour] = field(default_factory=list)
    coarse: bool = False     # the mask is a segmenter's coarse one (`coarse.truncation_band`)
    # the prior's centre when it is not the initial pose (a joint pass starts from the refined pose
    # but keeps the detector's as the prior)
    prior_rotation: torch.Tensor | None = None
    prior_translation: torch.Tensor | None = None

    def prior_pose(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The (rotation, translation) the prior is centred on: the given centre, else the initial pose."""
        rotation = self.prior_rotation if self.prior_rotation is not None else self.rotation
        translation = self.prior_translation if self.prior_translation is not None else self.translation
        return rotation, translation


@dataclass
class PoseOutcome:
    rotation: torch.Tensor
    translation: torch.Tensor
    loss_before: float
    loss_after: float
    iou_before: float
    iou_after: float
    iterations: int
    improved: bool
    seconds: float
    history: list[float] = field(default_factory=list)
    mask_offset: float = 0.0   # how much wider the mask is than the fitted car (image pixels, < 0: thinner)
    visible: float = 1.0       # mask area over the area of the car rendered alone at the start (`visible_fraction`)


Frame = Callable[[View, torch.Tensor], None]
