"""The report's drill-down pages: one page per photograph (photo with outlines, crops, fitted numbers),
and the sortable, filterable tables of all photographs and all cars that link to them."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict

from nmrlight.refine.result import ImageResult
from nmrlight.report.assets import Assets
from nmrlight.report.html import cell, compact, esc, href, number, page, page_name, table
from nmrlight.report.summary import CarRow

HIDDEN_EXTRA = ("window",)   # extra fields not shown as columns (the crop shows the window)

LEGEND = ("<p class='key'>outlines: <span style='background:#28dc50'></span>mask "
          "<span style='background:#3c8cff'></span>initial pose <span style='background:#ff2828'></span>"
          "refined pose</p>")


def extra_keys(rows: Sequence[CarRow]) -> list[str]:
    """The per-car extra fields found in the run (association, mesh choice, ...), first seen first."""
    keys: dict[str, None] = {}
    for r in rows:
        for k in r.extra:
            if k not in HIDDEN_EXTRA:
                keys.setdefault(k, None)
    return list(keys)


def lighting_fields(result: ImageResult) -> dict:
    """Every field of the image's learned lighting (whatever LightingResult holds)."""
    li = result.lighting
    if li is None:
        return {}
    return li.to_dict() if hasattr(li, "to_dict") else asdict(li)


def _error_cells(err: dict | None) -> str:
    if err is None:
        return "<td></td>" * 4
    return (cell(err["rotation_deg_before"], 2) + cell(err["rotation_deg_after"], 2)
            + cell(err["translation_rel_before"], 2, 100) + cell(err["translation_rel_after"], 2, 100))


ERROR_HEADERS = ["rot. err before (deg)", "rot. err after (deg)", "transl. err before (%)",
                 "transl. err after (%)"]


def _car_cells(r: CarRow, extras: Sequence[str]) -> str:
    delta = (r.iou_after - r.iou_before) if r.iou_after is not None and r.iou_before is not None else None
    return (f"<td>{r.index}</td>" + cell(r.status) + f"<td>{r.model_type}</td>" + cell(r.depth_m, 1)
            + cell(r.iou_before) + cell(r.iou_after) + cell(delta) + cell(r.rotation_change_deg, 2)
            + cell(r.depth_change_rel, 2, 100) + f"<td>{r.iterations}</td>" + cell(r.seconds, 2)
            + "".join(cell(None, text=esc(compact(r.extra[k])) if k in r.extra else "") for k in extras))


CAR_HEADERS = ["car", "status", "model", "depth (m)", "IoU before", "IoU after", "IoU gain", "rot. change (deg)",
               "depth change (%)", "iterations", "seconds"]


def photo_page(result: ImageResult, rows: Sequence[CarRow], assets: Assets, errors: Mapping[int, dict] | None,
               key: str) -> str:
    """The page of one photograph, written to report/images/<name>.html (assets in <name>/)."""
    name = page_name(result.image_id)
    extras = extra_keys(rows)
    parts = ["<p><a href='../../report.html'>summary</a> · <a href='../photos.html'>photographs</a> · "
             "<a href='../cars.html'>cars</a></p>",
             f"<h1>{esc(result.image_id)}</h1>",
             f"<p>status <b class='{'bad' if result.status != 'ok' else ''}'>{esc(result.status)}</b>, "
             f"{len(result.cars)} cars, {number(result.seconds, 1)} s, attempts {result.attempts}</p>"]
    if result.error:
        parts.append(f"<p class='bad'>{esc(result.error)}</p>")
    light = lighting_fields(result)
    if light:
        parts.append("<p>lighting: " + ", ".join(f"{esc(k)} {esc(compact(v))}" for k, v in light.items()) + "</p>")
    if assets.photo:
        parts.append(LEGEND + f"<p><img src='{href(name, assets.photo)}' alt='{esc(result.image_id)}' "
                     "style='max-width:100%'></p>")
    for note in assets.notes:
        parts.append(f"<p class='muted'>{esc(note)}</p>")
    headers = ["before | after", *CAR_HEADERS, *extras, *(ERROR_HEADERS if errors is not None else [])]
    body = []
    for r in rows:
        crop = assets.crops.get(r.index)
        img = f"<img src='{href(name, crop)}' alt='car {r.index}' loading='lazy'>" if crop else ""
        err = _error_cells(errors.get(r.index)) if errors is not None else ""
        body.append(f"<tr id='car{r.index}'><td class='t'>{img}</td>{_car_cells(r, extras)}{err}</tr>")
    parts.append(table("cars", headers, body, "filter: text, or e.g. IoU after < 0.7"))
    return page(f"nmrlight: {result.image_id}", "\n".join(parts), key=key, script=True)


