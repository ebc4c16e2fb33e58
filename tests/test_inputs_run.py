"""`nmrlight refine` on real detector output end to end: submission-format predictions (shuffled, no
model ids), a segmenter's unordered COCO masks (one missing, one extra, one image not predicted), an
ignore mask; refined.csv in the input's order with chosen model ids, submission.csv that reads back
as what was refined, the association in report.json; and the CLI's clear errors for bad input."""

from __future__ import annotations

import json
import sys

import numpy as np
import pytest
from pycocotools import mask as mask_utils

from nmrlight.cli import main
from nmrlight.io.dataset import DataFolder
from nmrlight.io.images import write_image
from nmrlight.io.masks import read_label_mask
from nmrlight.io.poses import read_poses, write_submission
from nmrlight.refine.config import RefineConfig
from nmrlight.refine.runner import RunOptions, run_refine

FAST = dict(stages=((32, "soft", 1.0, 3),), lighting_size=32, lighting_cars=1, max_neighbours=2,
            mesh_candidates=2, mesh_screened=3, mesh_shortlist_size=32)


def _rle(mask):
    rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    return {"size": [int(s) for s in mask.shape], "counts": rle["counts"].decode("ascii")}


@pytest.fixture(scope="module")
def detector_output(tmp_path_factory):
    """3 synthetic pictures written as a real pipeline's output; returns (data, files, truth of each mask)."""
    from nmrlight.synth import SynthConfig, synthesize

    root = tmp_path_factory.mktemp("inputs") / "data"
    synthesize(root, 3, seed=5, config=SynthConfig(scale=0.2, cars_mean=3.0, cars_min=3, cars_max=4))
    predictions = read_poses(root / "predictions.csv")
    rng = np.random.default_rng(1)
    images = [{"id": 100 + k, "file_name": f"{i}.jpg", "width": 677, "height": 542}
              for k, i in enumerate([*predictions, "ID_not_predicted"])]
    shuffled, results, truth = {}, [], {}   # truth: entry -> (ImageId, position in the shuffled row) or None
    for k, (image_id, cars) in enumerate(predictions.items()):
        order = rng.permutation(len(cars))
        labels = read_label_mask(root / "masks" / f"{image_id}.png")
        dropped = int(order[-1]) if k == 0 else None          # the detector missed this car of image 0
        kept = [int(i) for i in order if i != dropped]
        shuffled[image_id] = [cars[i] for i in kept]
        for i in rng.permutation(len(cars)):
            i = int(i)
            if k == 1 and i == kept[0]:
                continue                                    # the segmenter missed this car of image 1
            if not (labels == i + 1).any():
                continue
            truth[len(results)] = (image_id, kept.index(i)) if i in kept else None
            results.append({"image_id": images[k]["id"], "category_id": 3, "score": float(rng.uniform(0.5, 1)),
                            "segmentation": _rle(labels == i + 1)})
    extra = np.zeros((542, 677), bool)
    extra[10:20, 10:20] = True
    results.append({"image_id": images[-1]["id"], "category_id": 3, "score": 0.9, "segmentation": _rle(extra)})
    for car in (c for cars in shuffled.values() for c in cars):
        car.confidence = float(rng.uniform(0.2, 1.0))
    write_submission(root / "submission_in.csv", shuffled)
    (root / "results.json").write_text(json.dumps(results))
    (root / "instances.json").write_text(json.dumps({"images": images, "annotations": []}))
    (root / "train_masks").mkdir()
    ignore_id = list(predictions)[2]
    region = np.zeros((542, 677), np.float32)
    region[:40, :] = 1.0                                    # the top of the picture: no cars there
    write_image(root / "train_masks" / f"{ignore_id}.jpg", region)
    return root, shuffled, truth, ignore_id


@pytest.fixture(scope="module")
def run(detector_output, tmp_path_factory):
    root, _, _, _ = detector_output
    out = tmp_path_factory.mktemp("inputs") / "out"
    log: list[str] = []
    config = RefineConfig(threads=1, masks_file=str(root / "results.json"),
                          coco_images=str(root / "instances.json"), **FAST)
    summary = run_refine(RunOptions(data=root, predictions=root / "submission_in.csv", out=out, config=config,
                                    workers=1, progress=False, format="auto"), log=log.append)
    return summary, out, log


def test_submission_input_is_refined_and_written_back_in_both_formats(detector_output, run):
    root, shuffled, _, _ = detector_output
    summary, out, log = run
    assert summary.exit_code == 0, summary.failed
    assert any("submission format" in line for line in log)
    assert any("1 images are not in the predictions" in line and "ID_not_predicted" in line for line in log)
    refined = read_poses(out / "refined.csv")                 # train format: a model id a car
    known = set(DataFolder(root).model_ids())
    assert list(refined) == list(shuffled)
    for image_id, cars in shuffled.items():
        assert len(refined[image_id]) == len(cars)
        for before, after in zip(cars, refined[image_id], strict=True):
            assert after.model_type in known
            # the input's car order: each refined car is still near its own detection
            shift = np.linalg.norm(np.subtract(after.translation, before.translation))
            assert shift < 0.1 * np.linalg.norm(before.translation)
            assert after.confidence == pytest.approx(before.confidence)
    # round trip: the upload file reads back as the refined poses, confidences kept
    upload = read_poses(out / "submission.csv", submission=True)
    assert list(upload) == list(refined)
    for image_id in refined:
        for a, b in zip(upload[image_id], refined[image_id], strict=True):
            assert a.rotation == pytest.approx(b.rotation) and a.translation == pytest.approx(b.translation)
            assert a.confidence == pytest.approx(b.confidence) and a.model_type == -1


