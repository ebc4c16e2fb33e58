"""Instance masks: one label image per picture, or a COCO JSON file with run-length masks.

Label image (`masks/<ImageId>.png`, 8 or 16 bit): value k (1-based) is the k-th car of that image's
row in the poses file, 0 is background.

COCO JSON accepted by `read_coco_masks` / written by `write_coco_masks`:

    {"images": [{"id": 7, "file_name": "ID_0a1b2c.jpg", "width": 3384, "height": 2710}, ...],
     "annotations": [{"image_id": 7, "car_index": 1,
                      "segmentation": {"size": [2710, 3384], "counts": "..."}}, ...]}

The ImageId is `file_name` without folder and extension. `segmentation` is a run-length dict
(compressed string or uncompressed list `counts`, as pycocotools) or a list of polygons. `car_index`
(1-based) is the car's position in the poses row; without it the annotations of an image are numbered
1, 2, ... in file order. Where masks overlap, the annotation listed later wins. Images without
annotations give all-zero label images.

Unordered instance masks, as an instance segmenter writes them (`read_coco_instances`): the COCO
dataset format above without `car_index`, or the results format, a bare list of
`{"image_id", "segmentation", "score", ...}` whose integer `image_id`s refer to the `images` of
another COCO file (`images_path`; string `image_id`s are taken as ImageIds). They carry no car
index: `nmrlight.refine.associate` pairs them with the predicted cars. Bad entries are skipped with a
warning naming the file and the entry; a file that is not such JSON at all raises.
"""

from __future__ import annotations

import json
import math
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path, PurePath

import numpy as np
from PIL import Image, UnidentifiedImageError

from nmrlight.errors import NmrlightError
from nmrlight.io.jsonfile import read_json


def read_label_mask(path: str | Path, shape: tuple[int, int] | None = None) -> np.ndarray:
    """Read an 8- or 16-bit label PNG as int32 (H, W); with `shape` (H, W), check the size."""
    path = Path(path)
    if not path.is_file():
        raise NmrlightError(f"mask {path}: file not found")
    try:
        with Image.open(path) as image:
            if image.mode not in ("L", "P", "I", "I;16", "I;16B", "I;16L", "1"):
                raise NmrlightError(f"mask {path}: a label image must be single channel 8 or 16 bit, "
                                    f"got mode {image.mode}")
            labels = np.asarray(image).astype(np.int32)
    except (UnidentifiedImageError, OSError) as exc:
        raise NmrlightError(f"mask {path}: cannot read ({exc})") from None
    if labels.min(initial=0) < 0:
        raise NmrlightError(f"mask {path}: negative labels")
    _check_shape(labels, shape, f"mask {path}")
    return labels


def _check_shape(labels: np.ndarray, shape: tuple[int, int] | None, where: str) -> None:
    if shape is not None and tuple(labels.shape) != tuple(int(s) for s in shape):
        raise NmrlightError(f"{where}: size {labels.shape[1]}x{labels.shape[0]} (WxH) differs from the "
                            f"image size {int(shape[1])}x{int(shape[0])}")


def write_label_mask(path: str | Path, labels: np.ndarray) -> None:
    """Write a label image as PNG: 8 bit when all labels are below 256, else 16 bit."""
    labels = np.asarray(labels)
    if labels.ndim != 2:
        raise NmrlightError(f"mask {path}: labels must be (H, W), got shape {labels.shape}")
    if labels.size and (labels.min() < 0 or labels.max() > 65535):
        raise NmrlightError(f"mask {path}: labels must lie in 0..65535")
    if labels.size and not np.issubdtype(labels.dtype, np.integer) and (labels != np.round(labels)).any():
        raise NmrlightError(f"mask {path}: labels must be integers")
    dtype = np.uint8 if labels.max(initial=0) < 256 else np.uint16
    Image.fromarray(labels.astype(dtype)).save(Path(path), format="PNG")