def photos_page(results: Sequence[ImageResult], rows_by_image: Mapping[str, Sequence[CarRow]],
                errors: Mapping[str, Mapping[int, dict]] | None) -> str:
    """report/photos.html: one row a photograph, linking to its page."""
    headers = ["photograph", "status", "cars", "optimised", "mean IoU before", "mean IoU after", "lowest IoU after",
               "largest rot. change (deg)", "seconds", "ambient", "directional"]
    if errors is not None:
        headers += ["median rot. err after (deg)", "median transl. err after (%)"]
    headers.append("error")
    body = []
    for result in results:
        rows = rows_by_image.get(result.image_id, [])
        done = [r for r in rows if r.optimised and r.iou_before is not None]
        moved = [r.rotation_change_deg for r in rows if r.optimised]

        def mean(values):
            return sum(values) / len(values) if values else None

        li = result.lighting
        link = f"<a href='images/{href(page_name(result.image_id))}.html'>{esc(result.image_id)}</a>"
        cells = (cell(result.image_id, text=link) + cell(result.status) + f"<td>{len(rows)}</td>"
                 + f"<td>{sum(r.optimised for r in rows)}</td>"
                 + cell(mean([r.iou_before for r in done])) + cell(mean([r.iou_after for r in done]))
                 + cell(min((r.iou_after for r in done), default=None)) + cell(max(moved, default=None), 2)
                 + cell(result.seconds, 1) + cell(li.ambient if li else None) + cell(li.directional if li else None))
        if errors is not None:
            errs = list(errors.get(result.image_id, {}).values())
            cells += cell(_median([e["rotation_deg_after"] for e in errs]), 2)
            cells += cell(_median([e["translation_rel_after"] for e in errs]), 2, 100)
        cells += cell(result.error or "")
        body.append(f"<tr>{cells}</tr>")
    parts = ["<p><a href='../report.html'>summary</a> · <a href='cars.html'>cars</a></p>",
             f"<h1>Photographs ({len(results)})</h1>",
             table("photos", headers, body, "filter: text, or e.g. lowest IoU after < 0.5")]
    return page("nmrlight: photographs", "\n".join(parts), script=True)


def cars_page(rows: Sequence[CarRow], errors: Mapping[str, Mapping[int, dict]] | None) -> str:
    """report/cars.html: one row a car, linking to its photograph's page."""
    extras = extra_keys(rows)
    headers = ["photograph", *CAR_HEADERS, *extras, *(ERROR_HEADERS if errors is not None else [])]
    body = []
    for r in rows:
        link = f"<a href='images/{href(page_name(r.image_id))}.html#car{r.index}'>{esc(r.image_id)}</a>"
        err = _error_cells(errors.get(r.image_id, {}).get(r.index)) if errors is not None else ""
        body.append(f"<tr>{cell(r.image_id, text=link)}{_car_cells(r, extras)}{err}</tr>")
    parts = ["<p><a href='../report.html'>summary</a> · <a href='photos.html'>photographs</a></p>",
             f"<h1>Cars ({len(rows)})</h1>",
             table("cars", headers, body, "filter: text (e.g. kept initial), or e.g. rot. change > 10")]
    return page("nmrlight: cars", "\n".join(parts), script=True)


def _median(values: list[float]) -> float | None:
    if not values:
        return None
    s = sorted(values)
    n = len(s)
    return s[n // 2] if n % 2 else 0.5 * (s[n // 2 - 1] + s[n // 2])
