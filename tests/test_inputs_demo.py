"""`nmrlight demo` goes through the real detector-output path end to end: submission-format
predictions and the segmenter's COCO results masks in, association, mesh choice, a submission out."""

from __future__ import annotations

import sys

import pytest

from nmrlight.cli import main
from nmrlight.io.poses import read_poses


def test_the_demo_refines_from_the_submission_file_and_coco_masks(tmp_path, monkeypatch, capsys):
    out = tmp_path / "demo"
    monkeypatch.setattr(sys, "argv", ["nmrlight", "demo", "--out", str(out), "--images", "1", "--scale", "0.12",
                                      "--cars", "2", "--workers", "1", "--mesh-candidates", "1", "--seed", "3"])
    with pytest.raises(SystemExit) as info:
        main()
    printed = capsys.readouterr().out
    assert info.value.code in (0, None), printed
    assert "path: predictions_submission.csv (submission format" in printed and "results.json" in printed
    assert "association:" in printed and "predictions" in printed and "refined" in printed
    given = read_poses(out / "data" / "predictions_submission.csv", submission=True)
    written = read_poses(out / "refined" / "submission.csv", submission=True)
    refined = read_poses(out / "refined" / "refined.csv")
    assert given.keys() == written.keys() == refined.keys()
    for image_id, cars in given.items():
        assert len(written[image_id]) == len(refined[image_id]) == len(cars)
        for a, b in zip(written[image_id], refined[image_id], strict=True):   # the upload file is the refinement
            assert a.translation == pytest.approx(b.translation, abs=1e-3)
        assert all(c.model_type >= 0 for c in refined[image_id])          # a mesh was chosen for each car
