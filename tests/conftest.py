"""Shared test fixtures: where the real ApolloCar3D meshes live (never copied into the repo)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
APOLLO_MODELS = SHARED / "apollocar3d" / "car_models_json"


@pytest.fixture(scope="session")
def apollo_models() -> Path:
    """Folder of the six real ApolloCar3D meshes in ../shared (skips if this checkout lacks it)."""
    if not APOLLO_MODELS.is_dir():
        pytest.skip(f"{APOLLO_MODELS} not present")
    return APOLLO_MODELS


def kill_after_first_result(script: str, out: Path, timeout: float, env: dict | None = None) -> None:
    """Run `script` (a refine driver) in its own process group; kill -9 it once OUT/images holds a result."""
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True, env=env)
    try:
        deadline = time.monotonic() + timeout
        while not list((out / "images").glob("*.json")) and time.monotonic() < deadline:
            assert proc.poll() is None, "the run ended before it could be killed"
            time.sleep(0.05)
        os.killpg(proc.pid, signal.SIGKILL)
    finally:
        proc.wait()
