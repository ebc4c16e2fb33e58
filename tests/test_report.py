"""The run report (nmrlight.report, `nmrlight report`): its numbers against independently computed
values, the summary page against report.json, every page parsing and every link resolving, sizes,
incremental rebuilds, and bad input. The results are made by hand from a small synthetic data set
(initial = the noisy predictions, refined = chosen poses), so every expected number is known."""

from __future__ import annotations

import csv
import io
import json
import math
import re
import shutil
import subprocess
import sys
from contextlib import redirect_stderr, redirect_stdout
from dataclasses import dataclass, replace
from html.parser import HTMLParser
from pathlib import Path
from unittest import mock
from urllib.parse import unquote, urlsplit

import numpy as np
import pytest

from nmrlight.cli import main
from nmrlight.io.dataset import DataFolder
from nmrlight.io.poses import CarPose, read_poses
from nmrlight.metric import evaluate
from nmrlight.refine.ablation import car_errors
from nmrlight.refine.outdir import load_results, save_result
from nmrlight.refine.report import write_lighting_csv, write_reports
from nmrlight.refine.result import CarResult, ImageResult, LightingResult
from nmrlight.report.assets import car_labels, outline
from nmrlight.report.plots import shaded_sphere

HEADING_TURN = math.radians(10.0)


def _turned(pose: CarPose, depth_factor: float) -> CarPose:
    """The pose turned by HEADING_TURN about the car's own vertical axis, its depth scaled."""
    v1, v2, v3 = pose.rotation
    x, y, z = pose.translation
    return replace(pose, rotation=(v1, v2 + HEADING_TURN, v3), translation=(x, y, z * depth_factor))


@dataclass
class Run:
    data: Path
    out: Path
    results: list[ImageResult]
    truth: dict[str, list[CarPose]]
    predictions: dict[str, list[CarPose]]


def _window(pose: CarPose, camera) -> list[int]:
    K = camera.K.double().numpy()
    x, y, z = pose.translation
    u, v, h = K[0, 0] * x / z + K[0, 2], K[1, 1] * y / z + K[1, 2], 3.0 * K[0, 0] / z
    return [int(max(0, u - h)), int(max(0, v - h)), int(min(camera.width, u + h)), int(min(camera.height, v + h))]


def make_results(data_dir: Path) -> tuple[list[ImageResult], dict, dict]:
    """Hand-made results: car k of image i has IoU (0.4 + 0.05 k) -> (0.6 + 0.1 k), 1 + k seconds;
    every third car "no mask"; the first car of every image turned by HEADING_TURN and moved 10 % in
    depth, the others refined onto the truth."""
    truth = read_poses(data_dir / "train.csv")
    predictions = read_poses(data_dir / "predictions.csv")
    camera = DataFolder(data_dir).camera()
    results = []
    for n, (image_id, cars) in enumerate(predictions.items()):
        out = []
        for k, (p, g) in enumerate(zip(cars, truth[image_id], strict=True)):
            if k % 3 == 2:
                out.append(CarResult(k, p, p, status="no mask"))
                continue
            refined = _turned(p, 1.1) if k == 0 else g
            extra = {"window": _window(g, camera), "association": {"score": 0.75, "mask": k + 1}}
            if k == 1:
                extra["mesh_choice"] = {"chosen": "baoma-330", "runner_up": "aodi-a6"}
            out.append(CarResult(k, p, refined, "refined", 0.4 + 0.05 * k, 0.6 + 0.1 * k, 1.0, 0.5, 30,
                                 1.0 + k, extra=extra))
        lighting = LightingResult(0.4 + 0.1 * n, 0.6 - 0.1 * n, (0.0, -0.6, -0.8), [0], {0: 0.7}, 0.02)
        results.append(ImageResult(image_id, out, lighting, seconds=10.0 + n))
    return results, truth, predictions


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Run:
    """3 synthetic pictures at scale 0.2, hand-made results saved as a run folder, report built with --gt."""
    from nmrlight.synth import SynthConfig, synthesize

    root = tmp_path_factory.mktemp("report")
    data = root / "data"
    synthesize(data, 3, seed=5, config=SynthConfig(scale=0.2, cars_mean=4.0, cars_min=3, cars_max=5))
    results, truth, predictions = make_results(data)
    out = root / "out"
    for r in results:
        (out / "images").mkdir(parents=True, exist_ok=True)
        save_result(out, r)
    (out / "run.json").write_text(json.dumps({"inputs": {"data": str(data), "predictions":
                                                         str(data / "predictions.csv")}}))
    write_reports(out, results, DataFolder(data), truth=truth, gt_path=data / "train.csv")
    return Run(data, out, results, truth, predictions)


