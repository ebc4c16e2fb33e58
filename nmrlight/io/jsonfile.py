"""Reading a JSON file with errors that name the file and what it was meant to be."""

from __future__ import annotations

import json
from pathlib import Path

from nmrlight.errors import NmrlightError


def read_json(path: Path, what: str):
    """Parse `path` as JSON; any failure becomes an NmrlightError "<what> <path>: <problem>"."""
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise NmrlightError(f"{what} {path}: file not found") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise NmrlightError(f"{what} {path}: cannot read ({exc})") from None
    except json.JSONDecodeError as exc:
        raise NmrlightError(f"{what} {path}: invalid JSON ({exc})") from None
