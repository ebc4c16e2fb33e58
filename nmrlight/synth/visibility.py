"""visibility.csv of the street presets: how much of each truth car the picture shows.

One row a car of train.csv: ImageId, car_index (0-based position in its row), visible_pixels,
unoccluded_pixels (the car rendered alone, inside the image), visible_fraction (their ratio, 0 when
the car has no pixels) and depth (m). `read_visibility` groups it so that accuracy can be reported by
visible fraction: `band` names the band (< 30 %, 30-70 %, > 70 %) of a fraction.
"""

from __future__ import annotations

import csv
from pathlib import Path

from nmrlight.errors import NmrlightError

BANDS = ((0.0, 0.3, "<30%"), (0.3, 0.7, "30-70%"), (0.7, 1.01, ">70%"))


def band(fraction: float) -> str:
    """The visible-fraction band of `fraction` in [0, 1]: "<30%", "30-70%" or ">70%"."""
    for lo, hi, name in BANDS:
        if lo <= fraction < hi:
            return name
    raise NmrlightError(f"visible fraction must lie in [0, 1], got {fraction}")


def read_visibility(path: str | Path) -> dict[str, list[float]]:
    """{ImageId: visible fraction of each truth car, in train.csv order} from a visibility.csv."""
    path = Path(path)
    if not path.is_file():
        raise NmrlightError(f"visibility {path}: file not found (written by the kaggle and crowded presets)")
    out: dict[str, list[float]] = {}
    with path.open(newline="") as handle:
        reader = csv.DictReader(handle)
        missing = {"ImageId", "car_index", "visible_fraction"} - set(reader.fieldnames or [])
        if missing:
            raise NmrlightError(f"visibility {path}: missing columns {sorted(missing)}")
        for line, row in enumerate(reader, start=2):
            try:
                index, fraction = int(row["car_index"]), float(row["visible_fraction"])
            except ValueError:
                raise NmrlightError(f"visibility {path}, line {line}: car_index and visible_fraction must be "
                                    f"numbers, got {row['car_index']!r}, {row['visible_fraction']!r}") from None
            cars = out.setdefault(row["ImageId"], [])
            if index != len(cars):
                raise NmrlightError(f"visibility {path}, line {line}: car_index {index} out of order "
                                    f"(expected {len(cars)})")
            cars.append(fraction)
    return out
