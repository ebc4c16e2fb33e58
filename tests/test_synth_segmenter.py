"""Segmenter-style outputs of `synthesize`: submission file, COCO dataset/results files, hidden truth."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest
from scipy import ndimage

from nmrlight.errors import NmrlightError
from nmrlight.io.poses import read_poses
from nmrlight.synth import ErrorModel, SynthConfig, _Models, synthesize, synthesize_image
from nmrlight.synth.segmenter import SegmenterModel, coarse_mask, segment

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")   # pycocotools under numpy 2
CONFIG = SynthConfig(scale=0.25, cars_mean=12.0)
SEED = 11


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    out = tmp_path_factory.mktemp("segmenter")
    synthesize(out, 3, SEED, CONFIG, ErrorModel(miss_rate=0.4, false_positives=1.0),
               segmenter=SegmenterModel(extra_rate=0.3))
    return out


def _coco(path):
    from pycocotools.coco import COCO

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        return COCO(str(path))


def test_coco_files_load_with_pycocotools(folder) -> None:
    coco = _coco(folder / "coco" / "instances.json")
    data = json.loads((folder / "coco" / "instances.json").read_text())
    assert [im["file_name"] for im in data["images"]] == [f"ID_synth_00000{k}.jpg" for k in (1, 2, 3)]
    assert {a["category_id"] for a in data["annotations"]} <= {c["id"] for c in data["categories"]}
    ids = [a["id"] for a in data["annotations"]]
    assert len(ids) == len(set(ids)) >= 10
    for ann in data["annotations"]:
        assert "car_index" not in ann and ann["iscrowd"] == 0 and 0 < ann["score"] < 1
        assert isinstance(ann["segmentation"]["counts"], str)
        image = coco.imgs[ann["image_id"]]
        mask = coco.annToMask(ann)
        assert mask.shape == (image["height"], image["width"]) == (678, 846)
        assert mask.sum() == ann["area"] > 0
        rows, cols = np.flatnonzero(mask.any(1)), np.flatnonzero(mask.any(0))
        assert ann["bbox"] == [cols[0], rows[0], cols[-1] + 1 - cols[0], rows[-1] + 1 - rows[0]]
    # the results file: same masks, image ids that resolve through instances.json
    results = json.loads((folder / "coco" / "results.json").read_text())
    assert isinstance(results, list) and len(results) == len(data["annotations"])
    for res, ann in zip(results, data["annotations"], strict=True):
        assert set(res) == {"image_id", "category_id", "segmentation", "score", "bbox"}
        assert res["image_id"] in coco.imgs and res["segmentation"] == ann["segmentation"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        loaded = coco.loadRes(results)
    assert len(loaded.anns) == len(results)


def test_masks_are_coarse_copies_of_their_cars(folder) -> None:
    """Each mask overlaps its own (hidden) car best, with a segmenter-like, not exact, outline."""
    data = json.loads((folder / "coco" / "instances.json").read_text())
    truth = json.loads((folder / "coco" / "truth.json").read_text())
    coco = _coco(folder / "coco" / "instances.json")
    predictions = {k: v["prediction_truth"] for k, v in truth["images"].items()}
    models = _Models()
    items = {}
    exact, checked = 0, 0
    for ann in data["annotations"]:
        hidden = truth["annotations"][str(ann["id"])]
        image_id = hidden["image"]
        assert coco.imgs[ann["image_id"]]["file_name"] == f"{image_id}.jpg"
        if image_id not in items:
            items[image_id] = synthesize_image(int(image_id[-6:]) - 1, SEED, CONFIG, models)
        object_id = items[image_id].object_id
        k = hidden["truth_index"]
        assert 0 <= k < len(items[image_id].cars)
        p = hidden["prediction_index"]
        assert (p == -1 and k not in predictions[image_id]) or predictions[image_id][p] == k
        mask = coco.annToMask(ann).astype(bool)
        ious = [(mask & (object_id == i)).sum() / (mask | (object_id == i)).sum()
                for i in range(len(items[image_id].cars))]
        if (object_id == k).sum() >= 300:
            checked += 1
            assert int(np.argmax(ious)) == k and ious[k] > 0.6, (ann["id"], ious[k])
            exact += bool((mask == (object_id == k)).all())
    assert checked >= 5 and exact == 0


def test_submission_holds_the_predictions_shuffled(folder) -> None:
    preds = read_poses(folder / "predictions.csv")
    sub = read_poses(folder / "predictions_submission.csv", submission=True)
    truth = json.loads((folder / "coco" / "truth.json").read_text())["images"]
    assert list(sub) == list(preds)
    shuffled = 0
    for image_id, cars in preds.items():
        order = truth[image_id]["submission_order"]
        assert sorted(order) == list(range(len(cars))) == list(range(len(sub[image_id])))
        for car, k in zip(sub[image_id], order, strict=True):
            assert car.rotation == cars[k].rotation and car.translation == cars[k].translation
            assert car.confidence == cars[k].confidence
        shuffled += order != sorted(order)
    assert shuffled >= 2


def test_annotations_are_shuffled_and_include_missed_cars(folder) -> None:
    data = json.loads((folder / "coco" / "instances.json").read_text())
    truth = json.loads((folder / "coco" / "truth.json").read_text())["annotations"]
    images = [a["image_id"] for a in data["annotations"]]
    assert images != sorted(images)
    hidden = [truth[str(a["id"])] for a in data["annotations"]]
    assert any(h["prediction_index"] == -1 for h in hidden)      # the detector missed 40 %
    assert any(h["prediction_index"] >= 0 for h in hidden)


def _grid_of_cars(n: int, side: int = 12, gap: int = 4) -> np.ndarray:
    cols = 20
    rows = -(-n // cols)
    object_id = -np.ones((rows * (side + gap) + gap, cols * (side + gap) + gap), dtype=np.int64)
    for i in range(n):
        r, c = divmod(i, cols)
        object_id[gap + r * (side + gap):gap + r * (side + gap) + side,
                  gap + c * (side + gap):gap + c * (side + gap) + side] = i
    return object_id


def test_missing_and_extra_mask_rates() -> None:
    """About 8 % of detected cars lack a mask; with the older model (`extra_rate`), extra masks of missed
    cars are about 10 % of the rest."""
    object_id = _grid_of_cars(200)
    rng = np.random.default_rng(0)
    detected_masks = missing = extra = detected_total = 0
    for _ in range(15):
        detected = sorted(rng.choice(200, 120, replace=False).tolist())
        masks = segment(object_id, detected, 200, rng, SegmenterModel(extra_rate=0.10))
        got = {m.truth_index for m in masks}
        detected_total += len(detected)
        missing += len(set(detected) - got)
        detected_masks += len(got & set(detected))
        extra += len(got - set(detected))
    assert missing / detected_total == pytest.approx(0.08, abs=0.02)
    assert extra / detected_masks == pytest.approx(0.10, abs=0.02)
    # no missed cars, no extras; a car under min_pixels never gets a mask
    masks = segment(object_id, list(range(200)), 200, rng, SegmenterModel(missing_rate=0.0))
    assert sorted(m.truth_index for m in masks) == list(range(200))
    tiny = np.full((20, 20), -1)
    tiny[5:7, 5:7] = 0
    assert segment(tiny, [0], 1, rng) == []


def test_the_segmenter_finds_the_cars_the_detector_missed_by_their_size() -> None:
    """By default a missed car is found like a detected one when it shows at least `found_pixels` pixels
    (1 - missing_rate), a smaller one in proportion to its pixels, one under `min_pixels` never."""
    big, small = _grid_of_cars(200, side=24), _grid_of_cars(200, side=10)   # 576 and 100 pixels a car
    rng = np.random.default_rng(3)
    found = {"big": 0, "small": 0}
    for name, object_id in (("big", big), ("small", small)):
        for _ in range(10):
            masks = segment(object_id, list(range(100)), 200, rng)     # cars 100..199 missed by the detector
            found[name] += sum(1 for m in masks if m.truth_index >= 100)
    assert found["big"] / 1000 == pytest.approx(0.92, abs=0.03)
    assert found["small"] / 1000 == pytest.approx(0.92 * 100 / 400, abs=0.03)
    tiny = np.full((20, 20), -1)
    tiny[5:7, 5:7] = 0
    assert segment(tiny, [], 1, rng) == []


def test_unannotated_cars_get_masks_without_truth() -> None:
    object_id = _grid_of_cars(40)
    masks = segment(object_id, [0, 1], 20, np.random.default_rng(1), SegmenterModel(extra_rate=1.0),
                    unannotated=list(range(20, 40)))
    assert all(m.truth_index == -1 for m in masks if m.mask[object_id >= 20].any())
    assert any(m.truth_index == -1 for m in masks)


def test_coarse_mask_outline() -> None:
    """The coarse copy of a disc: close (IoU > 0.85), never exact, differing only near the outline."""
    yy, xx = np.mgrid[:200, :240]
    disc = (yy - 100) ** 2 + (xx - 120) ** 2 < 50 ** 2
    inside = ndimage.distance_transform_edt(disc)
    outside = ndimage.distance_transform_edt(~disc)
    for seed in range(5):
        mask = coarse_mask(disc, np.random.default_rng(seed))
        iou = (mask & disc).sum() / (mask | disc).sum()
        assert 0.85 < iou < 1.0
        wrong = mask ^ disc
        assert np.maximum(inside, outside)[wrong].max() <= 2 + 0.05 * 100 + 1
    # at the image border the mask is clipped, an empty region gives an empty mask
    edge = np.zeros((50, 50), dtype=bool)
    edge[:20, :20] = True
    assert coarse_mask(edge, np.random.default_rng(0))[:22, :22].mean() > 0.8
    assert not coarse_mask(np.zeros((10, 10), dtype=bool), np.random.default_rng(0)).any()


def test_segmenter_model_rejects_bad_rates() -> None:
    with pytest.raises(NmrlightError, match="missing_rate"):
        SegmenterModel(missing_rate=1.5)
