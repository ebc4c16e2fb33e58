"""`nmrlight synth`: write a synthetic data folder (images, masks, meshes, truth, predictions).

Besides, what a detector and a segmenter would write: predictions_submission.csv, coco/instances.json,
coco/results.json (and coco/truth.json, which mask is which car); layout in nmrlight.synth.coco.
Presets (nmrlight.synth.presets): default (the original look), kaggle (the real data's statistics,
realistic materials, cluttered street, a real detector's errors), crowded (20-44 cars).
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import typer


def register(app: typer.Typer) -> None:
    @app.command()
    def synth(
        out: Path = typer.Argument(..., help="Output data folder (created)."),
        images: int = typer.Option(10, "--images", "-n", help="Number of pictures."),
        seed: int = typer.Option(0, "--seed", help="Random seed; the same seed gives the same data."),
        preset: str = typer.Option("default", "--preset",
                                   help="default | kaggle (real-data statistics) | crowded (20-44 cars)."),
        materials: str = typer.Option(None, "--materials",
                                      help="lambert (uniform paint) | realistic (glass, trim, specular); "
                                           "default: lambert for the default preset, realistic otherwise."),
        scale: float = typer.Option(1.0, "--scale", help="Image scale, e.g. 0.25 for 846x678 pictures."),
        rgb: bool = typer.Option(False, "--rgb", help="Colour pictures (default grayscale)."),
        cars: float = typer.Option(None, "--cars", help="Mean number of cars a picture (default preset: 10)."),
        models: str = typer.Option("", "--models", help="Comma-separated model ids (default a mix)."),
        heading_sigma: float = typer.Option(None, "--heading-sigma", help="Prediction heading error, deg."),
        depth_sigma: float = typer.Option(None, "--depth-sigma", help="Prediction relative depth error."),
        lateral_sigma: float = typer.Option(None, "--lateral-sigma", help="Relative lateral error."),
        miss_rate: float = typer.Option(None, "--miss-rate", help="Fraction of cars the detector misses."),
        false_positives: float = typer.Option(None, "--false-positives", help="Mean false detections."),
        exact_masks: bool = typer.Option(False, "--exact-masks", help="Masks without detector edge errors."),
        masks_missing: float = typer.Option(0.08, "--masks-missing",
                                            help="Segmenter: fraction of detected cars without a COCO mask."),
        masks_extra: float | None = typer.Option(None, "--masks-extra", min=0.0, max=1.0, help=(
            "Segmenter: masks of the cars the detector missed as this fraction of the other masks, whatever "
            "their size (the older model). Default: each found by its visible pixels, as a segmenter would.")),
    ) -> None:
        """Synthesise a data set like the Kaggle one, with ground truth and noisy predictions."""
        from rich.progress import Progress

        from nmrlight.errors import NmrlightError
        from nmrlight.synth import SegmenterModel, synthesize
        from nmrlight.synth.presets import preset as make_preset

        config, errors = make_preset(preset, scale=scale, rgb=rgb, materials=materials)
        try:
            model_types = tuple(int(m) for m in models.split(",") if m.strip())
        except ValueError:
            raise NmrlightError(f"--models must be comma-separated integers, got {models!r}") from None
        if model_types:
            config = replace(config, model_types=model_types)
        if cars is not None:
            config = replace(config, cars_mean=cars)
        config = replace(config, mask_errors=not exact_masks)
        given = {"heading_sigma_deg": heading_sigma, "depth_sigma": depth_sigma, "lateral_sigma": lateral_sigma,
                 "miss_rate": miss_rate, "false_positives": false_positives}
        errors = replace(errors, **{k: v for k, v in given.items() if v is not None})
        with Progress(transient=True) as progress:
            task = progress.add_task("synthesising", total=images)
            summary = synthesize(out, images, seed, config, errors,
                                 progress=lambda k: progress.advance(task, k),
                                 segmenter=SegmenterModel(missing_rate=masks_missing, extra_rate=masks_extra))
        typer.echo(f"wrote {len(summary.image_ids)} pictures, {summary.cars} cars "
                   f"({summary.visible_cars} visible, {summary.unannotated_cars} unannotated) to "
                   f"{summary.out_dir} in {summary.seconds:.1f} s")
