"""The summary page's plots, drawn with matplotlib (Agg, no display) into small PNG files."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from nmrlight.report.summary import CarRow

DPI = 72
BEFORE, AFTER = "#3c8cff", "#e02828"   # the outline colours of the pages: blue before, red after


def shaded_sphere(ambient: float, directional: float, direction: Sequence[float], size: int = 96) -> np.ndarray:
    """(size, size) brightness of a white sphere under NMR lighting l_a + l_d max(0, n . d), seen by the
    camera (x right, y down, looking along +z); NaN outside the sphere."""
    d = np.asarray(direction, dtype=np.float64)
    d = d / (np.linalg.norm(d) or 1.0)
    c = (np.arange(size) + 0.5) / size * 2 - 1
    x, y = np.meshgrid(c, c)
    r2 = x * x + y * y
    z = -np.sqrt(np.clip(1 - r2, 0, None))          # the visible half faces the camera
    shade = ambient + directional * np.clip(x * d[0] + y * d[1] + z * d[2], 0, None)
    return np.where(r2 <= 1, shade, np.nan)


def _figure(width: float, height: float, panels: int = 1):
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, panels, figsize=(width, height), dpi=DPI, squeeze=False)
    return plt, fig, list(axes[0])


def _save(plt, fig, path: Path) -> str:
    fig.tight_layout()
    fig.savefig(path, dpi=DPI, format="png")
    plt.close(fig)
    return path.name


def _hist_pair(ax, before: list[float], after: list[float], bins, label: str) -> None:
    if before:
        ax.hist(before, bins=bins, histtype="step", color=BEFORE, linewidth=1.5, label="before")
    if after:
        ax.hist(after, bins=bins, histtype="step", color=AFTER, linewidth=1.5, label="after")
    ax.set_xlabel(label)
    ax.set_ylabel("cars")
    if before or after:
        ax.legend(frameon=False, fontsize=8)


def plot_iou(rows: Sequence[CarRow], path: Path) -> str:
    """Histogram of the mask overlap (IoU) before and after, over the optimised cars."""
    plt, fig, (ax,) = _figure(4.2, 2.8)
    done = [r for r in rows if r.optimised and r.iou_before is not None]
    _hist_pair(ax, [r.iou_before for r in done], [r.iou_after for r in done], np.linspace(0, 1, 41),
               "IoU with the mask")
    return _save(plt, fig, path)


def plot_movement(rows: Sequence[CarRow], path: Path) -> str:
    """How far the optimised cars moved: rotation change (deg) and depth change (%)."""
    plt, fig, (a, b) = _figure(7.0, 2.6, 2)
    done = [r for r in rows if r.optimised]
    rot = [r.rotation_change_deg for r in done]
    dep = [100 * r.depth_change_rel for r in done]
    if rot:
        a.hist(rot, bins=np.linspace(0, max(1.0, float(np.percentile(rot, 99))), 40), color="#777")
    a.set_xlabel("rotation change (deg)")
    a.set_ylabel("cars")
    if dep:
        lim = max(1.0, float(np.percentile(np.abs(dep), 99)))
        b.hist(dep, bins=np.linspace(-lim, lim, 41), color="#777")
    b.set_xlabel("depth change (%)")
    return _save(plt, fig, path)


def plot_time(rows: Sequence[CarRow], path: Path) -> str:
    """Histogram of the optimisation time per car."""
    plt, fig, (ax,) = _figure(4.2, 2.6)
    secs = [r.seconds for r in rows if r.optimised]
    if secs:
        ax.hist(secs, bins=40, color="#777")
    ax.set_xlabel("seconds per car")
    ax.set_ylabel("cars")
    return _save(plt, fig, path)


def plot_lights(lights: Sequence[tuple[float, float, Sequence[float]]], typical: tuple | None, path: Path) -> str:
    """The typical learned light as a shaded sphere, and every photograph's light direction (dx, dy)."""
    plt, fig, (a, b) = _figure(6.0, 2.8, 2)
    if typical is not None:
        a.imshow(shaded_sphere(*typical), cmap="gray", vmin=0, vmax=1)
    a.set_axis_off()
    a.set_title("median light", fontsize=9)
    if lights:
        d = np.asarray([li[2] for li in lights], dtype=np.float64)
        d = d / np.maximum(np.linalg.norm(d, axis=1, keepdims=True), 1e-12)
        b.scatter(d[:, 0], d[:, 1], s=8, c=[li[1] for li in lights], cmap="viridis", vmin=0, vmax=1)
    b.add_patch(plt.Circle((0, 0), 1, fill=False, color="#aaa"))
    b.set_xlim(-1.05, 1.05)
    b.set_ylim(1.05, -1.05)                    # y down, as in the image
    b.set_aspect("equal")
    b.set_xlabel("dx (right)")
    b.set_ylabel("dy (down)")
    b.set_title("light directions (colour: l_d)", fontsize=9)
    return _save(plt, fig, path)


def plot_accuracy(errors: Sequence[dict], path: Path) -> str:
    """Cumulative distributions of the rotation and translation errors, before and after."""
    plt, fig, (a, b) = _figure(7.0, 2.6, 2)
    for ax, key, scale, label in ((a, "rotation_deg", 1.0, "rotation error (deg)"),
                                  (b, "translation_rel", 100.0, "translation error (%)")):
        for when, colour in (("before", BEFORE), ("after", AFTER)):
            v = np.sort([scale * e[f"{key}_{when}"] for e in errors])
            if v.size:
                ax.step(v, np.arange(1, v.size + 1) / v.size, where="post", color=colour, label=when)
        ax.set_xscale("log")
        ax.set_xlabel(label)
        ax.set_ylabel("fraction of cars")
        if errors:
            ax.legend(frameon=False, fontsize=8)
    return _save(plt, fig, path)
