"""`nmrlight ablation`: compare loss terms and lighting modes, or (--parts global) each part of the
global stage switched off, on synthetic scenes (markdown or JSON)."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import typer


def register(app: typer.Typer) -> None:
    @app.command()
    def ablation(
        images: int = typer.Option(4, "--images", "-n", help="Synthetic pictures."),
        seed: int = typer.Option(0, "--seed", help="Random seed of the synthetic data."),
        scale: float = typer.Option(1.0, "--scale", help="Image scale of the synthetic data."),
        cars: float = typer.Option(10.0, "--cars", help="Mean cars a picture."),
        near: float = typer.Option(40.0, "--near", help="Depth (m) splitting near from far cars."),
        data: Path | None = typer.Option(None, "--data", help="Use this synthetic data folder (train.csv "
                                         "and predictions.csv inside) instead of making one."),
        threads: int = typer.Option(1, "--threads", help="torch threads."),
        as_json: bool = typer.Option(False, "--json", help="Print JSON instead of a markdown table."),
        setting: list[str] = typer.Option([], "--setting", help="Run only this setting (repeatable); "
                                          "default all."),
        parts: str = typer.Option("losses", "--parts", help="losses: loss terms and lighting (local "
                                  "refinement); global: the default and each part of issue 11 switched off; "
                                  "shading: the shading term with the global stage on (issue 12)."),
        preset: str = typer.Option("default", "--preset", help="Preset of the synthetic data made "
                                   "(nmrlight synth --preset)."),
    ) -> None:
        """Median errors, mAP and % of cars closer to the truth for each loss / lighting setting."""
        from dataclasses import replace

        import torch

        from nmrlight.io.dataset import DataFolder
        from nmrlight.io.poses import read_poses
        from nmrlight.refine.ablation import (
            GLOBAL_SETTINGS,
            SETTINGS,
            SHADING_SETTINGS,
            markdown_table,
            read_pairing,
            run_ablation,
        )
        from nmrlight.refine.config import RefineConfig
        from nmrlight.synth import synthesize
        from nmrlight.synth.presets import preset as make_preset

        tables = {"losses": SETTINGS, "global": GLOBAL_SETTINGS, "shading": SHADING_SETTINGS}
        if parts not in tables:
            raise typer.BadParameter(f"choose losses, global or shading, got {parts!r}", param_hint="--parts")
        table = tables[parts]
        chosen = dict(table)
        if setting:
            unknown = [name for name in setting if name not in table]
            if unknown:
                raise typer.BadParameter(f"unknown setting {unknown[0]!r}; choose from: "
                                         + "; ".join(table), param_hint="--setting")
            chosen = {name: table[name] for name in setting}
        torch.set_num_threads(threads)
        tmp = None
        if data is None:
            tmp = tempfile.TemporaryDirectory(prefix="nmrlight-ablation-")
            data = Path(tmp.name)
            config, errors = make_preset(preset, scale=scale)
            if preset == "default":
                config = replace(config, cars_mean=cars)
            synthesize(data, images, seed, config, errors)
        try:
            folder = DataFolder(data)
            truth = read_poses(data / "train.csv")
            predictions = read_poses(data / "predictions.csv")
            rows = run_ablation(folder, truth, predictions, RefineConfig(threads=threads), chosen, near,
                                pairing=read_pairing(data))
        finally:
            if tmp is not None:
                tmp.cleanup()
        if as_json:
            typer.echo(json.dumps([r.to_dict() for r in rows], indent=1))
        else:
            typer.echo(markdown_table(rows))
