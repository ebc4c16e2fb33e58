"""Real detector output as input: the predictions' format (train, submission, auto), a segmenter's
COCO masks (dataset and results formats) and every bad input of them, the competition's ignore masks."""

from __future__ import annotations

import json

import numpy as np
import pytest
from pycocotools import mask as mask_utils

from nmrlight.errors import NmrlightError
from nmrlight.io.dataset import DataFolder
from nmrlight.io.images import write_image
from nmrlight.io.masks import decode_instances, read_coco_instances
from nmrlight.io.poses import detect_format, resolve_format
from nmrlight.refine.inputs import read_inputs

TRAIN = ("ImageId,PredictionString\n"
         "ID_1,16 0.254839 -2.57534 -3.10256 7.96539 3.20066 11.0225 56 0.181647 -1.46947 -3.12159 9.6 4.6 19.3\n"
         "ID_2,\n")
SUBMISSION = ("ImageId,PredictionString\n"
              "ID_1,0.15 -2.57 -3.10 7.96 3.20 11.02 0.93 0.18 1.46 3.12 9.6 4.6 19.3 0.41\n"
              "ID_2,\n"
              "ID_3,0.16 0.5 3.1 -4.0 5.5 18.0 0.7\n")


def _write(tmp_path, text, name="p.csv"):
    path = tmp_path / name
    path.write_text(text)
    return path


def test_format_is_decided_from_the_whole_file(tmp_path):
    fmt, reason = detect_format(_write(tmp_path, TRAIN))
    assert fmt == "train" and "model id" in reason
    fmt, reason = detect_format(_write(tmp_path, SUBMISSION))
    assert fmt == "submission" and "confidence" in reason
    assert detect_format(_write(tmp_path, "ImageId,PredictionString,Confidence\nID_1,1 0 0 0 0 0 0.5,1\n"))[0] \
        == "train"
    assert detect_format(_write(tmp_path, "ImageId,PredictionString\nID_1,\n"))[0] == "train"
    # every car starts with an integer 0..78 and ends in [0, 1]: either could be meant
    ambiguous = _write(tmp_path, "ImageId,PredictionString\nID_1,1 0.1 0.2 0.3 1.0 2.0 0.5\n")
    with pytest.raises(NmrlightError, match="ambiguous.*--format") as info:
        detect_format(ambiguous)
    assert str(ambiguous) in str(info.value)
    assert resolve_format(ambiguous, "submission") == ("submission", "given")
    # one car fits neither: the first value is no model id and the last is no confidence
    with pytest.raises(NmrlightError, match="neither format fits.*--format"):
        detect_format(_write(tmp_path, "ImageId,PredictionString\nID_1,0.15 0.1 0.2 0.3 1.0 2.0 12.5\n"))
    with pytest.raises(NmrlightError, match="--format must be one of"):
        resolve_format(ambiguous, "kaggle")


def test_submission_input_reads_without_model_ids_and_keeps_order_and_confidence(tmp_path):
    inputs = read_inputs(_write(tmp_path, SUBMISSION), fmt="auto")
    assert inputs.format == "submission" and inputs.order == ["ID_1", "ID_2", "ID_3"]
    cars = inputs.poses["ID_1"]
    assert [c.model_type for c in cars] == [-1, -1]
    assert [c.confidence for c in cars] == [0.93, 0.41]
    assert cars[1].rotation == (0.18, 1.46, 3.12) and cars[1].translation == (9.6, 4.6, 19.3)
    train = read_inputs(_write(tmp_path, TRAIN, "t.csv"), fmt="auto")
    assert train.format == "train" and train.poses["ID_1"][1].model_type == 56


def _rle(mask):
    rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    return {"size": [int(s) for s in mask.shape], "counts": rle["counts"].decode("ascii")}


def _box(x0, y0, x1, y1, shape=(40, 60)):
    m = np.zeros(shape, bool)
    m[y0:y1, x0:x1] = True
    return m


IMAGES = {"images": [{"id": 1, "file_name": "train_images/ID_a.jpg", "width": 60, "height": 40},
                     {"id": 2, "file_name": "ID_b.jpg", "width": 60, "height": 40}]}


