"""`nmrlight demo`: synthesise a few pictures, refine them, and show before/after numbers."""

from __future__ import annotations

import time
from pathlib import Path

import typer


def _row(name: str, result, iou: float | None) -> list[str]:
    return [name, f"{result.map:.3f}", f"{result.median_rotation_deg:.2f}",
            f"{100 * result.median_translation_rel:.2f}", "" if iou is None else f"{iou:.3f}"]


def register(app: typer.Typer) -> None:
    @app.command()
    def demo(
        out: Path = typer.Option(Path("demo_out"), "--out", help="Output folder (data/ and refined/ inside)."),
        images: int = typer.Option(4, "--images", "-n", help="Synthetic pictures."),
        scale: float = typer.Option(1.0, "--scale", help="Image scale of the synthetic pictures."),
        cars: float = typer.Option(8.0, "--cars", help="Mean cars a picture."),
        seed: int = typer.Option(0, "--seed", help="Random seed."),
        workers: int = typer.Option(2, "--workers", help="Worker processes."),
    ) -> None:
        """Synthesise a small data set, refine it with learned lighting, print before/after metrics."""
        from rich.console import Console
        from rich.table import Table

        from nmrlight.io.poses import read_poses
        from nmrlight.metric import evaluate
        from nmrlight.refine.config import RefineConfig
        from nmrlight.refine.result import ImageResult
        from nmrlight.refine.runner import RunOptions, run_refine
        from nmrlight.synth import SynthConfig, synthesize

        console = Console()
        start = time.perf_counter()
        data_dir, refined_dir = out / "data", out / "refined"
        summary = synthesize(data_dir, images, seed, SynthConfig(scale=scale, cars_mean=cars))
        console.print(f"synthesised {len(summary.image_ids)} pictures, {summary.cars} cars, in "
                      f"{summary.seconds:.1f} s -> {data_dir}")
        run = run_refine(RunOptions(data=data_dir, predictions=data_dir / "predictions.csv", out=refined_dir,
                                    config=RefineConfig(threads=1), workers=workers, progress=True,
                                    force=True))
        truth = read_poses(data_dir / "train.csv")
        before = evaluate(truth, read_poses(data_dir / "predictions.csv"))
        after = evaluate(truth, read_poses(refined_dir / "refined.csv"))
        import json

        report = json.loads((refined_dir / "report.json").read_text())
        results = [ImageResult.from_dict(d) for d in report["images"]]
        done = [c for r in results for c in r.cars if c.iou_after is not None]
        iou_before = sum(c.iou_before for c in done) / len(done) if done else None
        iou_after = sum(c.iou_after for c in done) / len(done) if done else None
        table = Table(title="nmrlight demo: synthetic scenes, before and after refinement")
        for column in ("", "mAP", "median rot. error (deg)", "median transl. error (%)", "mean IoU (refined cars)"):
            table.add_column(column, justify="right")
        table.add_row(*_row("predictions", before, iou_before))
        table.add_row(*_row("refined", after, iou_after))
        console.print(table)
        seconds = [c.seconds for c in done]
        if seconds:
            console.print(f"{len(done)} cars refined, {sum(seconds) / len(seconds):.2f} s a car on average "
                          f"({run.workers} worker(s)); demo took {time.perf_counter() - start:.0f} s")
        console.print(f"outputs: {refined_dir / 'refined.csv'}, {refined_dir / 'lighting.csv'} (true: "
                      f"{data_dir / 'lighting.csv'}), {refined_dir / 'report.json'}")
        console.print(f"report: open {(refined_dir / 'report.html').resolve().as_uri()} (rebuild with "
                      f"`nmrlight report {refined_dir} --gt {data_dir / 'train.csv'}`)")