# --- the numbers --------------------------------------------------------------------------------------
def test_summary_numbers_match_hand_computed_values(run) -> None:
    s = json.loads((run.out / "report.json").read_text())["summary"]
    cars = [c for r in run.results for c in r.cars]
    done = [c for c in cars if c.status == "refined"]
    assert s["images"] == 3 and s["cars"] == len(cars) and s["cars_optimised"] == len(done)
    assert s["cars_by_status"] == {"refined": len(done), "no mask": len(cars) - len(done)}
    assert s["images_by_status"] == {"ok": 3}
    assert s["iou_before"]["mean"] == pytest.approx(np.mean([0.4 + 0.05 * c.index for c in done]))
    assert s["iou_after"]["median"] == pytest.approx(np.median([0.6 + 0.1 * c.index for c in done]))
    assert s["iou_improved_fraction"] == 1.0
    assert s["seconds_per_car"]["mean"] == pytest.approx(np.mean([1.0 + c.index for c in done]))
    assert s["seconds_images"] == pytest.approx(10 + 11 + 12)
    # the turned cars moved by exactly HEADING_TURN and 10 % in depth; the worst fit is a car 0 (IoU 0.6)
    turned = [m for m in s["most_moved_cars"] if m["index"] == 0]
    assert turned and all(m["rotation_change_deg"] == pytest.approx(10.0, abs=1e-6) for m in turned)
    assert all(m["depth_change_rel"] == pytest.approx(0.1) for m in turned)
    assert s["depth_change_rel_abs"]["max"] == pytest.approx(0.1)
    assert s["worst_cars"][0]["iou_after"] == pytest.approx(0.6) and s["worst_cars"][0]["index"] == 0
    assert s["lighting"]["images"] == 3
    assert s["lighting"]["ambient"]["median"] == pytest.approx(0.5)
    np.testing.assert_allclose(s["lighting"]["direction_mean"], [0.0, -0.6, -0.8], atol=1e-9)


def test_accuracy_against_the_metric_and_car_errors(run) -> None:
    acc = json.loads((run.out / "report.json").read_text())["accuracy"]
    everything = next(b for b in acc["bands"] if b["band"] == "all")
    before = evaluate(run.truth, run.predictions).map
    after = evaluate(run.truth, {r.image_id: r.refined_poses() for r in run.results}).map
    assert everything["map_before"] == pytest.approx(before) and everything["map_after"] == pytest.approx(after)
    assert everything["gt_cars"] == sum(len(c) for c in run.truth.values())
    by_car = {(e["image_id"], e["index"]): e for e in acc["per_car"]}
    for r in run.results:
        for c in r.cars:
            e = by_car[(r.image_id, c.index)]
            g = run.truth[r.image_id][e["gt_index"]]
            assert e["gt_index"] == c.index          # synthetic rows are aligned with the truth
            assert (e["rotation_deg_after"], e["translation_rel_after"]) == pytest.approx(car_errors(c.refined, g))
            assert (e["rotation_deg_before"], e["translation_rel_before"]) == pytest.approx(car_errors(c.initial, g))
            assert e["band"] == ("< 40 m" if g.translation[2] < 40 else ">= 40 m")
    near = next(b for b in acc["bands"] if b["band"] == "< 40 m")
    assert near["paired_cars"] == sum(e["gt_depth_m"] < 40 for e in acc["per_car"])


# --- the pages -------------------------------------------------------------------------------------------
VOID = {"meta", "img", "input", "br", "link", "hr"}


