"""Readers and writers on valid and broken files; the evaluate command's exit status on bad input."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from nmrlight.camera import Camera
from nmrlight.errors import NmrlightError
from nmrlight.io.camera_file import read_intrinsics, write_intrinsics
from nmrlight.io.cars import (
    CAR_NAMES,
    CarMesh,
    car_class,
    car_id,
    car_name,
    read_car_json,
    read_mesh,
    write_car_json,
)
from nmrlight.io.dataset import DataFolder
from nmrlight.io.images import read_image, write_image
from nmrlight.io.masks import read_coco_masks, read_label_mask, write_coco_masks, write_label_mask
from nmrlight.io.poses import CarPose, read_poses, read_poses_lenient, write_poses, write_submission

_SCRIPT = Path(sys.executable).with_name("nmrlight")
NMRLIGHT = [str(_SCRIPT)] if _SCRIPT.is_file() else [sys.executable, "-m", "nmrlight.cli"]

TRI = CarMesh("tri", np.array([[0.0, 0.0, 0.0], [1.0, 0.5, 0.0], [0.0, 1.0, 2.0], [1.0, 1.0, 1.0]]),
              np.array([[0, 1, 2], [1, 3, 2]]), "2x")


# --- cars -------------------------------------------------------------------------------------------
def test_car_table():
    assert len(CAR_NAMES) == 79 and len(set(CAR_NAMES)) == 79
    assert car_name(0) == "baojun-310-2017" and car_name(50) == "baoma-X5"
    assert car_name(78) == "dongfeng-fengxing-SX6"
    assert car_id("aodi-a6") == 17 and car_id("Skoda_Fabia-2011") == 67
    assert [car_class(i) for i in (0, 14, 15, 44, 45, 78)] == ["2x", "2x", "3x", "3x", "SUV", "SUV"]
    for bad in (-1, 79):
        with pytest.raises(NmrlightError, match="unknown car model_type"):
            car_name(bad)
    with pytest.raises(NmrlightError):
        car_id("tesla")


def test_read_real_mesh(apollo_models):
    mesh = read_car_json(apollo_models / "baojun-310-2017.json")
    raw = json.loads((apollo_models / "baojun-310-2017.json").read_text())
    assert mesh.name == "baojun-310-2017" and mesh.car_type == "2x"
    assert mesh.vertices.dtype == np.float64 and mesh.faces.dtype == np.int64
    np.testing.assert_array_equal(mesh.vertices, np.array(raw["vertices"]))
    np.testing.assert_array_equal(mesh.faces, np.array(raw["faces"]) - 1)
    assert mesh.faces.min() == 0 and mesh.faces.max() == len(mesh.vertices) - 1
    assert 4000 < len(mesh.faces) <= 5000
    ov = mesh.object_vertices()
    np.testing.assert_array_equal(ov[:, 1], -mesh.vertices[:, 1])
    assert mesh.vertices[0, 1] != -mesh.vertices[0, 1]  # the original is untouched


def test_car_json_round_trip_and_generic_mesh(tmp_path):
    write_car_json(TRI, tmp_path / "tri.json")
    raw = json.loads((tmp_path / "tri.json").read_text())
    assert raw["faces"] == [[1, 2, 3], [2, 4, 3]]
    back = read_mesh(tmp_path / "tri.json")
    np.testing.assert_array_equal(back.vertices, TRI.vertices)
    np.testing.assert_array_equal(back.faces, TRI.faces)
    obj = tmp_path / "tri.obj"
    obj.write_text("v 0 0 0\nv 1 0.5 0\nv 0 1 2\nv 1 1 1\nf 1 2 3\nf 2 4 3\n")
    mesh = read_mesh(obj)
    np.testing.assert_allclose(mesh.vertices, TRI.vertices)
    np.testing.assert_array_equal(mesh.faces, TRI.faces)
    with pytest.raises(NmrlightError, match="tri.ply"):
        read_mesh(tmp_path / "tri.ply")


@pytest.mark.parametrize("content, problem", [
    ('{"vertices": [[0, 0, 0]], "faces": [[1, 1, 1]]', "invalid JSON"),
    ('{"vertices": [[0, 0, 0]]}', "missing key 'faces'"),
    ('{"vertices": [[0, 0]], "faces": [[1, 1, 1]]}', "vertices must be"),
    ('{"vertices": [[0, 0, NaN]], "faces": [[1, 1, 1]]}', "non-finite"),
    ('{"vertices": [[0, 0, 0], [1, 0, 0], [0, 1, 0]], "faces": [[1, 2, 4]]}', "face index out of range"),
    ('{"vertices": [[0, 0, 0], [1, 0, 0], [0, 1, 0]], "faces": [[0, 1, 2]]}', "face index out of range"),
    ('{"vertices": [[0, 0, 0], [1, 0, 0], [0, 1, 0]], "faces": [[1, 2]]}', "faces must be"),
    ('{"vertices": [["a", 0, 0]], "faces": [[1, 1, 1]]}', "vertices"),
])
def test_broken_car_json(tmp_path, content, problem):
    path = tmp_path / "broken-car.json"
    path.write_text(content)
    with pytest.raises(NmrlightError, match=problem) as info:
        read_car_json(path)
    assert str(path) in str(info.value)


# --- camera -----------------------------------------------------------------------------------------
KAGGLE_TXT = "fx = 2304.5479;\nfy = 2305.8757;\ncx = 1686.2379;\ncy = 1354.9849;\nk1 = 0\n"


def test_read_intrinsics(tmp_path):
    path = tmp_path / "camera_intrinsic.txt"
    path.write_text(KAGGLE_TXT)
    cam = read_intrinsics(path)
    ref = Camera.kaggle()
    assert (cam.width, cam.height) == (3384, 2710) and cam.dist_coeffs is None
    assert np.array_equal(cam.K.numpy(), ref.K.numpy())
    path.write_text("# comment\nfx=10\nfy = 20 ;\ncx = 5;\ncy = 6\nk1 = 0.1;\n")
    cam = read_intrinsics(path, width=64, height=48)
    assert (cam.fx, cam.fy, cam.cx, cam.cy, cam.width) == (10, 20, 5, 6, 64)
    assert cam.dist_coeffs is not None and cam.dist_coeffs[0].item() == pytest.approx(0.1)
    write_intrinsics(Camera.kaggle(), tmp_path / "out.txt")
    assert "fx = 2304.5479;" in (tmp_path / "out.txt").read_text()
    assert np.array_equal(read_intrinsics(tmp_path / "out.txt").K.numpy(), ref.K.numpy())


def test_broken_intrinsics(tmp_path):
    path = tmp_path / "camera_intrinsic.txt"
    path.write_text("fx = 2304.5479;\nfy = 2305.8757;\ncx = 1686.2379;\n")
    with pytest.raises(NmrlightError, match="missing field 'cy'") as info:
        read_intrinsics(path)
    assert str(path) in str(info.value)
    path.write_text(KAGGLE_TXT.replace("2304.5479", "abc"))
    with pytest.raises(NmrlightError, match="line 1: fx"):
        read_intrinsics(path)
    with pytest.raises(NmrlightError, match="not found"):
        read_intrinsics(tmp_path / "nope.txt")


# --- poses ------------------------------------------------------------------------------------------
POSES = {
    "ID_b": [CarPose(5, (0.15, -2.0, -3.1), (-3.0, 6.0, 12.0), 0.9),
             CarPose(78, (0.1 + 0.2, 3.141592653589793, 3.0), (1e-05, 7.5, 123.456789012345), 0.25)],
    "ID_a": [],
    "ID_c": [CarPose(0, (0.0, 0.0, 0.0), (0.0, 1.0, 2.0), 1.0)],
}


def test_poses_round_trip_exact(tmp_path):
    path = tmp_path / "poses.csv"
    write_poses(path, POSES)
    assert path.read_text().splitlines()[0] == "ImageId,PredictionString,Confidence"
    back = read_poses(path)
    assert list(back) == ["ID_b", "ID_a", "ID_c"]  # file order
    assert back == POSES  # exact floats
    write_poses(path, POSES, confidence=False)
    back = read_poses(path)
    assert [c.confidence for c in back["ID_b"]] == [1.0, 1.0]
    assert back["ID_b"][1].translation == POSES["ID_b"][1].translation


def test_read_kaggle_train_rows(tmp_path):
    path = tmp_path / "train.csv"
    path.write_text("ImageId,PredictionString\nID_1,16 0.254839 -2.57534 -3.10256 7.96539 3.20066 11.0225 "
                    "56 0.181647 -1.46947 -3.12159 9.60332 4.66632 19.339\nID_2,\n")
    poses = read_poses(path)
    assert len(poses["ID_1"]) == 2 and poses["ID_2"] == []
    assert poses["ID_1"][1] == CarPose(56, (0.181647, -1.46947, -3.12159), (9.60332, 4.66632, 19.339), 1.0)


def test_submission_round_trip(tmp_path):
    path = tmp_path / "sub.csv"
    write_submission(path, POSES)
    lines = path.read_text().splitlines()
    assert lines[0] == "ImageId,PredictionString"
    assert lines[1].split(",")[1].split()[:7] == ["0.15", "-2.0", "-3.1", "-3.0", "6.0", "12.0", "0.9"]
    back = read_poses(path, submission=True)
    assert back["ID_b"][1].model_type == -1 and back["ID_b"][1].confidence == 0.25
    assert back["ID_b"][1].rotation == POSES["ID_b"][1].rotation
    with pytest.raises(NmrlightError, match="car pose|not in 0..78"):
        write_poses(tmp_path / "x.csv", back)


@pytest.mark.parametrize("row, problem", [
    ("ID_x,1 2 3 4 5 6", "line 3, ImageId ID_x: PredictionString holds 6 numbers, not a multiple of 7"),
    ("ID_x,79 0 0 0 1 2 3", "line 3, ImageId ID_x: car 1: model_type 79 is not an integer in 0..78"),
    ("ID_x,2.5 0 0 0 1 2 3", "model_type 2.5"),
    ("ID_x,1 0 zero 0 1 2 3", "'zero' is not a number"),
    ("ID_x,1 0 nan 0 1 2 3", "not finite"),
    ("ID_x,1 0 0 0 1 2 3,0.5 0.5", "Confidence holds 2 scores for 1 cars"),
    ("ID_ok,1 0 0 0 1 2 3", "duplicate ImageId \\(first on line 2\\)"),
])
def test_broken_pose_rows(tmp_path, row, problem):
    path = tmp_path / "preds.csv"
    path.write_text(f"ImageId,PredictionString,Confidence\nID_ok,1 0 0 0 1 2 3,0.5\n{row}\n")
    with pytest.raises(NmrlightError, match=problem) as info:
        read_poses(path)
    assert str(path) in str(info.value)
    poses, errors = read_poses_lenient(path)
    assert list(poses) == ["ID_ok"] and poses["ID_ok"][0].confidence == 0.5
    assert list(errors) == [row.split(",")[0]] and str(path) in errors[row.split(",")[0]]


def test_broken_pose_header_and_missing_file(tmp_path):
    path = tmp_path / "p.csv"
    path.write_text("id,string\nA,\n")
    with pytest.raises(NmrlightError, match="header must name ImageId"):
        read_poses(path)
    with pytest.raises(NmrlightError, match="not found"):
        read_poses(tmp_path / "none.csv")


# --- masks ------------------------------------------------------------------------------------------
def test_label_masks(tmp_path):
    labels = np.zeros((20, 30), dtype=np.int32)
    labels[2:5, 3:9] = 1
    labels[10:15, 20:28] = 3
    write_label_mask(tmp_path / "m8.png", labels)
    assert Image.open(tmp_path / "m8.png").mode == "L"
    back = read_label_mask(tmp_path / "m8.png", shape=(20, 30))
    assert back.dtype == np.int32 and np.array_equal(back, labels)
    labels[0, 0] = 300
    write_label_mask(tmp_path / "m16.png", labels)
    assert Image.open(tmp_path / "m16.png").mode.startswith("I")
    assert np.array_equal(read_label_mask(tmp_path / "m16.png"), labels)
    with pytest.raises(NmrlightError, match=r"m8.png: size 30x20 \(WxH\) differs from the image size 40x20"):
        read_label_mask(tmp_path / "m8.png", shape=(20, 40))
    Image.new("RGB", (4, 4)).save(tmp_path / "rgb.png")
    with pytest.raises(NmrlightError, match="single channel"):
        read_label_mask(tmp_path / "rgb.png")
    with pytest.raises(NmrlightError, match="missing.png"):
        read_label_mask(tmp_path / "missing.png")


def test_coco_masks_round_trip_and_layout(tmp_path):
    a = np.zeros((20, 30), dtype=np.int32)
    a[2:5, 3:9] = 2
    a[10:15, 20:28] = 1
    b = np.zeros((8, 8), dtype=np.int32)
    write_coco_masks(tmp_path / "masks.json", {"ID_a": a, "ID_b": b})
    back = read_coco_masks(tmp_path / "masks.json")
    assert list(back) == ["ID_a", "ID_b"]
    assert np.array_equal(back["ID_a"], a) and np.array_equal(back["ID_b"], b)
    # polygons, no car_index (annotation order), later annotation wins on overlap
    data = {"images": [{"id": 3, "file_name": "imgs/ID_p.jpg", "width": 10, "height": 10}],
            "annotations": [{"image_id": 3, "segmentation": [[0, 0, 6, 0, 6, 6, 0, 6]]},
                            {"image_id": 3, "segmentation": [[4, 4, 10, 4, 10, 10, 4, 10]]}]}
    (tmp_path / "p.json").write_text(json.dumps(data))
    labels = read_coco_masks(tmp_path / "p.json")["ID_p"]
    assert labels[1, 1] == 1 and labels[8, 8] == 2 and labels[5, 5] == 2 and labels[1, 8] == 0
    data["annotations"][0]["image_id"] = 99
    (tmp_path / "p.json").write_text(json.dumps(data))
    with pytest.raises(NmrlightError, match=r"p.json, annotations\[0\]: image_id 99"):
        read_coco_masks(tmp_path / "p.json")
    (tmp_path / "p.json").write_text("{")
    with pytest.raises(NmrlightError, match="invalid JSON"):
        read_coco_masks(tmp_path / "p.json")


# --- images -----------------------------------------------------------------------------------------
def test_images(tmp_path):
    rgb = np.random.default_rng(0).random((6, 5, 3)).astype(np.float32)
    write_image(tmp_path / "c.png", rgb)
    back = read_image(tmp_path / "c.png", mode="rgb")
    assert back.dtype == np.float32 and back.shape == (6, 5, 3)
    np.testing.assert_allclose(back, rgb, atol=0.5 / 255 + 1e-6)
    gray = read_image(tmp_path / "c.png")
    assert gray.shape == (6, 5) and 0 <= gray.min() and gray.max() <= 1
    write_image(tmp_path / "g.jpg", (rgb[..., 0] * 255).astype(np.uint8))
    assert read_image(tmp_path / "g.jpg").shape == (6, 5)
    with pytest.raises(NmrlightError, match="nope.jpg: file not found"):
        read_image(tmp_path / "nope.jpg")
    (tmp_path / "junk.png").write_bytes(b"not a png")
    with pytest.raises(NmrlightError, match="junk.png"):
        read_image(tmp_path / "junk.png")


# --- data folder ------------------------------------------------------------------------------------
def test_data_folder(tmp_path, apollo_models):
    folder = DataFolder.create(tmp_path / "data")
    assert folder.camera().width == 3384  # no images yet: the Kaggle size
    write_image(folder.root / "images" / "ID_2.png", np.zeros((40, 60)))
    write_image(folder.root / "images" / "ID_1.jpg", np.ones((40, 60, 3)))
    assert folder.image_ids() == ["ID_1", "ID_2"]
    assert folder.read_image("ID_1", mode="rgb").shape == (40, 60, 3)
    with pytest.raises(NmrlightError, match=r"image ID_9: .*images"):
        folder.image_path("ID_9")
    cam = folder.camera()
    assert (cam.width, cam.height) == (60, 40) and cam.fx == Camera.kaggle().fx
    (folder.root / "camera" / "camera_intrinsic.txt").write_text("fx=50\nfy=50\ncx=30\ncy=20\n")
    assert folder.camera().fx == 50 and folder.camera(width=120, height=80).width == 120
    labels = np.zeros((40, 60), dtype=np.int32)
    labels[5:10, 5:10] = 1
    write_label_mask(folder.root / "masks" / "ID_1.png", labels)
    assert folder.mask_path("ID_2") is None
    assert np.array_equal(folder.read_mask("ID_1", shape=(40, 60)), labels)
    with pytest.raises(NmrlightError, match="mask of image ID_2"):
        folder.read_mask("ID_2")
    write_coco_masks(folder.root / "masks.json", {"ID_2": labels * 2})
    assert folder.read_mask("ID_2").max() == 2
    with pytest.raises(NmrlightError, match="differs"):
        folder.read_mask("ID_2", shape=(10, 10))
    with pytest.raises(NmrlightError, match="baojun-310-2017.json not found"):
        folder.car(0)
    (folder.root / "car_models_json" / "baojun-310-2017.json").write_bytes(
        (apollo_models / "baojun-310-2017.json").read_bytes())
    assert folder.car(0) is folder.car(0) and folder.car(0).name == "baojun-310-2017"
    with pytest.raises(NmrlightError):
        DataFolder(tmp_path / "nowhere")
    with pytest.raises(NmrlightError, match="no images/"):
        DataFolder(tmp_path).image_ids()


# --- the evaluate command ---------------------------------------------------------------------------
def test_evaluate_cli(tmp_path):
    gt = tmp_path / "gt.csv"
    write_poses(gt, {"A": [CarPose(0, (0.15, 1.0, -3.1), (-3.0, 6.0, 12.0))]}, confidence=False)
    done = subprocess.run([*NMRLIGHT, "evaluate", "--gt", str(gt), "--pred", str(gt), "--json"],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["map"] == 1.0
    bad = tmp_path / "bad.csv"
    bad.write_text("ImageId,PredictionString\nA,0 1 2\n")
    done = subprocess.run([*NMRLIGHT, "evaluate", "--gt", str(gt), "--pred", str(bad)],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 2
    assert done.stderr.startswith("error: pose file") and str(bad) in done.stderr
    assert "Traceback" not in done.stderr
