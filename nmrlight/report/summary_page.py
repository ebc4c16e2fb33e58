"""OUT/report.html: the summary of a run at a glance. Every number on it is printed from report.json's
dict (tied to its key by data-key), so the page and the file cannot disagree."""

from __future__ import annotations

from pathlib import Path

from nmrlight.report.html import esc, href, keyed, page, page_name

STATS = (("n", 0, 1.0), ("mean", 3, 1.0), ("median", 3, 1.0), ("p10", 3, 1.0), ("p90", 3, 1.0), ("max", 3, 1.0))


def _stats_table(report: dict, rows: list[tuple[str, str, int, float, str]]) -> str:
    """Rows (label, key of a stats dict, digits, scale, unit) as one table of n/mean/median/p10/p90/max."""
    out = ["<table><tr><th class='t'></th>" + "".join(f"<th>{name}</th>" for name, _, _ in STATS) + "</tr>"]
    for label, key, digits, scale, unit in rows:
        values = _get(report, key)
        tds = []
        for name, d, _ in STATS:
            d = 0 if name == "n" else digits
            s = 1.0 if name == "n" else scale
            tds.append(f"<td>{keyed(f'{key}.{name}', values[name], d, s)}{'' if name == 'n' else unit}</td>")
        out.append(f"<tr><td class='t'>{esc(label)}</td>{''.join(tds)}</tr>")
    out.append("</table>")
    return "".join(out)


def _get(report: dict, key: str):
    value = report
    for part in key.split("."):
        value = value[int(part)] if isinstance(value, list) else value[part]
    return value


def _counts(report: dict, key: str, what: str) -> str:
    counts = _get(report, key)
    cells = "".join(f"<tr><td class='t'>{esc(name)}</td><td>{keyed(f'{key}.{name}', n, 0)}</td></tr>"
                    for name, n in counts.items())
    return f"<table><tr><th class='t'>{what}</th><th>count</th></tr>{cells}</table>"


def _featured(report: dict, key: str, report_dir: Path) -> str:
    cars = _get(report, key)
    if not cars:
        return "<p class='muted'>none</p>"
    rows = ["<table><tr><th class='t'>photograph</th><th>car</th><th class='t'>status</th><th>IoU before</th>"
            "<th>IoU after</th><th>rot. change (deg)</th><th>depth change (%)</th><th class='t'>before | after</th>"
            "</tr>"]
    for k, car in enumerate(cars):
        name = page_name(car["image_id"])
        crop = report_dir / "images" / name / f"car{car['index']}.jpg"
        img = (f"<img src='report/images/{href(name, crop.name)}' alt='crop' loading='lazy'>"
               if crop.is_file() else "")
        p = f"{key}.{k}"
        rows.append(f"<tr><td class='t'><a href='report/images/{href(name)}.html#car{car['index']}'>"
                    f"{esc(car['image_id'])}</a></td><td>{keyed(p + '.index', car['index'], 0)}</td>"
                    f"<td class='t'>{keyed(p + '.status', car['status'])}</td>"
                    f"<td>{keyed(p + '.iou_before', car['iou_before'])}</td>"
                    f"<td>{keyed(p + '.iou_after', car['iou_after'])}</td>"
                    f"<td>{keyed(p + '.rotation_change_deg', car['rotation_change_deg'], 2)}</td>"
                    f"<td>{keyed(p + '.depth_change_rel', car['depth_change_rel'], 2, 100)}</td>"
                    f"<td class='t'>{img}</td></tr>")
    rows.append("</table>")
    return "".join(rows)


def _accuracy(report: dict) -> str:
    acc = report["accuracy"]
    parts = [f"<h2 id='accuracy'>Accuracy against the ground truth</h2><p>ground truth "
             f"{keyed('accuracy.gt', acc['gt'])}: {keyed('accuracy.images_scored', acc['images_scored'], 0)} "
             f"photographs scored, {keyed('accuracy.images_without_gt', acc['images_without_gt'], 0)} without "
             "ground truth. Each prediction is paired with a true car on its initial pose (the official "
             "metric's matching); bands by true depth; closer: rotation / one degree + translation / half a "
             "percent went down.</p>",
             "<table><tr><th class='t'>band</th><th>true cars</th><th>paired</th><th>median rot. err (deg) "
             "before</th><th>after</th><th>median transl. err (%) before</th><th>after</th><th>mAP before</th>"
             "<th>mAP after</th><th>closer (%)</th></tr>"]
    for k, _ in enumerate(acc["bands"]):
        p = f"accuracy.bands.{k}"
        band = acc["bands"][k]
        parts.append(
            f"<tr><td class='t'>{keyed(p + '.band', band['band'])}</td><td>{keyed(p + '.gt_cars', band['gt_cars'], 0)}"
            f"</td><td>{keyed(p + '.paired_cars', band['paired_cars'], 0)}</td>"
            f"<td>{keyed(p + '.rotation_deg_before', band['rotation_deg_before'], 2)}</td>"
            f"<td>{keyed(p + '.rotation_deg_after', band['rotation_deg_after'], 2)}</td>"
            f"<td>{keyed(p + '.translation_rel_before', band['translation_rel_before'], 2, 100)}</td>"
            f"<td>{keyed(p + '.translation_rel_after', band['translation_rel_after'], 2, 100)}</td>"
            f"<td>{keyed(p + '.map_before', band['map_before'])}</td>"
            f"<td>{keyed(p + '.map_after', band['map_after'])}</td>"
            f"<td>{keyed(p + '.closer_fraction', band['closer_fraction'], 1, 100)}</td></tr>")
    parts.append("</table><img src='report/plots/accuracy.png' alt='error distributions'>")
    return "".join(parts)