class _Page(HTMLParser):
    """Checks nesting, collects links and the summary's keyed values and unkeyed text."""

    def __init__(self) -> None:
        super().__init__()
        self.stack: list[tuple[str, bool]] = []
        self.links: list[str] = []
        self.keyed: list[tuple[str, dict, str]] = []
        self.loose_text: list[str] = []
        self._current: list = []

    def handle_starttag(self, tag, attrs) -> None:
        a = dict(attrs)
        for name in ("href", "src"):
            if a.get(name):
                self.links.append(a[name])
        if tag in VOID:
            return
        exempt = tag in ("th", "a", "script", "style", "title") or "data-key" in a
        self.stack.append((tag, exempt))
        if "data-key" in a:
            self._current.append((a, []))

    def handle_endtag(self, tag) -> None:
        if tag in VOID:
            return
        assert self.stack and self.stack[-1][0] == tag, f"</{tag}> closes {self.stack[-1:]}"
        self.stack.pop()
        if tag == "span" and self._current:
            a, text = self._current.pop()
            self.keyed.append((a["data-key"], a, "".join(text)))

    def handle_data(self, data) -> None:
        if self._current:
            self._current[-1][1].append(data)
        elif not any(exempt for _, exempt in self.stack):
            self.loose_text.append(data)


def _parse(path: Path) -> _Page:
    parser = _Page()
    parser.feed(path.read_text(encoding="utf-8"))
    parser.close()
    assert not parser.stack, f"{path}: unclosed {parser.stack}"
    return parser


def _resolve(report: dict, key: str):
    value = report
    for part in key.split("."):
        value = value[int(part)] if isinstance(value, list) else value[part]
    return value


def test_every_number_on_the_summary_page_comes_from_report_json(run) -> None:
    report = json.loads((run.out / "report.json").read_text())
    page = _parse(run.out / "report.html")
    assert len(page.keyed) > 60
    for key, attrs, text in page.keyed:
        value = _resolve(report, key)
        if isinstance(value, str):
            assert text == value, key
        elif value is None:
            assert text == "–", key
        else:
            digits, scale = int(attrs["data-digits"]), float(attrs["data-scale"])
            assert float(text) == pytest.approx(value * scale, abs=0.51 * 10 ** -digits), key
    keys = {k for k, _, _ in page.keyed}
    for needed in ("summary.iou_after.mean", "summary.seconds_per_car.median", "summary.cars_by_status.no mask",
                   "summary.rotation_change_deg.max", "summary.lighting.ambient.median",
                   "accuracy.bands.0.map_after", "accuracy.bands.2.rotation_deg_after"):
        assert needed in keys, needed
    loose = "".join(page.loose_text)
    context = re.findall(r".{0,20}\d.{0,20}", loose)
    assert not context, f"numbers not tied to report.json: {context}"


def _report_files(out: Path) -> list[Path]:
    return [out / "report.html", *sorted((out / "report").rglob("*.html"))]


def test_every_page_parses_and_every_link_exists(run) -> None:
    pages = _report_files(run.out)
    assert len(pages) == 3 + len(run.results)              # summary, photographs, cars, one page a photograph
    for path in pages:
        page = _parse(path)
        for link in page.links:
            target = urlsplit(link)
            assert not target.scheme and not target.netloc, f"{path}: external link {link}"
            if target.path:
                assert (path.parent / unquote(target.path)).is_file(), f"{path}: broken link {link}"
    photos = (run.out / "report" / "photos.html").read_text()
    for r in run.results:
        assert f"images/{r.image_id}.html" in photos
        folder = run.out / "report" / "images" / r.image_id
        assert (folder / "photo.jpg").is_file()
        assert {p.name for p in folder.glob("car*.jpg")} == {f"car{c.index}.jpg" for c in r.cars
                                                               if c.status == "refined"}


def test_photo_page_shows_extra_fields_and_errors(run) -> None:
    r = run.results[0]
    page = (run.out / "report" / "images" / f"{r.image_id}.html").read_text()
    assert "association" in page and "score: 0.75" in page
    assert "mesh_choice" in page and "chosen: baoma-330, runner_up: aodi-a6" in page
    assert "rot. err after (deg)" in page and "window" not in page.split("<table")[1].split("</tr>")[0]
    cars = (run.out / "report" / "cars.html").read_text()
    assert cars.count("<tr>") == 1 + sum(len(x.cars) for x in run.results)


