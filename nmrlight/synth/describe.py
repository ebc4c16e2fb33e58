"""What a synthetic data folder holds, counted from its own files: `python -m nmrlight.synth.describe DATA`.

Cars a picture, detector recall and false positives (coco/truth.json), the predictions' mAP against
train.csv, the segmenter's missing and extra masks, and the visible-fraction bands (visibility.csv,
kaggle and crowded presets). For the numbers in docs/synth.md.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

from nmrlight.errors import NmrlightError
from nmrlight.io.jsonfile import read_json
from nmrlight.io.poses import read_poses
from nmrlight.metric import evaluate
from nmrlight.synth.visibility import BANDS, band, read_visibility


def describe(folder: str | Path) -> dict:
    """Counts and rates of the folder (see the module docstring) as a flat dict."""
    folder = Path(folder)
    truth = read_poses(folder / "train.csv")
    preds = read_poses(folder / "predictions.csv")
    hidden = read_json(folder / "coco" / "truth.json", "synth truth")
    counts = [len(cars) for cars in truth.values()]
    if not counts:
        raise NmrlightError(f"synth folder {folder}: train.csv has no pictures")
    sources = [s for image in hidden["images"].values() for s in image["prediction_truth"]]
    found = sum(s >= 0 for s in sources)
    annotations = list(hidden["annotations"].values())
    masked = {(a["image"], a["prediction_index"]) for a in annotations if a["prediction_index"] >= 0}
    extra = sum(a["prediction_index"] < 0 for a in annotations)
    scores = evaluate(truth, preds)
    out = {"pictures": len(counts), "cars": sum(counts), "cars_mean": float(np.mean(counts)),
           "cars_min": min(counts), "cars_max": max(counts), "found": found,
           "recall": found / max(sum(counts), 1), "false_positives": len(sources) - found,
           "map": scores.map, "median_rotation_deg": scores.median_rotation_deg,
           "masks": len(annotations), "detected_without_mask": 1 - len(masked) / max(found, 1),
           "extra_masks": extra, "extra_rate": extra / max(len(masked), 1),
           "extra_unannotated": sum(a["truth_index"] < 0 for a in annotations)}
    if (folder / "visibility.csv").is_file():
        fractions = [f for image in read_visibility(folder / "visibility.csv").values() for f in image]
        for _, _, name in BANDS:
            out[f"visible {name}"] = sum(band(f) == name for f in fractions)
    return out


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python -m nmrlight.synth.describe DATA", file=sys.stderr)
        return 2
    try:
        for key, value in describe(args[0]).items():
            print(f"{key}: {value:.4g}" if isinstance(value, float) else f"{key}: {value}")
    except NmrlightError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
