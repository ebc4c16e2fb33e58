"""`nmrlight bench`: time and memory of the renderer on the reference two-car scene."""

from __future__ import annotations

import json
from pathlib import Path

import typer


def register(app: typer.Typer) -> None:
    @app.command()
    def bench(
        repeats: int = typer.Option(10, min=1, help="timed forward+backward passes (median reported)"),
        device: str = typer.Option("cpu", help="cpu or cuda"),
        models: Path = typer.Option(None, help="folder of ApolloCar3D json meshes (default: ../shared/apollocar3d)"),
        threads: int = typer.Option(None, help="torch/numba threads (default: all cores)"),
        as_json: bool = typer.Option(False, "--json", help="print one JSON object"),
    ) -> None:
        """Render two ApolloCar3D cars at 3384 x 1230 (and at quarter scale): forward + backward."""
        import numba
        import torch

        from nmrlight.bench import default_models_dir, load_reference_meshes, run_reference
        from nmrlight.errors import NmrlightError

        if device == "cuda" and not torch.cuda.is_available():
            raise NmrlightError("--device cuda asked for, but torch sees no CUDA device")
        if threads:
            torch.set_num_threads(threads)
            numba.set_num_threads(min(threads, numba.config.NUMBA_NUM_THREADS))
        meshes, source = load_reference_meshes(models if models is not None else default_models_dir())
        # quarter scale first: each peak is measured over what the process already holds
        quarter = run_reference(meshes, 0.25, device, repeats)
        full = run_reference(meshes, 1.0, device, repeats)
        result = {
            "forward_backward_ms": round(full.forward_backward_ms, 2),
            "peak_mb": None if full.peak_mb is None else round(full.peak_mb, 1),
            "forward_ms": round(full.forward_ms, 2),
            "backward_ms": round(full.backward_ms, 2),
            "image": [full.width, full.height],
            "covered_pixels": full.covered_pixels,
            "zbuffer_ms": round(full.zbuffer_ms, 2),
            "ratio_to_zbuffer": round(full.ratio, 2),
            "quarter_scale": {
                "forward_backward_ms": round(quarter.forward_backward_ms, 2),
                "peak_mb": None if quarter.peak_mb is None else round(quarter.peak_mb, 1),
                "image": [quarter.width, quarter.height],
                "zbuffer_ms": round(quarter.zbuffer_ms, 2),
                "ratio_to_zbuffer": round(quarter.ratio, 2),
            },
            "device": device,
            "torch_threads": torch.get_num_threads(),
            "numba_threads": numba.get_num_threads(),
            "meshes": source,
            "repeats": repeats,
        }
        if as_json:
            print(json.dumps(result))
            return
        from rich.console import Console
        from rich.table import Table

        table = Table(title=f"nmrlight bench: two cars, forward + backward ({device}, {source})")
        for col in ("image", "fwd+bwd ms (median)", "forward ms", "backward ms", "peak extra MB", "z-buffer ms",
                    "fwd+bwd / z-buffer"):
            table.add_column(col)
        for r in (full, quarter):
            table.add_row(f"{r.width} x {r.height}", f"{r.forward_backward_ms:.1f}", f"{r.forward_ms:.1f}",
                          f"{r.backward_ms:.1f}", "n/a" if r.peak_mb is None else f"{r.peak_mb:.0f}",
                          f"{r.zbuffer_ms:.1f}", f"{r.ratio:.2f}x")
        Console().print(table)
