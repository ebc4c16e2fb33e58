"""The 79 ApolloCar3D car models: id <-> name table and the `car_models_json` mesh format.

A mesh file is `{"car_type": ..., "vertices": [[x, y, z], ...], "faces": [[i, j, k], ...]}` with
1-indexed faces, metres, model frame y up. In memory faces are 0-indexed; `object_vertices()` applies
the y flip that the Kaggle projection expects (see shared/CONVENTIONS.md).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from nmrlight.errors import NmrlightError
from nmrlight.io.jsonfile import read_json

CAR_NAMES: tuple[str, ...] = (
    "baojun-310-2017", "biaozhi-3008", "biaozhi-liangxiang", "bieke-yinglang-XT", "biyadi-2x-F0",
    "changanbenben", "dongfeng-DS5", "feiyate", "fengtian-liangxiang", "fengtian-MPV",
    "jilixiongmao-2015", "lingmu-aotuo-2009", "lingmu-swift", "lingmu-SX4-2012", "sikeda-jingrui",
    "fengtian-weichi-2006", "037-CAR02", "aodi-a6", "baoma-330", "baoma-530", "baoshijie-paoche",
    "bentian-fengfan", "biaozhi-408", "biaozhi-508", "bieke-kaiyue", "fute", "haima-3",
    "kaidilake-CTS", "leikesasi", "mazida-6-2015", "MG-GT-2015", "oubao", "qiya", "rongwei-750",
    "supai-2016", "xiandai-suonata", "yiqi-benteng-b50", "bieke", "biyadi-F3", "biyadi-qin",
    "dazhong", "dazhongmaiteng", "dihao-EV", "dongfeng-xuetielong-C6", "dongnan-V3-lingyue-2011",
    "dongfeng-yulong-naruijie", "019-SUV", "036-CAR01", "aodi-Q7-SUV", "baojun-510", "baoma-X5",
    "baoshijie-kayan", "beiqi-huansu-H3", "benchi-GLK-300", "benchi-ML500", "fengtian-puladuo-06",
    "fengtian-SUV-gai", "guangqi-chuanqi-GS4-2015", "jianghuai-ruifeng-S3", "jili-boyue", "jipu-3",
    "linken-SUV", "lufeng-X8", "qirui-ruihu", "rongwei-RX5", "sanling-oulande", "sikeda-SUV",
    "Skoda_Fabia-2011", "xiandai-i25-2016", "yingfeinidi-qx80", "yingfeinidi-SUV", "benchi-SUR",
    "biyadi-tang", "changan-CS35-2012", "changan-cs5", "changcheng-H6-2016", "dazhong-SUV",
    "dongfeng-fengguang-S560", "dongfeng-fengxing-SX6",
)
_IDS = {name: i for i, name in enumerate(CAR_NAMES)}


def _check_id(model_type: int) -> int:
    if isinstance(model_type, bool) or not isinstance(model_type, (int, np.integer)):
        raise NmrlightError(f"car model_type must be an integer 0..{len(CAR_NAMES) - 1}, got {model_type!r}")
    if not 0 <= int(model_type) < len(CAR_NAMES):
        raise NmrlightError(f"unknown car model_type {model_type}: ids run 0..{len(CAR_NAMES) - 1}")
    return int(model_type)


def car_name(model_type: int) -> str:
    """Name of car model `model_type` (0..78), e.g. 0 -> 'baojun-310-2017'."""
    return CAR_NAMES[_check_id(model_type)]


def car_id(name: str) -> int:
    """Inverse of `car_name`."""
    try:
        return _IDS[name]
    except KeyError:
        raise NmrlightError(f"unknown car model name {name!r}") from None


def car_class(model_type: int) -> str:
    """The data set's size class: '2x' (ids 0-14), '3x' (15-44) or 'SUV' (45-78)."""
    i = _check_id(model_type)
    return "2x" if i < 15 else "3x" if i < 45 else "SUV"


@dataclass
class CarMesh:
    """A car mesh: vertices (V, 3) float64 in the stored model frame (y up), faces (F, 3) int64 0-based."""

    name: str
    vertices: np.ndarray
    faces: np.ndarray
    car_type: str = ""

    def object_vertices(self) -> np.ndarray:
        """Vertices with y flipped, (x, -y, z): the frame the Kaggle rotation and translation apply to."""
        v = np.array(self.vertices, dtype=np.float64, copy=True)
        v[:, 1] *= -1.0
        return v