def test_coco_dataset_format_is_indexed_by_image_with_scores(tmp_path):
    path = tmp_path / "instances.json"
    path.write_text(json.dumps({**IMAGES, "annotations": [
        {"id": 11, "image_id": 2, "segmentation": _rle(_box(1, 1, 5, 5)), "score": 0.8},
        {"id": 12, "image_id": 1, "segmentation": [[10, 10, 20, 10, 20, 20, 10, 20]], "score": 0.6},
        {"id": 13, "image_id": 1, "segmentation": _rle(_box(30, 5, 40, 25))}]}))
    coco = read_coco_instances(path)
    assert coco.warnings == [] and not coco.ordered
    assert set(coco.instances) == {"ID_a", "ID_b"}
    a = coco.instances["ID_a"]
    assert [(m.entry, m.ann_id, m.score) for m in a] == [(1, 12, 0.6), (2, 13, 1.0)]
    decoded, problems = decode_instances(a, 40, 60)
    assert problems == []
    polygon = decoded[0][1]  # the square 10..20: pycocotools rasterises its 10 x 10 pixels (+ the edge)
    assert polygon[12, 12] and not polygon[25, 12] and 100 <= polygon.sum() <= 121
    assert np.array_equal(decoded[1][1], _box(30, 5, 40, 25))


def test_coco_results_format_resolves_image_ids_through_an_images_list(tmp_path):
    results = [{"image_id": 1, "category_id": 3, "segmentation": _rle(_box(1, 1, 5, 5)), "score": 0.9,
                "bbox": [1, 1, 4, 4]},
               {"image_id": 2, "category_id": 3, "segmentation": _rle(_box(2, 2, 8, 8)), "score": 0.3}]
    path = tmp_path / "results.json"
    path.write_text(json.dumps(results))
    (tmp_path / "instances.json").write_text(json.dumps({**IMAGES, "annotations": []}))
    coco = read_coco_instances(path, tmp_path / "instances.json")
    assert [m.score for m in coco.instances["ID_a"]] == [0.9] and [m.entry for m in coco.instances["ID_b"]] == [1]
    # without the images list, integer image_ids cannot be resolved: each is a counted warning with a hint
    alone = read_coco_instances(path)
    assert len(alone.warnings) == 2 and "--coco-images" in alone.warnings[0] and "entry 0" in alone.warnings[0]
    # string image_ids are ImageIds (file names allowed)
    path.write_text(json.dumps([{**results[0], "image_id": "ID_c.jpg"}]))
    assert list(read_coco_instances(path).instances) == ["ID_c"]


@pytest.mark.parametrize("content, problem", [
    ("{not json", "invalid JSON"),
    ('"a string"', "expected a COCO dataset object or a results list"),
    ('{"images": []}', "needs an 'annotations' list"),
    ('{"images": [{"id": 1}], "annotations": []}', r"images\[0\] needs id and file_name"),
])
def test_a_broken_coco_file_is_a_clear_error_naming_it(tmp_path, content, problem):
    path = tmp_path / "masks.json"
    path.write_text(content)
    with pytest.raises(NmrlightError, match=problem) as info:
        read_coco_instances(path)
    assert str(path) in str(info.value)


def test_bad_coco_entries_are_skipped_with_a_warning_each_and_nothing_else_is_lost(tmp_path):
    good = {"image_id": 1, "segmentation": _rle(_box(1, 1, 5, 5)), "score": 0.5}
    entries = [
        good,
        {"image_id": 1, "segmentation": _rle(_box(1, 1, 5, 5, shape=(20, 30)))},       # RLE of another size
        {"image_id": 1, "segmentation": [[0, 0, 90, 0, 90, 30, 0, 30]]},             # polygon out of range
        {"image_id": 7, "segmentation": _rle(_box(1, 1, 5, 5))},                    # no such image
        {"image_id": 1, "segmentation": [[1, 2, 3]]},                               # not a polygon
        {"image_id": 1, "segmentation": _rle(_box(1, 1, 5, 5)), "score": "high"},   # score not a number
        {"image_id": 1},                                                            # no segmentation
        {"image_id": 2, "segmentation": {"size": [40, 60], "counts": 12}},          # counts of a wrong type
    ]
    path = tmp_path / "m.json"
    path.write_text(json.dumps({**IMAGES, "annotations": entries}))
    coco = read_coco_instances(path)
    assert [m.entry for m in coco.instances["ID_a"]] == [0] and coco.instances["ID_b"] == []
    expected = ["annotations[1]: segmentation size [20, 30] differs from the image size [40, 60]",
                "annotations[2]: polygon out of range", "annotations[3]: image_id 7 is not in the images list",
                "annotations[4]: a polygon must be", "annotations[5]: score 'high' is not a number",
                "annotations[6]: needs image_id and segmentation", "annotations[7]: segmentation counts must be"]
    assert len(coco.warnings) == len(expected)
    for warning, text in zip(coco.warnings, expected, strict=True):
        assert str(path) in warning and text in warning and warning.endswith("skipped")


