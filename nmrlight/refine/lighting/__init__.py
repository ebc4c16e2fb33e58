"""Learning a photograph's lighting from its cars: material classes, the robust fit, its uncertainty
and a self-consistency check (see docs/lighting.md)."""

from nmrlight.refine.lighting.consistency import Consistency, azimuth_splits, consistency, split_halves
from nmrlight.refine.lighting.fit import (
    MATERIAL_MODELS,
    ROBUST_LOSSES,
    FitOptions,
    LightFit,
    LightSample,
    direction_error_deg,
    fit_lighting,
    normalise_truth,
    sample_car,
)
from nmrlight.refine.lighting.materials import BODY, CLASS_NAMES, DARK, GLASS, material_classes

__all__ = ["BODY", "CLASS_NAMES", "DARK", "GLASS", "MATERIAL_MODELS", "ROBUST_LOSSES", "Consistency", "FitOptions",
           "LightFit", "LightSample", "azimuth_splits", "consistency", "direction_error_deg", "fit_lighting",
           "material_classes", "normalise_truth", "sample_car", "split_halves"]
