"""`nmrlight scale-bench`: data-set refinement throughput at 1..all local workers, on synthetic data.

Each setting refines the same synthetic pictures into a fresh output folder through the real runner
(process start-up and JIT warm-up included, as in a real run) and reports images and cars an hour,
an hour per core, CPU seconds a car, cars per CPU-hour (robust on a shared machine) and the parallel
efficiency against one worker on one core, with the deterministic defaults (one torch thread a worker;
"threads" are the compiled kernels' threads). `--markdown` prints the table and a projection for the
Kaggle test set (2,021 photographs, about 23,000 cars) ready to paste into docs/scaling.md.
"""

from __future__ import annotations

import json
import os
import resource
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import typer


@dataclass
class ScaleRow:
    """One measured setting."""

    workers: int
    threads: int            # numba (kernel) threads a worker; torch always uses one
    cores: int              # workers * threads
    seconds: float          # wall time of the run
    images: int
    cars: int
    images_per_hour: float
    cars_per_hour: float
    cars_per_hour_per_core: float
    efficiency: float       # cars/h per core relative to the 1 worker x 1 thread row
    cpu_seconds: float      # CPU time of this process and its (reaped) workers during the run
    cars_per_cpu_hour: float  # throughput per core actually received (robust on a shared machine)
    cpu_seconds_per_car: float
    cpu_efficiency: float   # cars per CPU-hour relative to the 1 worker x 1 thread row
    load_average: float     # 1-minute load average at the end (other users' work shows here)