def test_masks_are_checked_against_the_real_image_size_when_decoded(tmp_path):
    path = tmp_path / "r.json"
    path.write_text(json.dumps([{"image_id": "ID_x", "segmentation": _rle(_box(1, 1, 5, 5))},
                                {"image_id": "ID_x", "segmentation": [[1, 1, 9, 1, 9, 9]]}]))
    coco = read_coco_instances(path)          # no image sizes in a bare results file: checked at decode
    decoded, problems = decode_instances(coco.instances["ID_x"], 80, 120)
    assert len(decoded) == 1 and decoded[0][0].entry == 1
    assert len(problems) == 1 and "entry 0" in problems[0] and "differs from the image size [80, 120]" in problems[0]


def test_ignore_masks_come_from_train_or_test_masks(tmp_path):
    data = DataFolder.create(tmp_path)
    assert data.read_ignore("ID_a", (40, 60)) is None
    (tmp_path / "test_masks").mkdir()
    region = np.zeros((40, 60), np.float32)
    region[10:20, 30:50] = 1.0
    write_image(tmp_path / "test_masks" / "ID_a.jpg", region)
    ignore = data.read_ignore("ID_a", (40, 60))
    assert ignore[12:18, 32:48].all() and not ignore[:8].any() and not ignore[:, :28].any()
    with pytest.raises(NmrlightError, match="ignore mask .*ID_a.jpg: size 60x40 .* differs"):
        data.read_ignore("ID_a", (41, 60))


def test_a_masks_file_whose_every_mask_names_its_car_is_taken_as_ordered(tmp_path):
    path = tmp_path / "m.json"
    anns = [{"image_id": 1, "car_index": 2, "segmentation": _rle(_box(1, 1, 5, 5))},
            {"image_id": 2, "car_index": 1, "segmentation": _rle(_box(1, 1, 5, 5))}]
    path.write_text(json.dumps({**IMAGES, "annotations": anns}))
    coco = read_coco_instances(path)
    assert coco.ordered and coco.instances["ID_a"][0].car_index == 2
    path.write_text(json.dumps({**IMAGES, "annotations": [anns[0], {**anns[1], "car_index": None}]}))
    assert not read_coco_instances(path).ordered


def test_label_image_values_beyond_the_rows_cars_are_dont_care(tmp_path):
    """A label image may mark cars the detector missed with values beyond the row's cars: their pixels
    are don't-care for every car (a car behind one of them is hidden there, not absent), not background,
    and no car takes them as its mask; ignore masks add to them."""
    from nmrlight.io.masks import write_label_mask
    from nmrlight.refine.config import RefineConfig
    from nmrlight.refine.prepare import image_masks

    data = DataFolder.create(tmp_path)
    labels = np.zeros((40, 60), np.uint8)
    labels[5:15, 5:20] = 1      # the row's first car
    labels[20:30, 10:25] = 2    # its second
    labels[22:35, 30:50] = 4    # no such car in a row of two
    write_label_mask(tmp_path / "masks" / "ID_a.png", labels)
    cars = [object(), object()]   # only their number matters here
    masks = image_masks(data, "ID_a", cars, None, (40, 60), RefineConfig())
    assert masks.summary["unmatched"] == [4]
    assert np.array_equal(masks.dont_care, labels == 4)
    assert np.array_equal(masks.labels, np.where(labels == 4, 0, labels))
    (tmp_path / "train_masks").mkdir()
    region = np.zeros((40, 60), np.float32)
    region[0:4, 40:60] = 1.0
    write_image(tmp_path / "train_masks" / "ID_a.jpg", region)
    both = image_masks(data, "ID_a", cars, None, (40, 60), RefineConfig())
    assert both.dont_care[23, 35] and both.dont_care[2, 50] and not both.dont_care[10, 10]
    # a row with all four cars: every value is a car's mask, only the ignore mask is don't-care
    full = image_masks(data, "ID_a", cars * 2, None, (40, 60), RefineConfig())
    assert "unmatched" not in full.summary and np.array_equal(full.labels, labels)
    assert full.dont_care[2, 50] and not full.dont_care[23, 35]
