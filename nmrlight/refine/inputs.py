"""The inputs of a run: the predictions file (format, parsed rows, errors of unreadable rows, each row's
raw text) and the masks file, checked once before the images are handed out."""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

from nmrlight.errors import NmrlightError
from nmrlight.io.poses import CarPose, read_poses_lenient, resolve_format
from nmrlight.refine.config import RefineConfig


@dataclass
class RunInputs:
    order: list[str]                              # every ImageId of the file, first occurrence order
    poses: dict[str, list[CarPose]]               # readable rows
    errors: dict[str, str]                        # unreadable rows
    raw: dict[str, tuple[str, str | None]]        # ImageId -> (PredictionString, Confidence) as written
    format: str = "train"                         # "train" or "submission" (no model ids)
    format_reason: str = "given"                  # why (what `auto` decided from the file)


def read_inputs(path: Path, submission: bool = False, fmt: str | None = None) -> RunInputs:
    """The predictions file: parsed rows, the errors of bad rows, and each row's raw text (pass-through).

    fmt: "train", "submission" or "auto" (decided from the whole file); default from `submission`.
    """
    fmt, reason = resolve_format(path, fmt or ("submission" if submission else "train"))
    poses, errors = read_poses_lenient(path, submission=fmt == "submission")
    order: list[str] = []
    raw: dict[str, tuple[str, str | None]] = {}
    with Path(path).open(newline="") as handle:
        reader = csv.reader(handle)
        header = [h.strip().lstrip("\ufeff") for h in next(reader)]
        i_id, i_pred = header.index("ImageId"), header.index("PredictionString")
        i_conf = header.index("Confidence") if "Confidence" in header else None
        for row in reader:
            image_id = row[i_id].strip() if i_id < len(row) else ""
            if not image_id or image_id in raw:
                continue
            order.append(image_id)
            raw[image_id] = (row[i_pred] if i_pred < len(row) else "",
                             row[i_conf] if i_conf is not None and i_conf < len(row) else None)
    return RunInputs(order, poses, errors, raw, fmt, reason)


def select_images(order: list[str], images: list[str] | None, limit: int | None) -> list[str]:
    if images is not None and limit is not None:
        raise NmrlightError("give --images or --limit, not both")
    if images is not None:
        known = set(order)
        missing = [i for i in images if i not in known]
        if missing:
            raise NmrlightError(f"--images: not in the predictions file: {', '.join(missing[:5])}"
                                f"{' ...' if len(missing) > 5 else ''}")
        wanted = set(images)
        return [i for i in order if i in wanted]
    if limit is not None:
        if limit < 1:
            raise NmrlightError(f"--limit must be at least 1, got {limit}")
        return order[:limit]
    return list(order)


def check_masks(config: RefineConfig, image_ids: list[str]) -> list[str]:
    """Parse the run's COCO masks file (a bad file raises NmrlightError) and say what will be left out:
    entries that cannot be used, and images of the file that are not in the predictions.

    A file that gives no image of the run a single mask is an error, not a run that refines nothing:
    integer image_ids without --coco-images, or the masks of another data set."""
    if not config.masks_file:
        return []
    from nmrlight.refine.prepare import coco_instances

    coco = coco_instances(config)
    if image_ids and not any(coco.instances.get(i) for i in image_ids):
        why = (f"{len(coco.warnings)} entries skipped, the first: {coco.warnings[0]}" if coco.warnings else
               f"it holds masks of {len(coco.instances)} other images, e.g. {', '.join(list(coco.instances)[:3])}"
               if coco.instances else "it holds no entries")
        raise NmrlightError(f"masks {coco.path}: no mask for any of the run's {len(image_ids)} images "
                            f"(e.g. {', '.join(image_ids[:3])}); {why}")
    lines = [f"masks {coco.path}: {sum(len(v) for v in coco.instances.values())} masks of "
             f"{len(coco.instances)} images" + (" (ordered by car_index)" if coco.ordered else
                                                " (unordered: associated with the cars by overlap)")]
    if coco.warnings:
        lines.append(f"masks {coco.path}: {len(coco.warnings)} entries skipped:")
        lines += [f"  {w}" for w in coco.warnings[:10]]
        if len(coco.warnings) > 10:
            lines.append(f"  ... and {len(coco.warnings) - 10} more")
    wanted = set(image_ids)
    extra = [i for i in coco.instances if i not in wanted]
    if extra:
        lines.append(f"masks {coco.path}: {len(extra)} images are not in the predictions (ignored), e.g. "
                     f"{', '.join(extra[:3])}")
    missing = [i for i in image_ids if i not in coco.instances]
    if missing:
        lines.append(f"masks {coco.path}: {len(missing)} images of the predictions have no entry (their cars "
                     f"get no mask), e.g. {', '.join(missing[:3])}")
    return lines


def fallback_model(data, config: RefineConfig) -> int | None:
    """The model id written to refined.csv for cars that never got a mesh (images that failed)."""
    if config.model is not None:
        return int(config.model)
    try:
        from nmrlight.refine.meshchoice import typical_model

        return typical_model(data, data.model_ids())
    except NmrlightError:
        return None
