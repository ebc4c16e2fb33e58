"""Reports of a refinement run: OUT/lighting.csv, OUT/report.json and a single-file OUT/report.html.

report.html shows, for the first images, each refined car's window with the render contour of the
initial pose (blue) and of the refined pose (red) over the photo, as base64-embedded PNG thumbnails.
"""

from __future__ import annotations

import base64
import csv
import html
import io
import json
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import torch

from nmrlight.errors import NmrlightError
from nmrlight.io.dataset import DataFolder
from nmrlight.io.poses import CarPose, write_poses
from nmrlight.refine.overlay import BLUE, GREEN, RED, overlay
from nmrlight.refine.result import ImageResult
from nmrlight.rotations import kaggle_to_matrix

HTML_IMAGES = 20
HTML_CARS = 12
THUMB = 200


def write_refined_csv(path: str | Path, results: Sequence[ImageResult]) -> None:
    """refined.csv (train format with confidences) from the results, in their order."""
    write_poses(path, {r.image_id: r.refined_poses() for r in results}, confidence=True)


def write_lighting_csv(path: str | Path, results: Sequence[ImageResult]) -> None:
    """One row per image: ImageId, ambient, directional, dx, dy, dz (l_a + l_d = 1 when learned)."""
    with Path(path).open("w", newline="") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(["ImageId", "ambient", "directional", "dx", "dy", "dz"])
        for r in results:
            if r.lighting is None:
                continue
            li = r.lighting
            writer.writerow([r.image_id, *(repr(float(x)) for x in (li.ambient, li.directional, *li.direction))])


def _summary(results: Sequence[ImageResult]) -> dict:
    cars = [c for r in results for c in r.cars]
    done = [c for c in cars if c.iou_after is not None]
    statuses: dict[str, int] = {}
    for c in cars:
        statuses[c.status] = statuses.get(c.status, 0) + 1

    def mean(values):
        values = [v for v in values if v is not None]
        return float(np.mean(values)) if values else None

    return {
        "images": len(results), "images_ok": sum(r.status == "ok" for r in results),
        "cars": len(cars), "status_counts": statuses,
        "mean_iou_before": mean([c.iou_before for c in done]), "mean_iou_after": mean([c.iou_after for c in done]),
        "mean_seconds_per_refined_car": mean([c.seconds for c in done]),
        "seconds": float(sum(r.seconds for r in results)),
    }


def write_report_json(path: str | Path, results: Sequence[ImageResult]) -> None:
    data = {"summary": _summary(results), "images": [r.to_dict() for r in results]}
    Path(path).write_text(json.dumps(data, indent=1))


def _png_base64(image) -> str:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", optimize=True)
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def _silhouette(data: DataFolder, pose: CarPose, camera, x0: int, y0: int, w: int, h: int,
                scale: float) -> np.ndarray:
    from nmrlight.render import render
    from nmrlight.scene import MeshObject, Scene

    mesh = data.car(pose.model_type)
    cam = camera.window(x0, y0, w, h).scaled(scale)
    obj = MeshObject(torch.as_tensor(mesh.object_vertices(), dtype=torch.float32),
                     torch.as_tensor(mesh.faces, dtype=torch.long),
                     torch.as_tensor(kaggle_to_matrix(np.asarray(pose.rotation)), dtype=torch.float32),
                     torch.as_tensor(pose.translation, dtype=torch.float32))
    with torch.no_grad():
        out = render(Scene([obj]), cam, None, edges="none", outputs={"alpha"})
    return (out.object_id == 0).numpy()


