"""`nmrlight bench`: placeholder replaced by the renderer benchmark."""

import typer


def register(app: typer.Typer) -> None:
    @app.command()
    def bench() -> None:
        """Benchmark the renderer."""
        raise typer.Exit(1)