def test_sizes(run) -> None:
    summary = (run.out / "report.html").stat().st_size + sum(p.stat().st_size for p in
                                                             (run.out / "report" / "plots").glob("*.png"))
    assert summary < 1_000_000
    total = sum(p.stat().st_size for p in (run.out / "report").rglob("*") if p.is_file())
    total += (run.out / "report.html").stat().st_size
    assert total / len(run.results) < 200_000


# --- rebuilding -------------------------------------------------------------------------------------------
def test_rebuild_skips_unchanged_pages_and_redraws_changed(run, tmp_path) -> None:
    out = tmp_path / "out"
    shutil.copytree(run.out, out)
    results, bad = load_results(out)
    assert bad == [] and [r.image_id for r in results] == list(run.predictions)
    stats = write_reports(out, results, DataFolder(run.data), truth=run.truth, gt_path=run.data / "train.csv")
    assert (stats.pages_written, stats.pages_skipped) == (0, len(results))
    results[1].cars[0].iou_after = 0.123
    save_result(out, results[1])
    again, _ = load_results(out)
    stats = write_reports(out, again, DataFolder(run.data), truth=run.truth, gt_path=run.data / "train.csv")
    assert (stats.pages_written, stats.pages_skipped) == (1, len(results) - 1)
    report = json.loads((out / "report.json").read_text())
    assert report["summary"]["worst_cars"][0]["iou_after"] == pytest.approx(0.123)


def _cli(*args: str) -> subprocess.CompletedProcess:
    """The `nmrlight` entry point run in this process as the shell would call it: exit status, stdout, stderr.
    (tests/test_io.py runs the installed console script in a real subprocess.)"""
    out, err = io.StringIO(), io.StringIO()
    with mock.patch.object(sys, "argv", ["nmrlight", *args]), redirect_stdout(out), redirect_stderr(err):
        try:
            main()
            code = 0
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else int(exc.code is not None)
    return subprocess.CompletedProcess(args, code, out.getvalue(), err.getvalue())


def test_report_command_rebuilds_and_skips_bad_results(run, tmp_path) -> None:
    out = tmp_path / "out"
    shutil.copytree(run.out / "images", out / "images")
    shutil.copy(run.out / "run.json", out / "run.json")
    (out / "images" / "ID_broken.json").write_text("{not json")
    done = _cli("report", str(out), "--gt", str(run.data / "train.csv"))
    assert done.returncode == 0, done.stderr
    assert "ID_broken.json" in done.stderr and "report of 3 photographs" in done.stdout
    report = json.loads((out / "report.json").read_text())
    assert report["summary"]["images"] == 3 and "accuracy" in report
    assert (out / "lighting.csv").is_file() and (out / "report" / "cars.html").is_file()


@pytest.mark.parametrize("args, message", [
    (["report", "{tmp}/nothing"], "not a directory"),
    (["report", "{out}", "--gt", "{tmp}/missing.csv"], "missing.csv"),
    (["report", "{out}", "--data", "{tmp}/nodata"], "nodata"),
    (["report", "{empty}"], "images"),
])
def test_report_command_bad_input_is_one_clear_line(run, tmp_path, args, message) -> None:
    (tmp_path / "empty").mkdir()
    args = [a.format(tmp=tmp_path, out=run.out, empty=tmp_path / "empty") for a in args]
    done = _cli(*args)
    assert done.returncode == 2 and done.stderr.startswith("error: ") and message in done.stderr
    assert "Traceback" not in done.stderr


def test_gt_without_any_image_of_the_run_is_an_error(run, tmp_path) -> None:
    gt = tmp_path / "gt.csv"
    gt.write_text("ImageId,PredictionString\nID_other,16 0.1 0.2 3.1 1 2 20\n")
    done = _cli("report", str(run.out), "--gt", str(gt))
    assert done.returncode == 2 and "gt.csv" in done.stderr and "none of the run's 3 images" in done.stderr


