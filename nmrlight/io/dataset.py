"""A data folder in the layout of the Kaggle data (shared/CONVENTIONS.md):

    root/images/ (or train_images/, test_images/)   <ImageId>.jpg | .png
    root/masks/<ImageId>.png                         label images (or root/masks.json, COCO)
    root/car_models_json/<name>.json                 car meshes
    root/camera/camera_intrinsic.txt                 optional; Kaggle intrinsics by default
    root/train_masks/, root/test_masks/              optional <ImageId>.jpg: regions to ignore
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from nmrlight.camera import KAGGLE_HEIGHT, KAGGLE_WIDTH, Camera
from nmrlight.errors import NmrlightError
from nmrlight.io.camera_file import read_intrinsics
from nmrlight.io.cars import CAR_NAMES, CarMesh, car_id, car_name, read_car_json
from nmrlight.io.images import open_image
from nmrlight.io.images import read_image as _read_image
from nmrlight.io.masks import read_coco_masks, read_label_mask

IMAGE_FOLDERS = ("images", "train_images", "test_images")
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".JPG", ".JPEG", ".PNG")
IGNORE_FOLDERS = ("train_masks", "test_masks")


class DataFolder:
    """Access to the images, masks, camera and car meshes of one data folder (read lazily, meshes cached)."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        if not self.root.is_dir():
            raise NmrlightError(f"data folder {self.root}: not a directory")
        self._cars: dict[int, CarMesh] = {}
        self._coco: dict[str, np.ndarray] | None = None

    @staticmethod
    def create(root: str | Path) -> DataFolder:
        """Make root with images/, masks/, car_models_json/ and camera/ (for writers) and open it."""
        root = Path(root)
        for name in ("images", "masks", "car_models_json", "camera"):
            (root / name).mkdir(parents=True, exist_ok=True)
        return DataFolder(root)

    # --- images ---------------------------------------------------------------------------------
    @property
    def images_dir(self) -> Path:
        """The first of images/, train_images/, test_images/ that exists."""
        for name in IMAGE_FOLDERS:
            if (self.root / name).is_dir():
                return self.root / name
        raise NmrlightError(f"data folder {self.root}: no images/, train_images/ or test_images/ folder")

    def image_ids(self) -> list[str]:
        """Sorted ImageIds of the images found."""
        folder = self.images_dir
        return sorted({p.stem for p in folder.iterdir() if p.is_file() and p.suffix in IMAGE_SUFFIXES})

    def image_path(self, image_id: str) -> Path:
        folder = self.images_dir
        for suffix in IMAGE_SUFFIXES:
            path = folder / f"{image_id}{suffix}"
            if path.is_file():
                return path
        raise NmrlightError(f"image {image_id}: no {image_id}.jpg or .png in {folder}")

    def read_image(self, image_id: str, mode: str = "gray") -> np.ndarray:
        return _read_image(self.image_path(image_id), mode)

    # --- masks ----------------------------------------------------------------------------------
    @property
    def coco_path(self) -> Path:
        return self.root / "masks.json"

    def mask_path(self, image_id: str) -> Path | None:
        """masks/<ImageId>.png when it exists, else None."""
        path = self.root / "masks" / f"{image_id}.png"
        return path if path.is_file() else None

    def read_mask(self, image_id: str, shape: tuple[int, int] | None = None) -> np.ndarray:
        """Label image of `image_id`: masks/<ImageId>.png, else the entry of masks.json (COCO)."""
        path = self.mask_path(image_id)
        if path is not None:
            return read_label_mask(path, shape)
        if self.coco_path.is_file():
            if self._coco is None:
                self._coco = read_coco_masks(self.coco_path)
            if image_id in self._coco:
                labels = self._coco[image_id]
                if shape is not None and tuple(labels.shape) != tuple(shape):
                    raise NmrlightError(f"COCO masks {self.coco_path}, image {image_id}: size "
                                        f"{labels.shape[1]}x{labels.shape[0]} (WxH) differs from the image "
                                        f"size {shape[1]}x{shape[0]}")
                return labels.copy()
        raise NmrlightError(f"mask of image {image_id}: no {self.root / 'masks' / (image_id + '.png')}"
                            f"{' and not in ' + str(self.coco_path) if self.coco_path.is_file() else ''}")

    def ignore_path(self, image_id: str) -> Path | None:
        """train_masks/ or test_masks/<ImageId>.jpg (or .png) when it exists, else None."""
        for folder in IGNORE_FOLDERS:
            for suffix in IMAGE_SUFFIXES:
                path = self.root / folder / f"{image_id}{suffix}"
                if path.is_file():
                    return path
        return None

    def read_ignore(self, image_id: str, shape: tuple[int, int] | None = None) -> np.ndarray | None:
        """The competition's ignore mask of `image_id` (bool, True = don't care), None when there is none.

        Those JPEGs mark cars that are not annotated (too far or too occluded); gray level > 127 counts
        (JPEG blurs the edges).
        """
        path = self.ignore_path(image_id)
        if path is None:
            return None
        gray = _read_image(path, "gray")
        if shape is not None and tuple(gray.shape) != tuple(shape):
            raise NmrlightError(f"ignore mask {path}: size {gray.shape[1]}x{gray.shape[0]} (WxH) differs from "
                                f"the image size {shape[1]}x{shape[0]}")
        return gray > 0.5

    # --- camera and cars ------------------------------------------------------------------------
    def image_size(self) -> tuple[int, int] | None:
        """(width, height) of the first image found, None without images."""
        try:
            ids = self.image_ids()
        except NmrlightError:
            return None
        if not ids:
            return None
        with open_image(self.image_path(ids[0])) as image:
            return image.size

    def camera(self, width: int | None = None, height: int | None = None) -> Camera:
        """camera/camera_intrinsic.txt when present, else the Kaggle camera; size of the images found."""
        if width is None or height is None:
            size = self.image_size() or (KAGGLE_WIDTH, KAGGLE_HEIGHT)
            width = size[0] if width is None else width
            height = size[1] if height is None else height
        path = self.root / "camera" / "camera_intrinsic.txt"
        if path.is_file():
            return read_intrinsics(path, width, height)
        camera = Camera.kaggle()
        if (width, height) == (camera.width, camera.height):
            return camera
        return Camera(camera.K, int(width), int(height))

    def car_path(self, model_type: int) -> Path:
        return self.root / "car_models_json" / f"{car_name(model_type)}.json"

    def car(self, model_type: int) -> CarMesh:
        """Mesh of car model `model_type` from car_models_json/<name>.json (cached)."""
        key = int(model_type)
        if key not in self._cars:
            path = self.car_path(key)
            if not path.is_file():
                raise NmrlightError(f"car model {key}: mesh file {path} not found")
            self._cars[key] = read_car_json(path)
        return self._cars[key]

    def model_ids(self) -> list[int]:
        """Model ids of the meshes in car_models_json/ (files named after the 79 ApolloCar3D models)."""
        folder = self.root / "car_models_json"
        if not folder.is_dir():
            raise NmrlightError(f"data folder {self.root}: no car_models_json/ folder")
        names = set(CAR_NAMES)
        ids = sorted(car_id(p.stem) for p in folder.glob("*.json") if p.stem in names)
        if not ids:
            raise NmrlightError(f"{folder}: no mesh named after an ApolloCar3D model (e.g. aodi-a6.json)")
        return ids