def _settings(cores: int) -> list[tuple[int, int]]:
    """(workers, threads): one core, one worker on all cores, then 2, 4, ... workers up to all cores."""
    settings = [(1, 1)]
    if cores > 1:
        settings.append((1, cores))
    workers = 2
    while workers < cores:
        settings.append((workers, cores // workers))
        workers *= 2
    if cores > 1:
        settings.append((cores, 1))
    return settings


def _cpu_seconds() -> float:
    me, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime + children.ru_utime + children.ru_stime


def _parse_settings(text: str) -> list[tuple[int, int]]:
    from nmrlight.errors import NmrlightError

    out = []
    for item in text.split(","):
        try:
            workers, threads = (int(x) for x in item.lower().split("x"))
        except ValueError:
            raise NmrlightError(f"--settings: {item!r} is not WORKERSxTHREADS, e.g. 2x1") from None
        if workers < 1 or threads < 1:
            raise NmrlightError(f"--settings: {item!r} needs at least 1 worker and 1 thread")
        out.append((workers, threads))
    return out


def measure(data: Path, out_root: Path, settings: list[tuple[int, int]], config_kw: dict,
            limit: int | None = None) -> list[ScaleRow]:
    """Run the refinement once per (workers, threads) setting and time it."""
    from nmrlight.refine.config import RefineConfig
    from nmrlight.refine.runner import RunOptions, run_refine

    rows: list[ScaleRow] = []
    base = base_cpu = None
    for workers, threads in settings:
        out = out_root / f"w{workers}t{threads}"
        options = RunOptions(data=data, predictions=data / "predictions.csv", out=out,
                             config=RefineConfig(threads=threads, **config_kw), workers=workers, limit=limit,
                             progress=False)
        cpu0 = _cpu_seconds()
        start = time.perf_counter()
        summary = run_refine(options, log=lambda _m: None)
        seconds = time.perf_counter() - start
        cpu = _cpu_seconds() - cpu0
        hours = seconds / 3600.0
        per_core = summary.cars / hours / (workers * threads)
        per_cpu_hour = summary.cars / (cpu / 3600.0) if cpu > 0 else 0.0
        base = per_core if base is None else base
        base_cpu = per_cpu_hour if base_cpu is None else base_cpu
        rows.append(ScaleRow(workers, threads, workers * threads, seconds, summary.images, summary.cars,
                             summary.images / hours, summary.cars / hours, per_core, per_core / base,
                             cpu, per_cpu_hour, cpu / max(summary.cars, 1),
                             per_cpu_hour / base_cpu if base_cpu else 0.0, os.getloadavg()[0]))
        typer.echo(f"  {workers} worker(s) x {threads} thread(s): {summary.images} images, {summary.cars} cars, "
                   f"{seconds:.1f} s, {cpu:.1f} CPU s, load {os.getloadavg()[0]:.1f}", err=True)
    return rows


def projection(rows: list[ScaleRow], cars: int, cores: int) -> str:
    """Hours for `cars` on `cores` single-thread workers: the 1 x 1 row's cars per CPU-hour times the
    worst CPU efficiency of the multi-worker rows (1.0 when there are none), scaling assumed linear."""
    base = next((r for r in rows if r.workers == 1 and r.threads == 1), None)
    if base is None or base.cars_per_cpu_hour <= 0:
        return "projection needs a 1x1 row"
    parallel = [r.cpu_efficiency for r in rows if r.workers > 1]
    efficiency = min(parallel) if parallel else 1.0
    hours = cars / (cores * base.cars_per_cpu_hour * efficiency)
    return (f"{cars:,} cars on {cores} cores: {cars:,} / ({cores} x {base.cars_per_cpu_hour:,.0f} x "
            f"{efficiency:.2f}) h = {hours * 60:.1f} minutes of compute ({base.cpu_seconds_per_car:.2f} CPU-s a car, "
            f"efficiency {efficiency:.2f} from the multi-worker rows), "
            f"{cars * base.cpu_seconds_per_car / 3600:.1f} CPU-hours in all")


def markdown(rows: list[ScaleRow]) -> str:
    lines = ["| workers x threads | images | cars | wall s | CPU s | CPU s / car | cars per CPU-hour | "
             "efficiency (CPU) | load |", "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r.workers} x {r.threads} | {r.images} | {r.cars} | {r.seconds:.1f} | {r.cpu_seconds:.1f} | "
                     f"{r.cpu_seconds_per_car:.2f} | {r.cars_per_cpu_hour:,.0f} | {r.cpu_efficiency:.2f} | "
                     f"{r.load_average:.1f} |")
    return "\n".join(lines)


def register(app: typer.Typer) -> None:
    @app.command("scale-bench")
    def scale_bench(
        images: int = typer.Option(6, "--images", "-n", help="Synthetic pictures to refine per setting."),
        cars: float = typer.Option(10.0, "--cars", help="Mean cars a picture."),
        scale: float = typer.Option(0.25, "--scale", help="Picture scale (refinement windows are fixed-size)."),
        seed: int = typer.Option(0, "--seed", help="Synthetic data seed."),
        fast: bool = typer.Option(False, "--fast", help="A few iterations only (smoke test, not the real cost)."),
        data: Path | None = typer.Option(None, "--data", help="Use this data folder instead of synthesising."),
        settings: str | None = typer.Option(None, "--settings", help=(
            "Comma-separated WORKERSxTHREADS to measure, e.g. 1x1,2x1 (default: 1x1, 1xall, 2x.., allx1).")),
        as_json: bool = typer.Option(False, "--json", help="Print the rows as JSON."),
        as_markdown: bool = typer.Option(False, "--markdown", help="Print a markdown table and the projection."),
        project_cars: int = typer.Option(23000, "--project-cars", help="Cars of the projected job (Kaggle test set)."),
        project_cores: int = typer.Option(256, "--project-cores", help="Cores of the projected cluster."),
    ) -> None:
        """Throughput of `nmrlight refine` at 1 and more local workers (images and cars per hour per core)."""
        from nmrlight.refine.runner import cpu_cores
        from nmrlight.synth import SynthConfig, synthesize

        cores = cpu_cores()
        chosen = _parse_settings(settings) if settings else _settings(cores)
        config_kw = {"stages": ((32, "soft", 2.0, 3),), "large_stage": None, "lighting_size": 32} if fast else {}
        with tempfile.TemporaryDirectory(prefix="nmrlight-scale-") as tmp:
            root = Path(tmp)
            if data is None:
                data = root / "data"
                typer.echo(f"synthesising {images} pictures (scale {scale}, ~{cars:g} cars each)", err=True)
                synthesize(data, images, seed, SynthConfig(scale=scale, cars_mean=cars))
            rows = measure(data, root, chosen, config_kw, limit=images)
        outlook = projection(rows, project_cars, project_cores)
        if as_json:
            typer.echo(json.dumps({"cores": cores, "fast": fast, "rows": [asdict(r) for r in rows],
                                   "projection": outlook}, indent=1))
            return
        if as_markdown:
            typer.echo(f"`nmrlight scale-bench --images {images} --cars {cars:g} --scale {scale} --seed {seed}"
                       f"{' --fast' if fast else ''} --settings {','.join(f'{w}x{t}' for w, t in chosen)}` "
                       f"on {cores} cores:\n")
            typer.echo(markdown(rows))
            typer.echo(f"\nProjection: {outlook}")
            return
        from rich.console import Console
        from rich.table import Table

        table = Table(title=f"refine throughput on {cores} cores ({'fast' if fast else 'default'} settings)")
        for name in ("workers", "threads", "wall s", "images/h", "cars/h", "cars/h/core", "efficiency",
                     "CPU s", "CPU s/car", "cars/CPU-h", "load"):
            table.add_column(name, justify="right")
        for r in rows:
            table.add_row(str(r.workers), str(r.threads), f"{r.seconds:.1f}", f"{r.images_per_hour:.0f}",
                          f"{r.cars_per_hour:.0f}", f"{r.cars_per_hour_per_core:.0f}", f"{r.efficiency:.2f}",
                          f"{r.cpu_seconds:.0f}", f"{r.cpu_seconds_per_car:.2f}", f"{r.cars_per_cpu_hour:.0f}",
                          f"{r.load_average:.1f}")
        Console(width=140).print(table)
        typer.echo(f"projection: {outlook}")
