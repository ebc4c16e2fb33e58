"""Renderer benchmark: the reference two-car scene, forward + backward, time and peak memory.

Reference scene (issue 2): baojun-310-2017 at (0.15, -1.0, -3.1, -3.0, 6.0, 12.0) and aodi-a6 at
(0.16, 0.5, 3.1, 4.0, 5.5, 18.0) in the 3384 x 1230 bottom window of the Kaggle camera, shaded
grayscale plus silhouette, loss against a target rendered at a nearby pose, gradients to both poses
(so3 increment and translation) and every light parameter.
"""

from __future__ import annotations

import os
import statistics
import time
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from nmrlight.camera import Camera
from nmrlight.io.cars import CarMesh, car_id, read_car_json
from nmrlight.raster.rasterize import rasterize
from nmrlight.render import project_scene, render
from nmrlight.rotations import kaggle_to_matrix, so3_exp
from nmrlight.scene import MeshObject, Scene
from nmrlight.shade import Lighting

REFERENCE_CARS = (
    ("baojun-310-2017", (0.15, -1.0, -3.1, -3.0, 6.0, 12.0)),
    ("aodi-a6", (0.16, 0.5, 3.1, 4.0, 5.5, 18.0)),
)


def default_models_dir() -> Path | None:
    """ApolloCar3D meshes: $NMRLIGHT_APOLLO_MODELS, else ../shared/apollocar3d beside the checkout."""
    env = os.environ.get("NMRLIGHT_APOLLO_MODELS")
    candidates = [Path(env)] if env else []
    here = Path(__file__).resolve().parents[1]
    candidates += [here.parent / "shared" / "apollocar3d" / "car_models_json",
                   Path.cwd().parent / "shared" / "apollocar3d" / "car_models_json"]
    for path in candidates:
        if (path / f"{REFERENCE_CARS[0][0]}.json").is_file():
            return path
    return None


def load_reference_meshes(models_dir: Path | None) -> tuple[list[CarMesh], str]:
    """The two reference meshes, or procedural stand-ins of the same ids when the real ones are absent."""
    if models_dir is not None:
        return [read_car_json(models_dir / f"{name}.json") for name, _ in REFERENCE_CARS], str(models_dir)
    from nmrlight.procedural import car_for_model

    return [car_for_model(car_id(name)).mesh for name, _ in REFERENCE_CARS], "procedural stand-ins"


class _PeakMemory:
    """Peak extra resident memory (CPU, via /proc VmHWM reset) or allocated memory (CUDA)."""

    def __init__(self, device: torch.device):
        self.device = device

    def reset(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            self.base = torch.cuda.memory_allocated(self.device)
            return
        self.base = _proc_status("VmRSS")
        try:
            Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM to the current RSS
        except OSError:
            pass

    def peak_mb(self) -> float | None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            return (torch.cuda.max_memory_allocated(self.device) - self.base) / 2**20
        peak = _proc_status("VmHWM")
        if peak is None or self.base is None:
            return None
        return max(0.0, (peak - self.base) / 1024)


def _proc_status(field: str) -> int | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])  # kB
    except OSError:
        return None
    return None


@dataclass
class BenchResult:
    scale: float
    width: int
    height: int
    forward_backward_ms: float
    forward_ms: float
    backward_ms: float
    peak_mb: float | None
    covered_pixels: int
    repeats: int
    zbuffer_ms: float | None = None   # bare z-buffer of the same scene (pose, project, rasterise), same run

    @property
    def ratio(self) -> float | None:
        """Forward + backward over the bare z-buffer: the renderer's overhead, free of the machine's speed."""
        return self.forward_backward_ms / self.zbuffer_ms if self.zbuffer_ms else None


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _load_kernels(vertices, faces, poses, dev: torch.device) -> None:
    """One tiny forward+backward so that compiled kernels are loaded before memory is measured."""
    t = poses[0][3:].clone().requires_grad_(True)
    obj = MeshObject(vertices[0], faces[0], rotation=kaggle_to_matrix(poses[0][:3]), translation=t)
    camera = Camera.kaggle().window(0, 1480, 3384, 1230).scaled(0.05).to(dev)
    out = render(Scene([obj]), camera, Lighting(), outputs={"image", "alpha"})
    (out.image.sum() + out.alpha.sum()).backward()


def run_reference(meshes: list[CarMesh], scale: float = 1.0, device: str = "cpu", repeats: int = 10,
                  warmup: int = 2) -> BenchResult:
    """Median forward / backward time and peak extra memory of the reference scene at `scale`."""
    dev = torch.device(device)
    camera = Camera.kaggle().window(0, 1480, 3384, 1230)
    if scale != 1.0:
        camera = camera.scaled(scale)
    camera = camera.to(dev)
    vertices = [torch.tensor(m.object_vertices(), dtype=torch.float32, device=dev) for m in meshes]
    faces = [torch.tensor(m.faces, device=dev) for m in meshes]
    poses = [torch.tensor(p, dtype=torch.float32, device=dev) for _, p in REFERENCE_CARS]

    def scene(omegas, shifts):
        return Scene([MeshObject(v, f, rotation=so3_exp(w) @ kaggle_to_matrix(p[:3]), translation=p[3:] + s,
                                 albedo=torch.tensor([0.6], device=dev))
                      for v, f, p, w, s in zip(vertices, faces, poses, omegas, shifts, strict=True)])

    lighting_kwargs = {"ambient": 0.45, "directional": 0.55, "direction": (0.3, -1.0, -0.4)}
    _load_kernels(vertices, faces, poses, dev)
    memory = _PeakMemory(dev)
    memory.reset()  # before the first full render: the peak covers all that rendering, loss and backward hold
    with torch.no_grad():
        target = render(scene([torch.tensor([0.0, 0.02, 0.0], device=dev)] * 2,
                              [torch.tensor([0.05, 0.0, 0.2], device=dev)] * 2),
                        camera, Lighting(**{k: torch.tensor(v, device=dev) for k, v in lighting_kwargs.items()}),
                        outputs={"image", "alpha"})
    forward, backward, total, zbuffer = [], [], [], []
    covered = 0
    for i in range(warmup + repeats):
        omegas = [torch.zeros(3, device=dev, requires_grad=True) for _ in meshes]
        shifts = [torch.zeros(3, device=dev, requires_grad=True) for _ in meshes]
        lights = {k: torch.tensor(v, device=dev, requires_grad=True) for k, v in lighting_kwargs.items()}
        _sync(dev)
        t0 = time.perf_counter()
        out = render(scene(omegas, shifts), camera, Lighting(**lights), outputs={"image", "alpha"})
        loss = F.mse_loss(out.image, target.image) + F.mse_loss(out.alpha, target.alpha)
        _sync(dev)
        t1 = time.perf_counter()
        loss.backward()
        _sync(dev)
        t2 = time.perf_counter()
        with torch.no_grad():  # the least any renderer does: pose, project, z-buffer
            bare = scene(omegas, shifts)
            _sync(dev)
            t3 = time.perf_counter()
            rasterize(project_scene(bare.pack(), camera))
            _sync(dev)
            t4 = time.perf_counter()
        if i >= warmup:
            forward.append(t1 - t0)
            backward.append(t2 - t1)
            total.append(t2 - t0)
            zbuffer.append(t4 - t3)
        covered = int(out.visibility.pixels.numel())
        del out, loss
    peak = memory.peak_mb()
    return BenchResult(scale, camera.width, camera.height, 1e3 * statistics.median(total),
                       1e3 * statistics.median(forward), 1e3 * statistics.median(backward), peak, covered, repeats,
                       1e3 * statistics.median(zbuffer))
