"""`nmrlight evaluate`: the competition mAP of a predictions file against ground truth."""

from __future__ import annotations

import json
from pathlib import Path

import typer


def _fmt(value: float | None, spec: str) -> str:
    return "-" if value is None or value != value else format(value, spec)


def register(app: typer.Typer) -> None:
    @app.command()
    def evaluate(
        gt: Path = typer.Option(..., "--gt", help="Ground-truth poses, train format."),
        pred: Path = typer.Option(..., "--pred", help="Predicted poses, train format (optional Confidence)."),
        as_json: bool = typer.Option(False, "--json", help="Print JSON (key 'map' holds the mAP)."),
        submission: bool = typer.Option(False, "--submission",
                                        help="PRED is in the Kaggle submission format."),
    ) -> None:
        """Score predictions with the official mAP (relative translation, folded rotation distance)."""
        from nmrlight.io.poses import read_poses
        from nmrlight.metric import evaluate as run_evaluation

        result = run_evaluation(read_poses(gt), read_poses(pred, submission=submission))
        if as_json:
            typer.echo(json.dumps(result.to_dict()))
            return
        from rich.console import Console
        from rich.table import Table

        table = Table(title=f"mAP {result.map:.4f}")
        table.add_column("translation <")
        table.add_column("rotation <")
        table.add_column("TP", justify="right")
        table.add_column("AP", justify="right")
        for tr, rot, tp, ap in zip(result.translation_thresholds, result.rotation_thresholds_deg,
                                   result.tp, result.ap, strict=True):
            table.add_row(f"{tr:g}", f"{rot:g} deg", str(tp), f"{ap:.4f}")
        console = Console()
        console.print(table)
        console.print(
            f"images {result.n_images}, ground-truth cars {result.n_gt}, predictions {result.n_pred}, "
            f"paired {result.n_matched}\n"
            f"median errors of paired cars: translation {_fmt(result.median_translation_rel, '.4f')} "
            f"relative ({_fmt(result.median_translation_m, '.3f')} m), rotation "
            f"{_fmt(result.median_rotation_deg, '.2f')} deg metric, "
            f"{_fmt(result.median_geodesic_deg, '.2f')} deg geodesic")