def _decode(segmentation, height: int, width: int, where: str) -> np.ndarray:
    from pycocotools import mask as mask_utils

    try:
        if isinstance(segmentation, list):  # polygons
            rles = mask_utils.frPyObjects(segmentation, height, width)
            rle = mask_utils.merge(rles)
        elif isinstance(segmentation, dict) and "counts" in segmentation and "size" in segmentation:
            if list(segmentation["size"]) != [height, width]:
                raise NmrlightError(f"{where}: segmentation size {segmentation['size']} differs from the "
                                    f"image size [{height}, {width}] (height, width)")
            rle = segmentation
            if isinstance(rle["counts"], list):
                rle = mask_utils.frPyObjects(rle, height, width)
            elif isinstance(rle["counts"], str):
                rle = {"size": rle["size"], "counts": rle["counts"].encode("ascii")}
        else:
            raise NmrlightError(f"{where}: segmentation must be a run-length dict or a list of polygons")
        with warnings.catch_warnings():  # pycocotools' numpy-2 copy= deprecation, harmless
            warnings.simplefilter("ignore", DeprecationWarning)
            return mask_utils.decode(rle).astype(bool)
    except NmrlightError:
        raise
    except Exception as exc:  # pycocotools raises bare Exceptions / TypeErrors
        raise NmrlightError(f"{where}: cannot decode segmentation ({exc})") from None


def read_coco_masks(path: str | Path) -> dict[str, np.ndarray]:
    """Read a COCO JSON (layout in the module docstring) into {ImageId: int32 label image}."""
    path = Path(path)
    data = read_json(path, "COCO masks")
    if not isinstance(data, dict) or not isinstance(data.get("images"), list):
        raise NmrlightError(f"COCO masks {path}: missing 'images' list")
    annotations = data.get("annotations", [])
    if not isinstance(annotations, list):
        raise NmrlightError(f"COCO masks {path}: 'annotations' must be a list")
    labels: dict[str, np.ndarray] = {}
    by_id: dict[object, str] = {}
    for k, image in enumerate(data["images"]):
        try:
            key, name = image["id"], image["file_name"]
            height, width = int(image["height"]), int(image["width"])
        except (KeyError, TypeError, ValueError):
            raise NmrlightError(f"COCO masks {path}: images[{k}] needs id, file_name, width and height"
                                ) from None
        image_id = PurePath(str(name)).stem
        if image_id in labels:
            raise NmrlightError(f"COCO masks {path}: ImageId {image_id} listed twice")
        by_id[key] = image_id
        labels[image_id] = np.zeros((height, width), dtype=np.int32)
    counters: dict[str, int] = {}
    for k, ann in enumerate(annotations):
        where = f"COCO masks {path}, annotations[{k}]"
        if not isinstance(ann, dict) or "image_id" not in ann or "segmentation" not in ann:
            raise NmrlightError(f"{where}: needs image_id and segmentation")
        if ann["image_id"] not in by_id:
            raise NmrlightError(f"{where}: image_id {ann['image_id']!r} not in 'images'")
        image_id = by_id[ann["image_id"]]
        counters[image_id] = counters.get(image_id, 0) + 1
        index = ann.get("car_index", counters[image_id])
        if isinstance(index, bool) or not isinstance(index, int) or index < 1:
            raise NmrlightError(f"{where}: car_index must be a positive integer, got {index!r}")
        target = labels[image_id]
        mask = _decode(ann["segmentation"], target.shape[0], target.shape[1], where)
        target[mask] = index
    return labels


def write_coco_masks(path: str | Path, labels_by_image: Mapping[str, np.ndarray]) -> None:
    """Write label images as a COCO JSON with compressed run-length masks and a `car_index` each."""
    from pycocotools import mask as mask_utils

    images, annotations = [], []
    for number, (image_id, labels) in enumerate(labels_by_image.items(), start=1):
        labels = np.asarray(labels)
        if labels.ndim != 2:
            raise NmrlightError(f"COCO masks {path}: labels of {image_id} must be (H, W), got {labels.shape}")
        height, width = labels.shape
        images.append({"id": number, "file_name": f"{image_id}.jpg",
                       "width": int(width), "height": int(height)})
        for index in np.unique(labels):
            if index <= 0:
                continue
            binary = np.asfortranarray((labels == index).astype(np.uint8))
            rle = mask_utils.encode(binary)
            annotations.append({
                "id": len(annotations) + 1, "image_id": number, "category_id": 1, "iscrowd": 0,
                "car_index": int(index), "area": int(mask_utils.area(rle)),
                "bbox": [float(v) for v in mask_utils.toBbox(rle)],
                "segmentation": {"size": [int(height), int(width)], "counts": rle["counts"].decode("ascii")},
            })
    data = {"images": images, "annotations": annotations, "categories": [{"id": 1, "name": "car"}]}
    Path(path).write_text(json.dumps(data))