def _thumbnails(data: DataFolder, result: ImageResult) -> list[tuple[int, str, str, str]]:
    """(car index, status, before PNG, after PNG) for the refined cars of one image."""
    from nmrlight.refine.window import _resample

    photo = data.read_image(result.image_id, "gray")
    height, width = photo.shape
    camera = data.camera(width, height)
    mask_path = data.mask_path(result.image_id)
    labels = data.read_mask(result.image_id, shape=(height, width)) if mask_path is not None else None
    out = []
    for car in result.cars[:HTML_CARS]:
        box = car.extra.get("window")
        if not box:
            continue
        x0, y0, x1, y1 = (int(v) for v in box)
        w, h = x1 - x0, y1 - y0
        scale = min(1.0, THUMB / max(w, h))
        cam_w, cam_h = max(1, round(w * scale)), max(1, round(h * scale))
        crop = _resample(photo[y0:y1, x0:x1], cam_h, cam_w).numpy()
        mask = []
        if labels is not None:
            m = _resample((labels[y0:y1, x0:x1] == car.index + 1).astype(np.float32), cam_h, cam_w).numpy() > 0.5
            mask = [(m, GREEN)]
        before = _silhouette(data, car.initial, camera, x0, y0, w, h, scale)
        after = _silhouette(data, car.refined, camera, x0, y0, w, h, scale)
        out.append((car.index, car.status, _png_base64(overlay(crop, [*mask, (before, BLUE)])),
                    _png_base64(overlay(crop, [*mask, (after, RED)]))))
    return out


def write_report_html(path: str | Path, results: Sequence[ImageResult], data: DataFolder) -> None:
    """A light single-file HTML page: summary, then before/after thumbnails of the first images."""
    summary = _summary(results)
    parts = ["<!doctype html><html><head><meta charset='utf-8'><title>nmrlight refinement report</title>",
             "<style>body{font-family:sans-serif;margin:1em}table{border-collapse:collapse}"
             "td,th{border:1px solid #ccc;padding:2px 6px;font-size:13px}img{image-rendering:pixelated}"
             ".car{display:inline-block;margin:4px;vertical-align:top;font-size:12px}</style></head><body>",
             "<h1>nmrlight refinement report</h1>",
             f"<pre>{html.escape(json.dumps(summary, indent=1))}</pre>",
             "<p>Contours over the photo window: green = mask, blue = initial pose, red = refined pose.</p>"]
    for result in list(results)[:HTML_IMAGES]:
        li = result.lighting
        light = (f"ambient {li.ambient:.3f}, directional {li.directional:.3f}, direction "
                 f"({', '.join(f'{x:.3f}' for x in li.direction)})" if li is not None else "none")
        parts.append(f"<h2>{html.escape(result.image_id)} — {html.escape(result.status)}, "
                     f"{result.seconds:.1f} s</h2><p>lighting: {light}</p>")
        if result.error:
            parts.append(f"<p style='color:#b00'>{html.escape(result.error)}</p>")
        rows = ["<table><tr><th>car</th><th>status</th><th>IoU before</th><th>IoU after</th>"
                "<th>loss before</th><th>loss after</th><th>iterations</th><th>s</th></tr>"]

        def fmt(v):
            return "" if v is None else f"{v:.3f}"

        for c in result.cars:
            rows.append(f"<tr><td>{c.index}</td><td>{html.escape(c.status)}</td><td>{fmt(c.iou_before)}</td>"
                        f"<td>{fmt(c.iou_after)}</td><td>{fmt(c.loss_before)}</td><td>{fmt(c.loss_after)}</td>"
                        f"<td>{c.iterations}</td><td>{c.seconds:.2f}</td></tr>")
        rows.append("</table>")
        parts.extend(rows)
        if result.status == "ok":
            try:
                thumbs = _thumbnails(data, result)
            except NmrlightError as exc:
                parts.append(f"<p>no thumbnails: {html.escape(str(exc))}</p>")
                thumbs = []
            for index, status, before, after in thumbs:
                parts.append(f"<div class='car'>car {index} ({html.escape(status)})<br>"
                             f"<img src='data:image/png;base64,{before}' title='initial'> "
                             f"<img src='data:image/png;base64,{after}' title='refined'></div>")
    parts.append("</body></html>")
    Path(path).write_text("\n".join(parts))


def write_reports(out_dir: str | Path, results: Sequence[ImageResult], data: DataFolder,
                  predictions: Mapping[str, list[CarPose]]) -> None:
    """OUT/lighting.csv, OUT/report.json and OUT/report.html (refined.csv is the runner's).

    `predictions` (the input poses) is accepted for the runner's contract; the results carry them.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    results = list(results)
    write_lighting_csv(out / "lighting.csv", results)
    write_report_json(out / "report.json", results)
    write_report_html(out / "report.html", results, data)