# --- lighting.csv, pictures ------------------------------------------------------------------------------
def test_lighting_csv_writes_every_field_generically(tmp_path) -> None:
    @dataclass
    class WithUncertainty(LightingResult):
        ambient_std: float | None = None

    pose = CarPose(16, (0.1, 0.2, 3.1), (1.0, 2.0, 20.0))
    results = [ImageResult("A", [CarResult(0, pose, pose)], WithUncertainty(0.3, 0.7, (0.0, -1.0, 0.0), [0],
                                                                           {0: 0.5}, 0.01, materials="classes",
                                                                           ambient_std=0.05)),
               ImageResult("B", [], None)]
    write_lighting_csv(tmp_path / "lighting.csv", results)
    rows = list(csv.DictReader((tmp_path / "lighting.csv").open()))
    assert len(rows) == 1
    row = rows[0]
    assert list(row)[:6] == ["ImageId", "ambient", "directional", "dx", "dy", "dz"]
    assert float(row["ambient"]) == 0.3 and float(row["dy"]) == -1.0 and float(row["ambient_std"]) == 0.05
    assert json.loads(row["cars_used"]) == [0] and json.loads(row["albedo"]) == {"0": 0.5}
    assert row["materials"] == "classes"  # text as is, not JSON-quoted


def test_shaded_sphere_is_the_nmr_lighting_model() -> None:
    d = np.array([0.3, -0.5, -0.8])
    d /= np.linalg.norm(d)
    size = 201
    sphere = shaded_sphere(0.25, 0.75, d, size)
    # the visible sphere point whose normal is d (it faces the camera: d_z < 0) is the brightest
    col, row = [int((c + 1) / 2 * size) for c in d[:2]]
    assert sphere[row, col] == pytest.approx(1.0, abs=0.02)
    assert np.nanmax(sphere) == pytest.approx(1.0, abs=1e-3)
    # the point opposite in the image plane faces away from the light: ambient only
    col, row = [int((-0.9 * c / np.linalg.norm(d[:2]) + 1) / 2 * size) for c in d[:2]]
    assert sphere[row, col] == pytest.approx(0.25)
    assert np.isnan(sphere[0, 0])


def test_outline_marks_the_border_pixels_of_each_label() -> None:
    labels = np.full((10, 12), -1)
    labels[2:7, 3:9] = 0
    labels[2:7, 9:11] = 1
    edge = outline(labels)
    assert edge[2, 3] and edge[6, 8] and not edge[4, 5] and not edge[0, 0]
    assert edge[4, 8] and edge[4, 9]                               # where the two cars touch
    assert edge[labels == 0].sum() == 2 * 5 + 2 * 6 - 4


def test_car_labels_cover_the_projected_mesh(run) -> None:
    data = DataFolder(run.data)
    image_id, cars = next(iter(run.truth.items()))
    pose = cars[0]
    camera = data.camera().scaled(0.5)
    labels = car_labels(data, {0: pose}, camera, [])
    from nmrlight.rotations import kaggle_to_matrix

    mesh = data.car(pose.model_type)
    X = mesh.object_vertices() @ kaggle_to_matrix(np.asarray(pose.rotation)).T + np.asarray(pose.translation)
    K = camera.K.double().numpy()
    u, v = K[0, 0] * X[:, 0] / X[:, 2] + K[0, 2], K[1, 1] * X[:, 1] / X[:, 2] + K[1, 2]
    rows, cols = np.nonzero(labels == 0)
    assert cols.min() == pytest.approx(max(0, u.min()), abs=1.0) and cols.max() + 1 == pytest.approx(
        min(camera.width, u.max()), abs=1.0)
    assert rows.min() == pytest.approx(max(0, v.min()), abs=1.0) and rows.max() + 1 == pytest.approx(
        min(camera.height, v.max()), abs=1.0)