# --- unordered instance masks (a segmenter's COCO output) ---------------------------------------------
POLYGON_TOLERANCE = 2.0   # polygon vertices may lie this many pixels outside the image (segmenters round)


@dataclass
class Instance:
    """One mask of a segmenter's file, not decoded yet."""

    entry: int                 # position in the file's annotation list
    segmentation: object
    score: float = 1.0
    ann_id: object = None      # the annotation's own "id", when it has one
    car_index: int | None = None  # 1-based position in the poses row, when the file says so
    where: str = ""            # "<file>, annotations[k]" for messages


@dataclass
class CocoInstances:
    """A segmenter's masks indexed by ImageId, with the warnings of the entries left out."""

    path: Path
    sizes: dict[str, tuple[int, int] | None] = field(default_factory=dict)  # ImageId -> (H, W) if known
    instances: dict[str, list[Instance]] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)

    ordered: bool = False   # every mask names its car (`car_index`): no association needed


def _image_table(images, path: Path) -> tuple[dict[object, str], dict[str, tuple[int, int] | None]]:
    if not isinstance(images, list):
        raise NmrlightError(f"COCO masks {path}: 'images' must be a list")
    by_id: dict[object, str] = {}
    sizes: dict[str, tuple[int, int] | None] = {}
    for k, image in enumerate(images):
        if not isinstance(image, dict) or "id" not in image or "file_name" not in image:
            raise NmrlightError(f"COCO masks {path}: images[{k}] needs id and file_name")
        image_id = PurePath(str(image["file_name"])).stem
        if image["id"] in by_id:
            raise NmrlightError(f"COCO masks {path}: images[{k}]: id {image['id']!r} listed twice")
        try:
            size = (int(image["height"]), int(image["width"])) if "height" in image and "width" in image else None
        except (TypeError, ValueError):
            raise NmrlightError(f"COCO masks {path}: images[{k}]: width and height must be integers") from None
        by_id[image["id"]] = image_id
        sizes[image_id] = size
    return by_id, sizes


