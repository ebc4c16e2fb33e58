"""Shared test fixtures: where the real ApolloCar3D meshes live (never copied into the repo)."""

from __future__ import annotations

import json
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


@pytest.fixture(autouse=True)
def _one_core_per_xdist_worker():
    """Under pytest-xdist (`make test` runs two workers) each worker keeps to one core: torch and numba
    with one thread each, since two workers of two spinning threads on two cores run slower than one.
    A test that sets its own thread counts still does; each test starts from one thread again."""
    if os.environ.get("PYTEST_XDIST_WORKER"):
        import numba
        import torch

        torch.set_num_threads(1)
        numba.set_num_threads(1)
    yield


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


def two_car_problem(turn: float, shift: tuple[float, float, float], suv_x: float = 2.0):
    """A small rendered scene (160 x 120): a procedural sedan partly hidden by a nearer SUV (`suv_x`
    metres right of the camera; 0.6 hides most of the sedan), the sedan's refinement problem (mask,
    photo, the SUV as a neighbour) starting `turn` radians about y and `shift` metres off, its lighting,
    and the sedan's true rotation and translation."""
    import torch

    from nmrlight.camera import Camera
    from nmrlight.procedural import make_car
    from nmrlight.refine import pose
    from nmrlight.refine.window import Box
    from nmrlight.render import render
    from nmrlight.rotations import so3_exp
    from nmrlight.scene import MeshObject, Scene
    from nmrlight.shade import Lighting

    camera = Camera.from_intrinsics(300.0, 300.0, 80.0, 60.0, 160, 120)
    meshes = [make_car(kind, seed, target_faces=800).mesh for kind, seed in (("sedan", 0), ("suv", 1))]
    verts = [torch.tensor(m.object_vertices(), dtype=torch.float32) for m in meshes]
    faces = [torch.tensor(m.faces) for m in meshes]
    rotations = [so3_exp(torch.tensor([0.05, 2.4, 3.1])), so3_exp(torch.tensor([0.05, 0.9, 3.1]))]
    translations = [torch.tensor([0.2, 0.8, 14.0]), torch.tensor([suv_x, 0.9, 11.0])]
    lighting = Lighting(0.4, 0.6, (0.3, -1.0, -0.4))
    objects = [MeshObject(v, f, r, t) for v, f, r, t in zip(verts, faces, rotations, translations, strict=True)]
    truth = render(Scene(objects), camera, lighting, edges="none")
    photo = truth.image[0].numpy()
    box = Box(20, 10, 150, 110)
    mask = (truth.object_id == 0).numpy()[box.y0:box.y1, box.x0:box.x1]
    start = so3_exp(torch.tensor([0.0, turn, 0.0])) @ rotations[0]
    problem = pose.CarProblem(verts[0], faces[0], start, translations[0] + torch.tensor(shift), camera, box,
                              photo[box.y0:box.y1, box.x0:box.x1], mask, None,
                              [pose.Neighbour(verts[1], faces[1], rotations[1], translations[1])])
    return problem, lighting, rotations[0], translations[0]


# --- run fingerprints: everything a refine run computed, timings left out --------------------------------
TIMING_KEYS = ("mean_seconds_per_refined_car", "attempts", "generated", "started")  # and every "seconds*"


def _is_timing(key: str) -> bool:
    """Wall-clock facts (durations, time stamps): the only things two runs may differ in."""
    return key in TIMING_KEYS or key.startswith("seconds")


def _without_timings(value):
    if isinstance(value, dict):
        return {k: _without_timings(v) for k, v in value.items() if not _is_timing(k)}
    if isinstance(value, list):
        return [_without_timings(v) for v in value]
    return value


def fingerprint(out: Path) -> dict[str, str]:
    """Everything a run computed, as text: refined.csv and lighting.csv verbatim, and each per-image
    JSON and report.json re-serialised without timings (floats as repr: equal text = equal bits)."""
    prints = {name: (out / name).read_text() for name in ("refined.csv", "lighting.csv")}
    for path in sorted((out / "images").glob("*.json")) + [out / "report.json"]:
        prints[path.name] = json.dumps(_without_timings(json.loads(path.read_text())), sort_keys=True)
    return prints
