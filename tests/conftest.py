"""Shared test fixtures: where the real ApolloCar3D meshes live (never copied into the repo)."""

from __future__ import annotations

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
