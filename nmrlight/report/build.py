"""Build a run's report from its results: OUT/report.json, OUT/report.html (the summary) and
OUT/report/ (plots, the tables of photographs and cars, one page and its pictures per photograph).

Pages are incremental: a photograph's page stores a fingerprint of what it shows (its result, its
ground-truth errors); a rebuild skips photographs whose fingerprint did not change, so reporting a
run while it goes on, or after a resume, redraws only the new photographs.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from nmrlight.errors import NmrlightError
from nmrlight.io.dataset import DataFolder
from nmrlight.io.poses import CarPose
from nmrlight.refine.outdir import RUN_FILE, write_atomic
from nmrlight.refine.result import ImageResult
from nmrlight.report import plots
from nmrlight.report.accuracy import accuracy_of
from nmrlight.report.assets import Assets, write_assets
from nmrlight.report.html import fingerprint, page_key, page_name
from nmrlight.report.pages import cars_page, photo_page, photos_page
from nmrlight.report.summary import CarRow, car_rows, summary_of
from nmrlight.report.summary_page import summary_page

REPORT_VERSION = 1        # bump when the pictures or pages change, so rebuilds redraw them
REPORT_DIR = "report"


@dataclass
class BuildStats:
    """What a report build did."""

    photos: int = 0
    pages_written: int = 0
    pages_skipped: int = 0
    notes: list[str] = field(default_factory=list)
    seconds: float = 0.0


def run_info(out: Path) -> dict:
    """Which inputs made the run (from OUT/run.json), as strings for the summary page."""
    try:
        record = json.loads((out / RUN_FILE).read_text())
    except (OSError, ValueError):
        return {}
    inputs = record.get("inputs", {})
    info = {k: str(inputs[k]) for k in ("data", "predictions") if k in inputs}
    for k in ("started", "nmrlight"):
        if k in record:
            info[k] = str(record[k])
    return info


def report_dict(out: Path, results: Sequence[ImageResult], truth: Mapping[str, Sequence[CarPose]] | None = None,
                gt_path: str | Path | None = None, rows: Sequence[CarRow] | None = None,
                dicts: Sequence[dict] | None = None) -> dict:
    """The content of report.json: run, summary, accuracy (with ground truth) and every image's result."""
    rows = car_rows(results) if rows is None else rows
    report = {"generated": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "run": run_info(out),
              "summary": summary_of(results, rows)}
    if truth is not None:
        report["accuracy"] = accuracy_of(results, truth, gt_path or "ground truth")
    report["images"] = list(dicts) if dicts is not None else [r.to_dict() for r in results]
    return report


def _photo_task(report_dir: str, data_root: str | None, result: dict, errors: dict | None, key: str
                ) -> list[str]:
    """Draw one photograph's pictures and write its page (runs in a worker process when parallel)."""
    image = ImageResult.from_dict(result)
    folder = Path(report_dir) / "images" / page_name(image.image_id)
    if data_root is None:
        assets = Assets(notes=["no pictures: the data folder is unknown (pass --data)"])
    else:
        try:
            assets = write_assets(DataFolder(data_root), image, folder)
        except NmrlightError as exc:
            assets = Assets(notes=[f"no pictures: {exc}"])
        except Exception as exc:  # noqa: BLE001 - one photograph's bad data must not stop a batch report
            assets = Assets(notes=[f"no pictures: {type(exc).__name__}: {exc}"])
    rows = car_rows([image])
    errs = {int(k): v for k, v in errors.items()} if errors is not None else None
    write_atomic(folder.with_suffix(".html"), photo_page(image, rows, assets, errs, key))
    return [f"{image.image_id}: {n}" for n in assets.notes]


def _photo_pages(report_dir: Path, data: DataFolder | None, results: Sequence[ImageResult], dicts: Sequence[dict],
                 errors: Mapping[str, dict] | None, workers: int, stats: BuildStats) -> None:
    (report_dir / "images").mkdir(parents=True, exist_ok=True)
    root = str(data.root.resolve()) if data is not None else None
    tasks = []
    for result, d in zip(results, dicts, strict=True):
        errs = errors.get(result.image_id, {}) if errors is not None else None
        key = fingerprint(REPORT_VERSION, d, errs, root)
        page = report_dir / "images" / f"{page_name(result.image_id)}.html"
        if page_key(page) == key:
            stats.pages_skipped += 1
            continue
        tasks.append((str(report_dir), root, d, errs, key))
    if workers > 1 and len(tasks) > 1:
        import multiprocessing

        with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn")) as pool:
            for notes in pool.map(_photo_task, *zip(*tasks, strict=True), chunksize=4):
                stats.notes.extend(notes)
    else:
        for task in tasks:
            stats.notes.extend(_photo_task(*task))
    stats.pages_written += len(tasks)


def build_report(out: str | Path, results: Sequence[ImageResult], data: DataFolder | None,
                 truth: Mapping[str, Sequence[CarPose]] | None = None, gt_path: str | Path | None = None,
                 workers: int = 1) -> BuildStats:
    """Write report.json, report.html and OUT/report/ for `results` (lighting.csv is the caller's)."""
    start = time.perf_counter()
    out = Path(out)
    report_dir = out / REPORT_DIR
    (report_dir / "plots").mkdir(parents=True, exist_ok=True)
    results = list(results)
    stats = BuildStats(photos=len(results))
    rows = car_rows(results)
    dicts = [r.to_dict() for r in results]      # computed once: report.json and the pages' fingerprints
    report = report_dict(out, results, truth, gt_path, rows, dicts)
    write_atomic(out / "report.json", json.dumps(report) + "\n")

    by_image: dict[str, list] = {}
    for r in rows:
        by_image.setdefault(r.image_id, []).append(r)
    errors = None
    if "accuracy" in report:
        errors = {}
        for e in report["accuracy"]["per_car"]:
            errors.setdefault(e["image_id"], {})[e["index"]] = e

    plot_dir = report_dir / "plots"
    plots.plot_iou(rows, plot_dir / "iou.png")
    plots.plot_movement(rows, plot_dir / "movement.png")
    plots.plot_time(rows, plot_dir / "time.png")
    lit = [(r.lighting.ambient, r.lighting.directional, r.lighting.direction) for r in results
           if r.lighting is not None and r.status == "ok"]
    light = report["summary"]["lighting"]
    typical = ((light["ambient"]["median"], light["directional"]["median"], light["direction_mean"])
               if light["images"] else None)
    plots.plot_lights(lit, typical, plot_dir / "lights.png")
    if errors is not None:
        plots.plot_accuracy(report["accuracy"]["per_car"], plot_dir / "accuracy.png")

    _photo_pages(report_dir, data, results, dicts, errors, workers, stats)
    write_atomic(report_dir / "photos.html", photos_page(results, by_image, errors))
    write_atomic(report_dir / "cars.html", cars_page(rows, errors))
    write_atomic(out / "report.html", summary_page(report, report_dir))
    stats.seconds = time.perf_counter() - start
    return stats
