"""Association of a segmenter's unordered masks with the predicted cars (nmrlight.refine.associate and
the COCO path of nmrlight.refine.prepare): the score on analytic shapes, the global matching against a
greedy one, and a rendered scene whose masks are shuffled, dilated into each other, one missing, one
of a car the detector missed, under the detector's errors."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from pycocotools import mask as mask_utils

from nmrlight.camera import Camera
from nmrlight.io.camera_file import write_intrinsics
from nmrlight.io.dataset import DataFolder
from nmrlight.io.images import write_image
from nmrlight.io.poses import CarPose
from nmrlight.procedural import car_for_model, write_models
from nmrlight.refine.associate import associate, hidden_score, match, occluders, pair_score
from nmrlight.refine.config import RefineConfig
from nmrlight.refine.prepare import attach_masks, downsampled_mask, image_masks, pose_cars
from nmrlight.render import render
from nmrlight.rotations import kaggle_to_matrix
from nmrlight.scene import MeshObject, Scene


def _rect(shape, x0, y0, x1, y1):
    m = np.zeros(shape, bool)
    m[y0:y1, x0:x1] = True
    return m


def test_pair_score_of_analytic_shapes():
    shape = (100, 200)
    car = _rect(shape, 20, 20, 40, 30)        # 20 x 10 box
    assert pair_score(car, car) == pytest.approx(1.0)
    # the same box 6 px to the right: IoU 14/26; box-aligned IoU 1, damped by exp(-0.5 (6 / (0.5 sqrt(200)))^2)
    moved = _rect(shape, 26, 20, 46, 30)
    damping = math.exp(-0.5 * (6 / (0.5 * math.sqrt(200))) ** 2)
    assert pair_score(car, moved) == pytest.approx(max(14 / 26, damping))
    # the detector's lateral error in pixels (slack) widens the damping for small cars
    assert pair_score(car, moved, slack=12.0) == pytest.approx(math.exp(-0.5 * (6 / 12) ** 2))
    # 7 % larger (a depth error), centred: box-aligned IoU = 200 / (22 * 11 rounded box)
    bigger = _rect(shape, 19, 20, 41, 31)
    assert pair_score(car, bigger) == pytest.approx(200 / (22 * 11))
    # a similar car far away (many of its sizes): nothing
    assert pair_score(car, _rect(shape, 150, 60, 170, 70)) == 0.0
    assert pair_score(car, np.zeros(shape, bool)) == 0.0


def test_hidden_score_finds_the_visible_sliver_of_a_hidden_car():
    shape = (100, 200)
    whole = _rect(shape, 20, 20, 60, 40)             # the car alone: 40 x 20
    # the car is truly 3 px right and up of where the detector put it: a nearer car's mask hides all
    # but its top 6 rows, which are its mask
    front = _rect(shape, 10, 23, 80, 60)
    sliver = _rect(shape, 23, 17, 63, 23)
    # top edges aligned (dy = -3) and left edges (dx = 3): all the mask inside the car, the car all
    # covered by masks; damped by the 4.24 px shift at sigma = 0.5 sqrt(800)
    expected = math.exp(-0.5 * (math.hypot(3, 3) / (0.5 * math.sqrt(800))) ** 2)
    assert hidden_score(whole, sliver, front) == pytest.approx(expected)
    # the plain score of the render's visible part (nothing in front of it: the nearer car was missed
    # by the detector) is poor
    assert pair_score(whole, sliver) < 0.4
    # the same sliver over background (nothing hides the rest of the car): the car would stick out
    assert hidden_score(whole, sliver, np.zeros(shape, bool)) < 0.3
    # a mask outside the car
    assert hidden_score(whole, _rect(shape, 120, 20, 160, 26), front) < 0.01


def test_matching_is_global_and_respects_the_minimum_and_the_tie_break():
    # greedy would give car 0 its best mask (0), leaving car 1 with 0.35; the optimum pairs 0-1, 1-0
    scores = np.array([[0.9, 0.8], [0.85, 0.35]])
    result = match(scores, min_score=0.3)
    assert [m.mask for m in result] == [1, 0]
    assert result[0].score == pytest.approx(0.8)
    # below the minimum: no mask, even when the mask is free
    result = match(np.array([[0.25, 0.0]]), min_score=0.3)
    assert result[0].mask is None
    # equal overlap: the segmenter's surer mask wins
    assert match(np.array([[0.6, 0.6]]), [0.4, 0.9])[0].mask == 1
    assert match(np.array([[0.6, 0.6]]), [0.9, 0.4])[0].mask == 0
    # more cars than masks, no masks at all
    assert [m.mask for m in match(np.array([[0.5], [0.7]]))] == [None, 0]
    assert [m.mask for m in match(np.zeros((2, 0)))] == [None, None]


def test_only_masks_of_nearer_or_missed_cars_may_hide_a_car():
    # columns: mask 0 fits car 0 (10 m) best, mask 1 car 1 (30 m), mask 2 nobody (a missed car)
    pair = np.array([[0.8, 0.1, 0.05], [0.4, 0.7, 0.1]])
    hide = occluders(pair, [10.0, 30.0], min_score=0.3)
    # the near car: not behind its own mask nor the farther car's; maybe behind the missed car
    assert hide[0].tolist() == [False, False, True]
    # the far car: behind the near car's mask or the missed car's; not behind its own
    assert hide[1].tolist() == [True, False, True]
    # without depths every mask may hide every car (the score as before depths were used)
    assert occluders(pair, None).all()
    # a car the render already shows partly hidden (60 % of it): any mask may hide it, its own best
    # fit included (which mask is its own is unreliable there); a car shown whole keeps the rule
    hide = occluders(pair, [10.0, 30.0], min_score=0.3, shown=[1.0, 0.6])
    assert hide[0].tolist() == [False, False, True] and hide[1].all()


def test_two_overlapping_cars_keep_their_own_masks():
    """A near car in front of a farther one of the same size: the detector put the near car 11 px
    right of where it is, so the render shows the far car's left edge while the photograph shows its
    right edge. The near car renders fully visible, so it cannot be "mostly hidden behind" its own
    mask: without depths its hidden score on the far car's sliver is as high as on its own mask and
    the two swap; with depths each keeps its own."""
    shape = (60, 140)
    whole_near, whole_far = _rect(shape, 59, 20, 79, 36), _rect(shape, 52, 20, 72, 36)
    visible = [whole_near, whole_far & ~whole_near]
    masks = [_rect(shape, 48, 20, 68, 36), _rect(shape, 68, 20, 72, 36)]   # near car's, far car's sliver
    matches, scores = associate(visible, masks, slack=21.0, whole=[whole_near, whole_far], depths=[57.0, 68.0])
    assert [m.mask for m in matches] == [0, 1]
    assert scores[0, 1] < 0.3 < scores[0, 0]
    swapped, old = associate(visible, masks, slack=21.0, whole=[whole_near, whole_far])
    assert [m.mask for m in swapped] == [1, 0] and old[0, 1] > old[0, 0]


def test_a_mask_too_small_for_the_association_frame_does_not_vanish():
    full = np.zeros((200, 300), bool)
    full[100, 150:154] = True                 # a 4 x 1 sliver; 0.3 of an association pixel at scale 0.25
    small = downsampled_mask(full, (50, 75))
    assert small.any() and set(np.argwhere(small)[:, 0]) == {25} and set(np.argwhere(small)[:, 1]) <= {37, 38}
    # a larger mask keeps the pixels it covers more than half: x 40-82 and y 40-62 cover cells 10-19
    # and 10-14 fully, cells 20 and 15 only half
    big = _rect((200, 300), 40, 40, 82, 62)
    assert (downsampled_mask(big, (50, 75)) == _rect((50, 75), 10, 10, 20, 15)).all()


MODELS = (2, 17, 50)
# four cars of a street, two pairs overlapping in the image; the 4th is missed by the detector
TRUTH = [CarPose(17, (0.15, 0.3, math.pi), (-2.5, 1.5, 12.0)),
         CarPose(50, (0.15, -2.8, math.pi), (1.0, 1.6, 17.0)),
         CarPose(2, (0.15, 0.1, math.pi), (3.5, 1.6, 28.0)),
         CarPose(17, (0.15, 2.9, math.pi), (5.5, 1.7, 30.0)),
         CarPose(50, (0.15, 0.0, math.pi), (-6.0, 1.8, 45.0))]
MISSED = 3    # the detector's miss (the segmenter has its mask)
NO_MASK = 4   # the segmenter's miss (the detector has it)


def _render_labels(camera, cars):
    objects = []
    for c in cars:
        mesh = car_for_model(c.model_type).mesh
        objects.append(MeshObject(torch.as_tensor(mesh.object_vertices(), dtype=torch.float32),
                                  torch.as_tensor(mesh.faces, dtype=torch.long),
                                  torch.as_tensor(kaggle_to_matrix(np.array(c.rotation)), dtype=torch.float32),
                                  torch.tensor(c.translation, dtype=torch.float32)))
    with torch.no_grad():
        return render(Scene(objects), camera, None, edges="none", outputs=set()).object_id.numpy() + 1


def _detector(car: CarPose, depth: float, heading_deg: float, lateral_m: float) -> CarPose:
    v1, v2, v3 = car.rotation
    x, y, z = car.translation
    return CarPose(-1, (v1, v2 + math.radians(heading_deg), v3), (x * depth + lateral_m, y * depth, z * depth), 0.9)


def _rle(mask):
    rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    return {"size": list(mask.shape), "counts": rle["counts"].decode("ascii")}


@pytest.fixture(scope="module")
def street(tmp_path_factory):
    """A 846 x 678 data folder; COCO results with shuffled, dilated masks: all but NO_MASK's, plus MISSED's."""
    root = tmp_path_factory.mktemp("street")
    DataFolder.create(root)
    camera = Camera.kaggle().scaled(0.25)
    write_intrinsics(camera, root / "camera" / "camera_intrinsic.txt")
    write_models(root, MODELS)
    labels = _render_labels(camera, TRUTH)
    write_image(root / "images" / "ID_street.png", np.full(labels.shape, 0.4, np.float32))
    from scipy import ndimage

    entries, fat = [], {}
    for k in range(len(TRUTH)):
        if k == NO_MASK:
            continue  # the segmenter missed this car
        mask = fat[k] = ndimage.binary_dilation(labels == k + 1, iterations=2)  # fat: neighbours overlap
        entries.append({"image_id": 5, "category_id": 3, "segmentation": _rle(mask), "score": 0.5 + 0.1 * k,
                        "truth": k})
    rng = np.random.default_rng(0)
    entries = [entries[i] for i in rng.permutation(len(entries))]
    truth_of_entry = {i: e.pop("truth") for i, e in enumerate(entries)}
    (root / "results.json").write_text(json.dumps(entries))
    (root / "instances.json").write_text(json.dumps({"images": [
        {"id": 5, "file_name": "ID_street.jpg", "width": camera.width, "height": camera.height}],
        "annotations": []}))
    return root, camera, labels, truth_of_entry, fat


@pytest.mark.parametrize("errors", [(1.0, 0.0, 0.0), (1.07, 3.0, 0.3), (0.93, -4.0, -0.4)])
def test_rendered_street_masks_find_their_cars(street, errors):
    root, camera, labels, truth_of_entry, fat = street
    order = [4, 0, 2, 1]          # truth index of each detected car: another order than the masks'
    cars = [_detector(TRUTH[t], *errors) for t in order]
    config = RefineConfig(masks_file=str(root / "results.json"), coco_images=str(root / "instances.json"))
    data = DataFolder(root)
    state = pose_cars(data, cars, camera, config)
    masks = image_masks(data, "ID_street", state, camera, labels.shape, config)
    assert masks.warnings == []
    for car, truth in zip(state, order, strict=True):
        found = car.extra["association"]
        if truth == NO_MASK:
            assert found == "no mask"
        else:
            assert truth_of_entry[found["entry"]] == truth and found["score"] >= 0.3
    # the missed car's mask is matched to nobody: its pixels (outside the others' masks) are don't-care
    missed_entry = next(e for e, t in truth_of_entry.items() if t == MISSED)
    assert masks.summary["unmatched"] == [missed_entry]
    own = labels == MISSED + 1
    assert masks.dont_care[own & (masks.labels == 0)].all()
    assert not masks.dont_care[labels == 1].any()
    # the label image: where two fat masks overlap, the nearer car's label wins
    attach_masks(state, masks, camera, config)
    statuses = {t: car.status for car, t in zip(state, order, strict=True)}
    assert statuses[NO_MASK] == "no mask" and statuses[0] == statuses[1] == statuses[2] == "refined"
    overlaps = 0
    for a in fat:
        for b in fat:
            if a != b and MISSED not in (a, b) and TRUTH[a].translation[2] < TRUTH[b].translation[2]:
                both = fat[a] & fat[b]
                overlaps += int(both.sum())
                assert (masks.labels[both] == state[order.index(a)].index + 1).all()
    assert overlaps > 0


def test_associate_on_empty_inputs():
    matches, scores = associate([np.zeros((4, 4), bool)], [])
    assert matches[0].mask is None and scores.shape == (1, 0)


def test_ordered_coco_masks_are_used_as_numbered(street, tmp_path):
    root, camera, labels, _, _ = street
    anns = [{"image_id": "ID_street", "car_index": k + 1, "segmentation": _rle(labels == t + 1)}
            for k, t in enumerate([2, 0])]
    (tmp_path / "ordered.json").write_text(json.dumps(anns))
    config = RefineConfig(masks_file=str(tmp_path / "ordered.json"))
    cars = [_detector(TRUTH[t], 1.0, 0.0, 0.0) for t in (2, 0)]
    data = DataFolder(root)
    state = pose_cars(data, cars, camera, config)
    masks = image_masks(data, "ID_street", state, camera, labels.shape, config)
    assert masks.summary["ordered"] and masks.dont_care is None
    assert np.array_equal(masks.labels == 1, labels == 3) and np.array_equal(masks.labels == 2, labels == 1)
    assert "association" not in state[0].extra