def _validate(vertices: np.ndarray, faces: np.ndarray, where: str) -> None:
    if vertices.ndim != 2 or vertices.shape[1] != 3 or len(vertices) == 0:
        raise NmrlightError(f"{where}: vertices must be a non-empty list of [x, y, z], got shape "
                            f"{vertices.shape}")
    if not np.isfinite(vertices).all():
        raise NmrlightError(f"{where}: vertices contain non-finite values")
    if faces.ndim != 2 or faces.shape[1] != 3 or len(faces) == 0:
        raise NmrlightError(f"{where}: faces must be a non-empty list of [i, j, k], got shape {faces.shape}")
    if faces.min() < 0 or faces.max() >= len(vertices):
        raise NmrlightError(f"{where}: face index out of range (valid 1..{len(vertices)} in the file, "
                            f"found {int(faces.min()) + 1}..{int(faces.max()) + 1})")


def read_car_json(path: str | Path) -> CarMesh:
    """Read an ApolloCar3D `car_models_json/<name>.json` mesh; faces become 0-based."""
    path = Path(path)
    data = read_json(path, "car mesh")
    if not isinstance(data, dict):
        raise NmrlightError(f"car mesh {path}: expected a JSON object with 'vertices' and 'faces'")
    for key in ("vertices", "faces"):
        if key not in data:
            raise NmrlightError(f"car mesh {path}: missing key '{key}'")
    try:
        vertices = np.asarray(data["vertices"], dtype=np.float64)
    except (TypeError, ValueError):
        raise NmrlightError(f"car mesh {path}: 'vertices' must be a list of [x, y, z] numbers") from None
    try:
        raw_faces = np.asarray(data["faces"], dtype=np.float64)
    except (TypeError, ValueError):
        raise NmrlightError(f"car mesh {path}: 'faces' must be a list of [i, j, k] integers") from None
    if raw_faces.size and (not np.isfinite(raw_faces).all() or (raw_faces != np.round(raw_faces)).any()):
        raise NmrlightError(f"car mesh {path}: face indices must be integers")
    faces = raw_faces.astype(np.int64) - 1
    _validate(vertices, faces, f"car mesh {path}")
    car_type = data.get("car_type", "")
    return CarMesh(name=path.stem, vertices=vertices, faces=faces, car_type=str(car_type))


def write_car_json(mesh: CarMesh, path: str | Path) -> None:
    """Write `mesh` in the ApolloCar3D JSON format (faces 1-indexed)."""
    vertices = np.asarray(mesh.vertices, dtype=np.float64)
    faces = np.asarray(mesh.faces, dtype=np.int64)
    _validate(vertices, faces, f"car mesh {mesh.name!r}")
    data = {"car_type": mesh.car_type, "vertices": vertices.tolist(), "faces": (faces + 1).tolist()}
    Path(path).write_text(json.dumps(data))


def read_mesh(path: str | Path) -> CarMesh:
    """Read a car mesh from ApolloCar3D JSON or any trimesh format (OBJ, PLY, GLB, STL...).

    Generic meshes are assumed to be in the ApolloCar3D model frame: metres, y up, car centred.
    """
    path = Path(path)
    if path.suffix.lower() == ".json":
        return read_car_json(path)
    if not path.is_file():
        raise NmrlightError(f"mesh {path}: file not found")
    import trimesh

    try:
        loaded = trimesh.load(str(path), force="mesh", process=False)
    except Exception as exc:  # trimesh raises many types on bad input
        raise NmrlightError(f"mesh {path}: cannot read ({type(exc).__name__}: {exc})") from None
    vertices = np.asarray(getattr(loaded, "vertices", np.zeros((0, 3))), dtype=np.float64)
    faces = np.asarray(getattr(loaded, "faces", np.zeros((0, 3))), dtype=np.int64)
    _validate(vertices, faces, f"mesh {path}")
    return CarMesh(name=path.stem, vertices=vertices, faces=faces)
