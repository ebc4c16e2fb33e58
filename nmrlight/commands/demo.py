"""`nmrlight demo`: synthesise a few pictures, refine them from real-detector-style inputs, show the gain.

The default path is what a competition pipeline hands over (docs/inputs.md): the detector's Kaggle
submission file (no model ids, so meshes are chosen by render-and-compare) and the segmenter's COCO
results file (unordered, scored, coarse masks, so they are associated with the cars first), scored
against the synthetic truth (train.csv). `--input labels` takes the older path instead: train-format
predictions with their model ids and ordered label masks.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import typer

from nmrlight.refine.config import RefineConfig


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
        input_path: str = typer.Option("coco", "--input", help="coco: submission file + COCO results masks "
                                       "(association, mesh choice); labels: train format + label masks."),
        mesh_candidates: int = typer.Option(RefineConfig.mesh_candidates, "--mesh-candidates", min=1,
                                            help="Meshes refined in full per car (coco input; see nmrlight "
                                            "refine): the best of the demo's 8 after each is screened."),
    ) -> None:
        """Synthesise a small data set, refine it with learned lighting, print before/after metrics."""
        from rich.console import Console
        from rich.table import Table

        from nmrlight.errors import NmrlightError
        from nmrlight.io.poses import read_poses
        from nmrlight.metric import evaluate
        from nmrlight.refine.result import ImageResult
        from nmrlight.refine.runner import RunOptions, run_refine
        from nmrlight.synth import SynthConfig, synthesize

        if input_path not in ("coco", "labels"):
            raise NmrlightError(f"demo: --input must be coco or labels, got {input_path!r}")
        console = Console()
        start = time.perf_counter()
        data_dir, refined_dir = out / "data", out / "refined"
        summary = synthesize(data_dir, images, seed, SynthConfig(scale=scale, cars_mean=cars))
        console.print(f"synthesised {len(summary.image_ids)} pictures, {summary.cars} cars, in "
                      f"{summary.seconds:.1f} s -> {data_dir}")
        if input_path == "coco":
            predictions = data_dir / "predictions_submission.csv"
            masks = data_dir / "coco" / "results.json"
            config = RefineConfig(threads=1, masks_file=str(masks),
                                  coco_images=str(data_dir / "coco" / "instances.json"),
                                  mesh_candidates=mesh_candidates)
            console.print(f"path: {predictions.name} (submission format, no model ids) + {masks.name} (COCO "
                          f"results, {len(json.loads(masks.read_text()))} unordered masks) -> association "
                          f"-> mesh choice (all meshes screened, {mesh_candidates} refined a car) -> refinement")
        else:
            predictions = data_dir / "predictions.csv"
            config = RefineConfig(threads=1)
            console.print(f"path: {predictions.name} (train format, model ids) + masks/ (ordered label images) "
                          f"-> refinement")
        fmt = "submission" if input_path == "coco" else "train"
        run = run_refine(RunOptions(data=data_dir, predictions=predictions, out=refined_dir, config=config,
                                    workers=workers, progress=True, force=True, format=fmt))
        truth = read_poses(data_dir / "train.csv")
        before = evaluate(truth, read_poses(predictions, submission=fmt == "submission"))
        after = evaluate(truth, read_poses(refined_dir / "refined.csv"))
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
        if input_path == "coco":
            from nmrlight.refine.inputs_eval import summarise

            rows = summarise(data_dir, "submission", refined_dir)
            whole = rows[-1]
            if whole["association"] is not None:
                bands = ", ".join(f"{r['band']}: {round(r['association'] * r['cars_with_mask'])} of "
                                  f"{r['cars_with_mask']}" for r in rows[:-1] if r["association"] is not None)
                console.print(f"association: {100 * whole['association']:.1f} % of the {whole['cars_with_mask']} "
                              f"detected cars with a segmenter mask got their own mask ({bands})")
            if whole["exact_model"] is not None:
                console.print(f"mesh choice: the true model for {100 * whole['exact_model']:.0f} % of the "
                              f"{whole['cars_chosen']} cars that chose")
        seconds = [c.seconds for c in done]
        if seconds:
            console.print(f"{len(done)} cars refined, {sum(seconds) / len(seconds):.2f} s a car on average "
                          f"({run.workers} worker(s)); demo took {time.perf_counter() - start:.0f} s")
        upload = f"{refined_dir / 'submission.csv'}, " if input_path == "coco" else ""
        console.print(f"outputs: {refined_dir / 'refined.csv'}, {upload}{refined_dir / 'lighting.csv'} (true: "
                      f"{data_dir / 'lighting.csv'}), {refined_dir / 'report.json'}")
        console.print(f"report: open {(refined_dir / 'report.html').resolve().as_uri()} (rebuild with "
                      f"`nmrlight report {refined_dir} --gt {data_dir / 'train.csv'}`)")
