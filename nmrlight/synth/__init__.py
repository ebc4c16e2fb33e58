"""Synthetic data sets in the layout of the Kaggle PKU/Baidu data, with known truth.

Each image: procedural cars (nmrlight.procedural) placed on a pitched road plane in lanes with
realistic headings, no two footprints overlapping (`layout`); a random lighting and per-face
materials (`materials`); a textured road/city background (`background`); sensor noise (`picture`).
Written as a complete data folder (`writer`): images/, masks/ (detector-like label images, `masks`),
car_models_json/, camera/camera_intrinsic.txt, train.csv (truth), predictions.csv (truth plus the
`ErrorModel`'s detector errors, `detector`) and lighting.csv (the true lighting); besides, what a
detector and an instance segmenter would write (`segmenter`): predictions_submission.csv and
coco/instances.json, coco/results.json, with coco/truth.json saying which mask is which car.

Masks: value k marks the k-th car of the image's row in predictions.csv. Only cars with at least one
visible pixel get pixels; a car fully occluded keeps its row but its label appears nowhere. With
`mask_errors`, each region is dilated or eroded by 0-2 px and shifted by up to 1 px, like a detector.
"""

from nmrlight.synth.background import background
from nmrlight.synth.config import DEFAULT_MODELS, SynthConfig
from nmrlight.synth.detector import ErrorModel
from nmrlight.synth.layout import _footprint, _overlap, place_cars
from nmrlight.synth.masks import detector_labels
from nmrlight.synth.picture import SynthImage, _Models, image_id, synthesize_image
from nmrlight.synth.segmenter import SegmenterModel, coarse_mask, segment
from nmrlight.synth.writer import SynthSummary, synthesize

__all__ = [
    "DEFAULT_MODELS", "ErrorModel", "SegmenterModel", "SynthConfig", "SynthImage", "SynthSummary", "_Models",
    "_footprint", "_overlap", "background", "coarse_mask", "detector_labels", "image_id", "place_cars",
    "segment", "synthesize", "synthesize_image",
]