def test_report_says_which_mask_each_car_got(detector_output, run):
    root, shuffled, truth, ignore_id = detector_output
    _, out, _ = run
    report = json.loads((out / "report.json").read_text())
    images = {r["image_id"]: r for r in report["images"]} if "images" in report else None
    assert images is not None, list(report)
    got, screened = {}, 0
    for image_id, result in images.items():
        for car in result["cars"]:
            assoc = car["extra"]["association"]
            choice = car["extra"]["mesh_choice"]
            assert choice["chosen"] == car["refined"]["model_type"]
            if choice.get("screened"):   # 3 shortlisted meshes screened, the best 2 of them refined in full
                ranked = sorted(choice["screened"], key=choice["screened"].get)
                assert len(ranked) == 3
                assert sorted(choice["losses"]) == sorted(ranked[:2]) and str(choice["chosen"]) in ranked[:2]
                screened += 1
            if assoc != "no mask":
                got[assoc["entry"]] = (image_id, car["index"])
    expected = {e: t for e, t in truth.items() if t is not None}
    assert got == expected and screened > 0
    # the mask of the car the detector missed was left over and said so; the segmenter's miss has no mask
    leftovers = [e for e, t in truth.items() if t is None]
    first = list(shuffled)[0]
    assert images[first]["masks"]["unmatched"] == leftovers
    no_mask = [c for c in images[list(shuffled)[1]]["cars"] if c["extra"]["association"] == "no mask"]
    assert len(no_mask) == 1 and no_mask[0]["status"] == "no mask"
    assert images[ignore_id]["masks"]["ignore_pixels"] == 40 * 677


def _cli(monkeypatch, capsys, *args: str) -> tuple[int, str]:
    """Run the `nmrlight` entry point as the shell would: (exit status, stderr)."""
    monkeypatch.setattr(sys, "argv", ["nmrlight", *args])
    with pytest.raises(SystemExit) as info:
        main()
    return info.value.code, capsys.readouterr().err


def test_the_cli_turns_bad_detector_output_into_one_clear_error(detector_output, tmp_path, monkeypatch, capsys):
    root, _, _, _ = detector_output
    broken = tmp_path / "broken.json"
    broken.write_text("[{")
    code, err = _cli(monkeypatch, capsys, "refine", str(root), "-p", str(root / "submission_in.csv"), "--masks",
                     str(broken), "--out", str(tmp_path / "o1"), "-w", "1", "-q")
    assert code == 2 and err.startswith("error: COCO masks") and "broken.json: invalid JSON" in err
    assert "Traceback" not in err and not (tmp_path / "o1").exists()
    ambiguous = tmp_path / "amb.csv"
    ambiguous.write_text("ImageId,PredictionString\nID_synth_000001,1 0.1 0.2 0.3 1.0 2.0 0.5\n")
    code, err = _cli(monkeypatch, capsys, "refine", str(root), "-p", str(ambiguous), "--out", str(tmp_path / "o2"))
    assert code == 2 and "amb.csv: the format is ambiguous" in err and "--format" in err
    code, err = _cli(monkeypatch, capsys, "refine", str(root), "-p", str(ambiguous), "--out", str(tmp_path / "o3"),
                     "--model", "5")
    assert code == 2 and "car model 5: mesh file" in err
    code, err = _cli(monkeypatch, capsys, "refine", str(root), "-p", str(ambiguous), "--out", str(tmp_path / "o4"),
                     "--masks", str(tmp_path / "none.json"))
    assert code == 2 and "--masks" in err and "file not found" in err
    # integer image_ids without the images list match no photograph: an error, not a run without masks
    code, err = _cli(monkeypatch, capsys, "refine", str(root), "-p", str(root / "submission_in.csv"), "--masks",
                     str(root / "results.json"), "--out", str(tmp_path / "o5"), "-w", "1", "-q")
    assert code == 2 and "results.json: no mask for any of the run's 3 images" in err
    assert "give --coco-images" in err and "Traceback" not in err and not (tmp_path / "o5").exists()
    # the masks of another data set (every ImageId unknown to the run) are refused the same way
    other = tmp_path / "other.json"
    other.write_text(json.dumps([{"image_id": "ID_elsewhere", "category_id": 3, "score": 0.9,
                                  "segmentation": _rle(np.ones((542, 677), bool))}]))
    code, err = _cli(monkeypatch, capsys, "refine", str(root), "-p", str(root / "submission_in.csv"), "--masks",
                     str(other), "--out", str(tmp_path / "o6"), "-w", "1", "-q")
    assert code == 2 and "other.json: no mask for any of the run's 3 images" in err and "ID_elsewhere" in err


def test_a_forced_mesh_is_used_for_every_car(detector_output, tmp_path):
    root, shuffled, _, _ = detector_output
    first = list(shuffled)[0]
    model = DataFolder(root).model_ids()[0]
    config = RefineConfig(threads=1, model=model, masks_file=str(root / "results.json"),
                          coco_images=str(root / "instances.json"), **FAST)
    summary = run_refine(RunOptions(data=root, predictions=root / "submission_in.csv", out=tmp_path / "o",
                                    config=config, workers=1, progress=False, format="submission",
                                    images=[first]), log=lambda _m: None)
    assert summary.exit_code == 0
    assert {c.model_type for c in read_poses(tmp_path / "o" / "refined.csv")[first]} == {model}