def summary_page(report: dict, report_dir: Path) -> str:
    """The HTML of OUT/report.html from the report.json dict (`report_dir` is OUT/report)."""
    s = report["summary"]
    run = report.get("run", {})
    parts = ["<h1>nmrlight refinement report</h1>",
             "<p>" + " · ".join(f"{esc(k)} {keyed(f'run.{k}', str(v))}" for k, v in run.items()) + "</p>",
             "<p><a href='report/photos.html'>all photographs</a> (sortable, filterable) · "
             "<a href='report/cars.html'>all cars</a> · <a href='report.json'>report.json</a></p>",
             "<h2>At a glance</h2>",
             f"<p>{keyed('summary.images', s['images'], 0)} photographs, {keyed('summary.cars', s['cars'], 0)} cars, "
             f"{keyed('summary.cars_optimised', s['cars_optimised'], 0)} of them optimised. Mean overlap with the "
             f"mask {keyed('summary.iou_before.mean', s['iou_before']['mean'])} before, "
             f"{keyed('summary.iou_after.mean', s['iou_after']['mean'])} after; "
             f"{keyed('summary.iou_improved_fraction', s['iou_improved_fraction'], 1, 100)} % of the optimised "
             f"cars fit their mask better. Median time "
             f"{keyed('summary.seconds_per_car.median', s['seconds_per_car']['median'], 2)} s a car.</p>",
             "<div class='fig'>" + _counts(report, "summary.images_by_status", "photographs") + "</div>",
             "<div class='fig'>" + _counts(report, "summary.cars_by_status", "cars") + "</div>"]
    if "accuracy" in report:
        parts.append(_accuracy(report))
    parts += ["<h2>Overlap with the masks</h2>",
              _stats_table(report, [("IoU before", "summary.iou_before", 3, 1.0, ""),
                                    ("IoU after", "summary.iou_after", 3, 1.0, "")]),
              "<img src='report/plots/iou.png' alt='IoU histogram'>",
              "<h2>How far the cars moved</h2>",
              _stats_table(report, [("rotation change (deg)", "summary.rotation_change_deg", 2, 1.0, ""),
                                    ("|depth change| (%)", "summary.depth_change_rel_abs", 2, 100.0, ""),
                                    ("shift (m)", "summary.shift_m", 3, 1.0, "")]),
              "<img src='report/plots/movement.png' alt='movement histograms'>",
              "<h2>Time</h2>",
              f"<p>{keyed('summary.seconds_images', s['seconds_images'], 1)} s of refinement in all "
              "(summed over photographs, whatever the workers).</p>",
              _stats_table(report, [("seconds a car", "summary.seconds_per_car", 2, 1.0, ""),
                                    ("seconds a photograph", "summary.seconds_per_image", 2, 1.0, "")]),
              "<img src='report/plots/time.png' alt='time histogram'>"]
    li = s["lighting"]
    parts += ["<h2>Learned lights</h2>",
              f"<p>{keyed('summary.lighting.images', li['images'], 0)} photographs with a lighting. "
              "Direction toward the light, camera frame (x right, y down, z forward): mean "]
    if li.get("direction_mean"):
        parts.append("(" + ", ".join(keyed(f"summary.lighting.direction_mean.{k}", v)
                                     for k, v in enumerate(li["direction_mean"])) + "), agreement "
                     f"{keyed('summary.lighting.direction_agreement', li['direction_agreement'])} "
                     "(length of the mean unit direction: one when every photograph agrees).</p>")
    else:
        parts.append("none.</p>")
    parts += [_stats_table(report, [("ambient l_a", "summary.lighting.ambient", 3, 1.0, ""),
                                    ("directional l_d", "summary.lighting.directional", 3, 1.0, "")]),
              "<img src='report/plots/lights.png' alt='learned lights'>",
              "<h2>Worst fits (lowest IoU after)</h2>", _featured(report, "summary.worst_cars", report_dir),
              "<h2>Most moved (largest rotation change)</h2>", _featured(report, "summary.most_moved_cars", report_dir),
              "<h2>Failed photographs</h2>"]
    failed = s["failed_images"]
    if failed:
        parts.append("<table><tr><th class='t'>photograph</th><th class='t'>error</th></tr>" + "".join(
            f"<tr><td class='t'><a href='report/images/{href(page_name(f['image_id']))}.html'>"
            f"{esc(f['image_id'])}</a></td><td class='t bad'>{keyed(f'summary.failed_images.{k}.error', f['error'])}"
            "</td></tr>" for k, f in enumerate(failed)) + "</table>")
    else:
        parts.append("<p class='muted'>none</p>")
    return page("nmrlight refinement report", "\n".join(parts))
