"""`nmrlight report OUT`: rebuild a run's report from OUT/images/*.json, without refining again."""

from __future__ import annotations

from pathlib import Path

import typer


def register(app: typer.Typer) -> None:
    @app.command()
    def report(
        out: Path = typer.Argument(..., help="Output folder of `nmrlight refine` (holds images/*.json)."),
        gt: Path | None = typer.Option(None, "--gt", help="Ground-truth poses (train format): errors and mAP "
                                       "before/after, by distance band."),
        data: Path | None = typer.Option(None, "--data", help="Data folder (photographs, masks, meshes); "
                                         "default: the one recorded in OUT/run.json."),
        workers: int = typer.Option(1, "--workers", "-w", min=1, help="Processes drawing the photographs' pages."),
    ) -> None:
        """Rebuild OUT/report.html, OUT/report/ and OUT/report.json (a run may still be going on).

        Pages of photographs whose result did not change since the last build are kept as they are.
        """
        from nmrlight.errors import NmrlightError
        from nmrlight.io.dataset import DataFolder
        from nmrlight.io.poses import read_poses
        from nmrlight.refine.outdir import load_results
        from nmrlight.refine.report import write_reports
        from nmrlight.report.build import run_info

        if not out.is_dir():
            raise NmrlightError(f"output folder {out}: not a directory")
        results, bad = load_results(out)
        for message in bad:
            typer.echo(f"skipped unreadable result {message}", err=True)
        if not results:
            raise NmrlightError(f"output folder {out}: no readable results in {out / 'images'}")
        truth = None
        if gt is not None:
            if not gt.is_file():
                raise NmrlightError(f"ground truth {gt}: file not found")
            truth = read_poses(gt)
        folder = None
        root = data if data is not None else run_info(out).get("data")
        if root is not None and Path(root).is_dir():
            folder = DataFolder(root)
        elif data is not None:
            raise NmrlightError(f"data folder {data}: not a directory")
        else:
            typer.echo(f"data folder {root or '(not recorded in run.json)'} not found: pages without pictures "
                       "(pass --data DIR)", err=True)
        stats = write_reports(out, results, folder, truth=truth, gt_path=gt, workers=workers)
        for note in stats.notes[:20]:
            typer.echo(f"  {note}", err=True)
        if len(stats.notes) > 20:
            typer.echo(f"  ... and {len(stats.notes) - 20} more notes", err=True)
        typer.echo(f"report of {stats.photos} photographs ({stats.pages_written} pages drawn, "
                   f"{stats.pages_skipped} unchanged) in {stats.seconds:.1f} s: {out / 'report.html'}")