def test_summary_opens_in_headless_chromium(run, tmp_path) -> None:
    browser = _chromium()
    shot = tmp_path / "summary.png"
    done = subprocess.run([browser, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                           "--disable-component-update", "--disable-sync", "--no-first-run",
                           f"--user-data-dir={tmp_path / 'profile'}", f"--screenshot={shot}",
                           "--window-size=1280,1600", (run.out / "report.html").as_uri()],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    from PIL import Image

    image = np.asarray(Image.open(shot).convert("L"))
    assert image.shape == (1600, 1280) and image.std() > 10       # not a blank page


def _chromium() -> str:
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    if browser is None:
        pytest.skip("chromium not installed")
    return browser


def test_table_sorts_and_filters_in_headless_chromium(tmp_path) -> None:
    """The tables' inline JavaScript: a header click sorts by number, 'column < x' and text filter rows."""
    from nmrlight.report.html import cell, page, table

    rows = [f"<tr>{cell(name)}{cell(value)}</tr>" for name, value in (("b", 10.0), ("a", 2.5), ("c", -1.0))]
    probe = """<pre id='result'></pre><script>
    const t=document.getElementById('t'),h=t.tHead.rows[0].children,f=document.querySelector('input.filter');
    const firsts=()=>[...t.tBodies[0].rows].map(r=>r.children[0].textContent).join('');
    const shown=()=>[...t.tBodies[0].rows].filter(r=>r.style.display!=='none').length;
    let out=[];nmrSort(h[1]);out.push(firsts());nmrSort(h[1]);out.push(firsts());nmrSort(h[0]);out.push(firsts());
    f.value='score < 3';nmrFilter(f,'t');out.push(shown());f.value='B';nmrFilter(f,'t');out.push(shown());
    f.value='';nmrFilter(f,'t');out.push(shown());document.getElementById('result').textContent=out.join(' ');
    </script>"""
    path = tmp_path / "table.html"
    path.write_text(page("probe", table("t", ["name", "score"], rows, "filter") + probe, script=True))
    done = subprocess.run([_chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
                           "--disable-background-networking", f"--user-data-dir={tmp_path / 'profile'}",
                           "--dump-dom", path.as_uri()], capture_output=True, text=True, timeout=120)
    result = re.search(r"<pre id=\"result\">([^<]*)</pre>", done.stdout)
    assert result, done.stdout[-500:] + done.stderr[-500:]
    assert result.group(1).split() == ["cab", "bac", "abc", "2", "1", "3"]


def test_parallel_build_writes_the_same_pages(run, tmp_path) -> None:
    out = tmp_path / "out"
    shutil.copytree(run.out / "images", out / "images")
    shutil.copy(run.out / "run.json", out / "run.json")
    stats = write_reports(out, run.results, DataFolder(run.data), truth=run.truth, gt_path=run.data / "train.csv",
                          workers=2)
    assert stats.pages_written == len(run.results)
    for r in run.results:
        name = f"{r.image_id}.html"
        assert (out / "report" / "images" / name).read_text() == (run.out / "report" / "images" / name).read_text()
        assert (out / "report" / "images" / r.image_id / "photo.jpg").read_bytes() == (
            run.out / "report" / "images" / r.image_id / "photo.jpg").read_bytes()


def test_failed_and_empty_runs_still_make_a_consistent_report(tmp_path) -> None:
    pose = CarPose(16, (0.1, 0.2, 3.1), (1.0, 2.0, 20.0))
    failed = ImageResult("ID_bad", [CarResult(0, pose, pose, status="image failed")], None, status="failed",
                         error="mask ID_bad.png: size 9x7 (WxH) differs from the image")
    for name, results in (("failed", [failed]), ("empty", [])):
        out = tmp_path / name
        stats = write_reports(out, results, None)
        assert stats.pages_written == len(results)
        report = json.loads((out / "report.json").read_text())
        page = _parse(out / "report.html")
        for key, _, text in page.keyed:
            value = _resolve(report, key)
            assert text == ("–" if value is None else text) and (value is not None or text == "–"), key
        assert not re.search(r"\d", "".join(page.loose_text))
    assert report["summary"]["images"] == 0
    failed_report = json.loads((tmp_path / "failed" / "report.json").read_text())["summary"]
    assert failed_report["images_by_status"] == {"failed": 1}
    assert failed_report["failed_images"] == [{"image_id": "ID_bad", "error": failed.error}]
    assert failed.error in (tmp_path / "failed" / "report.html").read_text()
    assert "data folder is unknown" in (tmp_path / "failed" / "report" / "images" / "ID_bad.html").read_text()
