"""`nmrlight lighting-eval`: learned lighting against the truth, by material model and number of cars."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import typer


def _counts(text: str) -> tuple[int, ...]:
    """'1,3,all' -> (0, 1, 3): 0 stands for all usable cars."""
    counts = set()
    for token in (x.strip().lower() for x in text.split(",")):
        if not token:
            continue
        try:
            n = 0 if token == "all" else int(token)
        except ValueError:
            raise typer.BadParameter(f"expected comma-separated integers or 'all', got {text!r}",
                                     param_hint="--cars") from None
        if token != "all" and n < 1:
            raise typer.BadParameter(f"car counts must be at least 1 (or 'all'), got {text!r}", param_hint="--cars")
        counts.add(n)
    if not counts:
        raise typer.BadParameter(f"no car count in {text!r}", param_hint="--cars")
    return tuple(sorted(counts))


def register(app: typer.Typer) -> None:
    @app.command("lighting-eval")
    def lighting_eval(
        data: Path = typer.Argument(..., help="Data folder with images/, masks/, car_models_json/ (made with "
                                    "--synth when given)."),
        poses: Path | None = typer.Option(None, "--poses", help="Poses of the cars (default DATA/train.csv: "
                                          "the truth, so pose errors do not mix in)."),
        truth: Path | None = typer.Option(None, "--truth-lighting", help="True lighting (default DATA/lighting.csv)."),
        match: bool = typer.Option(False, "--match-predictions", help="The masks follow predictions.csv "
                                   "(a detector with misses, e.g. synth's kaggle preset): use for each "
                                   "prediction the nearest true car of --poses."),
        cars: str = typer.Option("1,3,8,all", "--cars", help="Numbers of cars to fit on, comma separated "
                                 "('all': every usable car of the photograph)."),
        model: list[str] = typer.Option([], "--model", help="Only this lighting model (repeatable); default all."),
        synth: int = typer.Option(0, "--synth", help="First synthesise this many pictures into DATA."),
        seed: int = typer.Option(0, "--seed", help="Seed of --synth."),
        scale: float = typer.Option(0.5, "--scale", help="Image scale of --synth."),
        materials: str = typer.Option("realistic", "--materials", help="Car materials of --synth: "
                                      "'lambert' (synth's own) or 'realistic' (glass, trim, highlights, shadows)."),
        out: Path | None = typer.Option(None, "--out", help="Write the per-photograph rows here (CSV)."),
        as_json: bool = typer.Option(False, "--json", help="Print the rows as JSON instead of tables."),
    ) -> None:
        """Direction and ambient-share errors of the learned lighting, and how its self-consistency tracks them."""
        import torch

        from nmrlight.errors import NmrlightError
        from nmrlight.io.dataset import DataFolder
        from nmrlight.io.poses import read_poses
        from nmrlight.refine.config import RefineConfig
        from nmrlight.refine.lighting.evaluate import (
            MODELS,
            evaluate_lighting,
            summary_table,
            tracking_table,
            truth_in_prediction_order,
        )
        from nmrlight.refine.lighting.realistic import paint_realistic, read_lighting_csv

        counts = _counts(cars)
        unknown = [m for m in model if m not in MODELS]
        if unknown:
            raise typer.BadParameter(f"unknown model {unknown[0]!r}; choose from: " + "; ".join(MODELS),
                                     param_hint="--model")
        chosen = {m: MODELS[m] for m in model} if model else MODELS
        torch.set_num_threads(1)
        if synth:
            from nmrlight.synth import SynthConfig, synthesize

            if materials not in ("lambert", "realistic"):
                raise NmrlightError(f"lighting-eval: --materials must be lambert or realistic, got {materials!r}")
            if data.exists() and any(data.iterdir()):
                raise NmrlightError(f"lighting-eval: {data} is not empty; --synth writes a new folder")
            synthesize(data, synth, seed, SynthConfig(scale=scale, jpeg=False))
            if materials == "realistic":
                paint_realistic(data, seed)
        folder = DataFolder(data)
        pose_rows = read_poses(poses or data / "train.csv")
        if match:
            pose_rows = truth_in_prediction_order(pose_rows, read_poses(data / "predictions.csv"))
        true_light = read_lighting_csv(truth or data / "lighting.csv")
        rows = evaluate_lighting(folder, pose_rows, true_light, counts, chosen, RefineConfig(threads=1))
        if out is not None:
            out.parent.mkdir(parents=True, exist_ok=True)
            with out.open("w", newline="") as handle:
                fields = list(rows[0].to_dict()) if rows else ["image_id"]
                writer = csv.DictWriter(handle, fieldnames=fields, lineterminator="\n")
                writer.writeheader()
                for row in rows:
                    writer.writerow(row.to_dict())
        if as_json:
            typer.echo(json.dumps([r.to_dict() for r in rows], indent=1))
            return
        typer.echo(summary_table(rows))
        for name in chosen:
            if any(r.model == name and r.consistency_deg is not None for r in rows):
                typer.echo(f"\nself-consistency ({name}):\n")
                typer.echo(tracking_table(rows, name))