def read_coco_instances(path: str | Path, images_path: str | Path | None = None) -> CocoInstances:
    """Read a segmenter's COCO masks (dataset or results format, see the module docstring), undecoded.

    Raises NmrlightError for a file that is not COCO JSON; skips bad entries (no image_id or
    segmentation, an image_id with no image, a score that is not a number) with a warning each.
    """
    path = Path(path)
    data = read_json(path, "COCO masks")
    by_id: dict[object, str] = {}
    sizes: dict[str, tuple[int, int] | None] = {}
    if isinstance(data, dict):
        if not isinstance(data.get("annotations"), list):
            raise NmrlightError(f"COCO masks {path}: a COCO dataset file needs an 'annotations' list (or give "
                                "the results format: a list of {image_id, segmentation, score})")
        by_id, sizes = _image_table(data.get("images", []), path)
        annotations = data["annotations"]
    elif isinstance(data, list):
        annotations = data
    else:
        raise NmrlightError(f"COCO masks {path}: expected a COCO dataset object or a results list")
    if images_path is not None:
        images = read_json(Path(images_path), "COCO images")
        if not isinstance(images, dict) or "images" not in images:
            raise NmrlightError(f"COCO images {images_path}: needs an 'images' list")
        more_ids, more_sizes = _image_table(images["images"], Path(images_path))
        by_id.update(more_ids)
        sizes.update(more_sizes)
    result = CocoInstances(path, sizes)
    for name in sizes:
        result.instances.setdefault(name, [])
    for k, ann in enumerate(annotations):
        where = f"COCO masks {path}, annotations[{k}]" if isinstance(data, dict) else f"COCO masks {path}, entry {k}"
        if not isinstance(ann, dict) or "image_id" not in ann or "segmentation" not in ann:
            result.warnings.append(f"{where}: needs image_id and segmentation; skipped")
            continue
        key = ann["image_id"]
        if key in by_id:
            image_id = by_id[key]
        elif isinstance(key, str) and not by_id:
            image_id = PurePath(key).stem
        else:
            hint = "" if by_id or images_path else " (integer image_ids need the `images` list: give --coco-images)"
            result.warnings.append(f"{where}: image_id {key!r} is not in the images list{hint}; skipped")
            continue
        score = ann.get("score", 1.0)
        if isinstance(score, bool) or not isinstance(score, (int, float)) or not math.isfinite(score):
            result.warnings.append(f"{where}: score {score!r} is not a number; skipped")
            continue
        index = ann.get("car_index")
        if index is not None and (isinstance(index, bool) or not isinstance(index, int) or index < 1):
            result.warnings.append(f"{where}: car_index must be a positive integer, got {index!r}; skipped")
            continue
        size = sizes.get(image_id)
        problem = segmentation_problem(ann["segmentation"], size)
        if problem:
            result.warnings.append(f"{where}: {problem}; skipped")
            continue
        result.instances.setdefault(image_id, []).append(
            Instance(k, ann["segmentation"], float(score), ann.get("id"), index, where))
    masks = [m for ms in result.instances.values() for m in ms]
    result.ordered = bool(masks) and all(m.car_index is not None for m in masks)
    return result


def segmentation_problem(segmentation, size: tuple[int, int] | None) -> str | None:
    """Why a segmentation cannot be decoded on an image of `size` (H, W), or None when it can."""
    if isinstance(segmentation, dict):
        if "counts" not in segmentation or "size" not in segmentation:
            return "a run-length segmentation needs size and counts"
        rle_size = segmentation["size"]
        if not isinstance(rle_size, list) or len(rle_size) != 2 or not all(isinstance(v, int) for v in rle_size):
            return f"segmentation size {rle_size!r} is not [height, width]"
        if size is not None and list(rle_size) != list(size):
            return (f"segmentation size {rle_size} differs from the image size [{size[0]}, {size[1]}] "
                    "(height, width)")
        if not isinstance(segmentation["counts"], (str, list)):
            return "segmentation counts must be a string or a list"
        return None
    if isinstance(segmentation, list):
        if not segmentation:
            return "empty polygon list"
        for polygon in segmentation:
            if (not isinstance(polygon, list) or len(polygon) < 6 or len(polygon) % 2
                    or not all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
                               for v in polygon)):
                return "a polygon must be a list of at least 3 finite x, y pairs"
            if size is not None:
                xs, ys = polygon[0::2], polygon[1::2]
                t = POLYGON_TOLERANCE
                if min(xs) < -t or min(ys) < -t or max(xs) > size[1] + t or max(ys) > size[0] + t:
                    return (f"polygon out of range: x in [{min(xs):g}, {max(xs):g}], y in [{min(ys):g}, "
                            f"{max(ys):g}] for an image of {size[1]}x{size[0]} (WxH)")
        return None
    return "segmentation must be a run-length dict or a list of polygons"


def decode_instances(instances: list[Instance], height: int, width: int
                     ) -> tuple[list[tuple[Instance, np.ndarray]], list[str]]:
    """Decode one image's masks at its size (H, W): [(instance, bool mask)], warnings of those skipped."""
    decoded, problems = [], []
    for instance in instances:
        problem = segmentation_problem(instance.segmentation, (height, width))
        if problem is None:
            try:
                decoded.append((instance, _decode(instance.segmentation, height, width, instance.where)))
                continue
            except NmrlightError as exc:
                problems.append(f"{exc}; skipped")
                continue
        problems.append(f"{instance.where}: {problem}; skipped")
    return decoded, problems
