"""The `nmrlight` command line: each sub-command lives in nmrlight/commands/<name>.py."""

from __future__ import annotations

import importlib
import sys

import typer

from nmrlight.errors import NmrlightError

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Render-and-compare car pose refinement with learned lighting.")

_COMMAND_MODULES = ("bench", "evaluate", "synth", "render", "refine", "report", "demo", "scale_bench",
                    "ablation", "lighting_eval")


def _register_commands() -> None:
    for name in _COMMAND_MODULES:
        try:
            module = importlib.import_module(f"nmrlight.commands.{name}")
        except ModuleNotFoundError as exc:  # a command not built yet
            if exc.name == f"nmrlight.commands.{name}":
                continue
            raise
        module.register(app)


_register_commands()


def main() -> None:
    """Entry point: run the app, turning user errors into one clear line and exit status 2."""
    from nmrlight.allocator import keep_freed_memory

    keep_freed_memory()
    try:
        app()
    except NmrlightError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
